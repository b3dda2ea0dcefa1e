"""The site description (`site.yaml`): its instances, and the values that follow from it.

A site is one lb (the public entry point and the private network's gateway),
web servers, a name server and a database server on one private network. The
description names each instance's role and private address; what follows from
the site is derived, not repeated: the lb's backends are the web instances, the
dns records are all instances, web's `db_host` is the db instance, every
instance's resolver is the dns instance and its gateway the lb.
"""

import secrets
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from imagekit.errors import UserError
from imagekit.roles import CHECKOUT, ROLES
from imagekit.userdata.values import (
    Common,
    DomainName,
    Name,
    SqlName,
    validate_values,
    validation_problem,
)
from imagekit.yamlfile import load_yaml

DEFAULT_SITE = CHECKOUT / "site.yaml"

# The local site's NICs (qemu's fixed PCI slots 3 and 4). A cloud may name them otherwise
# (the compute dev cloud: ens2, ens3): the lb finds its NICs by what they carry.
NIC_NAMES = ("ens3", "ens4")

# The least memory each role boots and serves with (MiB): a site runs them all at once.
MEMORY_MB = {"lb": 384, "web": 512, "dns": 384, "db": 640}


class SiteInstance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    role: str
    address: IPv4Address = Field(description="address on the private network")
    public_address: IPv4Address | None = Field(None, description="lb only: on the public side")
    values: dict[str, Any] = Field({}, description="the role's user-data variables, if any")


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: DomainName = "internal"
    private_network: IPv4Network = IPv4Network("10.12.0.0/16")
    # The public side of a local site test; documentation addresses (RFC 5737).
    public_network: IPv4Network = IPv4Network("203.0.113.0/24")
    server_name: DomainName = Field(description="the site's public name (web's server_name)")
    db_name: SqlName = "app"
    db_user: SqlName = "app"
    db_password: Annotated[str, Field(min_length=12)] | None = Field(
        None, description="generated per run when not given; never printed"
    )
    instances: list[SiteInstance] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Site":
        if self.private_network.overlaps(self.public_network):
            raise ValueError(
                f"private_network {self.private_network} overlaps "
                f"public_network {self.public_network}"
            )
        names: set[str] = set()
        addresses: set[IPv4Address] = set()
        for instance in self.instances:
            where = f"instance '{instance.name}'"
            if instance.role not in ROLES:
                raise ValueError(f"{where}: unknown role '{instance.role}' ({', '.join(ROLES)})")
            if instance.name in names:
                raise ValueError(f"{where}: duplicate name")
            names.add(instance.name)
            for address, network in (
                (instance.address, self.private_network),
                (instance.public_address, self.public_network),
            ):
                if address is None:
                    continue
                if address in addresses:
                    raise ValueError(f"{where}: duplicate address {address}")
                addresses.add(address)
                if address not in network or address in (
                    network.network_address,
                    network.broadcast_address,
                ):
                    raise ValueError(f"{where}: {address} is not a host address of {network}")
            if (instance.public_address is not None) != (instance.role == "lb"):
                raise ValueError(f"{where}: public_address goes with the lb, and the lb needs one")
            if self.outside in addresses:
                raise ValueError(f"{where}: {self.outside} is the outside world's address")
        for role in ROLES:
            count = len(self.of_role(role))
            if count == 0:
                raise ValueError(f"the site needs a {role} instance")
            if count > 1 and role != "web":
                raise ValueError(f"the site has {count} {role} instances; it takes one")
        web = {str(i.name): str(i.address) for i in self.of_role("web")}
        for backend in self.lb.values.get("web_backends", []):
            name = backend.get("name") if isinstance(backend, dict) else None
            where = f"instance '{self.lb.name}': web backend '{name}'"
            if name not in web:
                raise ValueError(f"{where} is not a web instance")
            if str(backend.get("address", web[name])) != web[name]:
                raise ValueError(f"{where} is at {web[name]}, not {backend.get('address')}")
        db_names = {self.db.name, self.fqdn(self.db), str(self.db.address)}
        for instance in self.of_role("web"):
            db_host = instance.values.get("db_host")
            if db_host is not None and db_host not in db_names:
                raise ValueError(
                    f"instance '{instance.name}': db_host '{db_host}' is not the site's "
                    f"db instance ({self.fqdn(self.db)})"
                )
        return self

    def of_role(self, role: str) -> list[SiteInstance]:
        return [i for i in self.instances if i.role == role]

    @property
    def lb(self) -> SiteInstance:
        return self.of_role("lb")[0]

    @property
    def dns(self) -> SiteInstance:
        return self.of_role("dns")[0]

    @property
    def db(self) -> SiteInstance:
        return self.of_role("db")[0]

    @property
    def outside(self) -> IPv4Address:
        """The outside world's address on the public side (its first host)."""
        return next(self.public_network.hosts())

    def fqdn(self, instance: SiteInstance) -> str:
        return f"{instance.name}.{self.domain}"

    def with_secrets(self) -> "Site":
        """The site with a database password generated for this run if none was given."""
        if self.db_password:
            return self
        return self.model_copy(update={"db_password": secrets.token_urlsafe(18)})

    def derived_values(self, instance: SiteInstance) -> dict[str, Any]:
        """The role's user-data values that follow from the site."""
        private = IPv4Interface(f"{instance.address}/{self.private_network.prefixlen}")
        values: dict[str, Any] = {
            "hostname": instance.name,
            "domain": self.domain,
            "private_network": str(self.private_network),
            "private_address": str(private),
            "resolver": str(self.dns.address),
            # The lb's private NIC is its second; the others have only that one.
            "private_interface": NIC_NAMES[1] if instance.role == "lb" else NIC_NAMES[0],
            # The network config (the cloud's, or the site test's seed) sets the addresses.
            "configure_private_interface": False,
        }
        if instance.role != "lb":
            values["gateway"] = str(self.lb.address)
        database = {
            "db_name": self.db_name,
            "db_user": self.db_user,
            "db_password": self.db_password,
        }
        if instance.role == "lb":
            values["web_backends"] = [
                {"name": web.name, "address": str(web.address)} for web in self.of_role("web")
            ]
        elif instance.role == "web":
            values |= database | {
                "server_name": self.server_name,
                "db_host": self.fqdn(self.db),
            }
        elif instance.role == "dns":
            values["records"] = {i.name: str(i.address) for i in self.instances}
        elif instance.role == "db":
            values |= database | {"client_subnet": str(self.private_network)}
        return values

    def role_values(self, instance: SiteInstance) -> Common:
        """The instance's validated user-data values: derived, then its own on top."""
        data = self.derived_values(instance) | instance.values
        if data.get("db_password") is None:
            data.pop("db_password", None)
        return validate_values(instance.role, data, f"instance '{instance.name}'")

    def network_config(self, instance: SiteInstance) -> dict[str, Any]:
        """cloud-init network config (version 1), as a cloud's DHCP or config drive gives it."""
        nameservers = {"dns_nameservers": [str(self.dns.address)], "dns_search": [self.domain]}
        private = {
            "type": "static",
            "address": f"{instance.address}/{self.private_network.prefixlen}",
        }
        if instance.role == "lb":
            public = {
                "type": "static",
                "address": f"{instance.public_address}/{self.public_network.prefixlen}",
                "gateway": str(self.outside),
                **nameservers,
            }
            subnets = [public, private]
        else:
            # No gateway: the user data sets the default route (the lb), as on a cloud
            # whose subnet has none.
            subnets = [private | nameservers]
        return {
            "version": 1,
            "config": [
                {
                    "type": "physical",
                    "name": NIC_NAMES[n],
                    "mac_address": self.mac(instance, n),
                    "subnets": [subnet],
                }
                for n, subnet in enumerate(subnets)
            ],
        }

    def mac(self, instance: SiteInstance, nic: int) -> str:
        """A fixed, locally administered MAC per instance and NIC."""
        index = self.instances.index(instance)
        return f"52:54:00:12:{index:02x}:{nic:02x}"


def load_site(path: Path) -> Site:
    """Read and validate a site description; any problem is one line naming the file."""
    data = load_yaml(path, "site description")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the site description must be a mapping")
    try:
        site = Site.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {validation_problem(err)}") from None
    for instance in site.instances:
        try:
            site.with_secrets().role_values(instance)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
    return site
