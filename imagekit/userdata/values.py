"""The documented variables of each role's user data, validated before rendering."""

import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from imagekit.errors import UserError
from imagekit.roles import get_role
from imagekit.sshkeys import parse_public_keys
from imagekit.yamlfile import load_yaml, parse_yaml

Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
DomainName = Annotated[
    str,
    Field(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
]
SqlName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]


def _password(value: SecretStr) -> SecretStr:
    # Quotes and backslashes never reach SQL or INI files this way.
    if not re.fullmatch(r"[A-Za-z0-9._~!@#%^*+=:,-]{12,}", value.get_secret_value()):
        raise ValueError("at least 12 characters of A-Z a-z 0-9 . _ ~ ! @ # % ^ * + = : , -")
    return value


Password = Annotated[SecretStr, AfterValidator(_password)]
Interface = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,14}$")]


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n(?:[A-Za-z0-9+/=]+\n)+-----END \1-----")


def pem(text: str, kind: str, name: str) -> str:
    """PEM blocks with their indentation and blank lines removed (haproxy reads them as is).

    A YAML block scalar or a pasted file often indents every line; the template
    indents the text itself, so the lines must start at column 0 here.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    normal = "\n".join(lines) + "\n"
    blocks = list(_PEM_BLOCK.finditer(normal))
    if not blocks or "".join(b.group(0) + "\n" for b in blocks) != normal:
        raise ValueError(f"{name} is not PEM text (-----BEGIN ...----- base64 -----END ...-----)")
    if not all(b.group(1).endswith(kind) for b in blocks):
        raise ValueError(f"{name}: expected {kind} blocks only")
    return normal.rstrip("\n")


class Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: Name = Field(description="host name of the instance")
    domain: DomainName = Field("internal", description="private DNS domain (FQDN suffix)")
    timezone: str = Field("UTC", pattern=r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$", description="tz name")
    ssh_authorized_keys: list[str] = Field([], description="extra public keys for the admin user")
    private_interface: Interface = Field("ens4", description="NIC on the private network")
    configure_private_interface: bool = Field(
        False, description="set private_address on it (when the cloud's network config does not)"
    )
    private_address: IPv4Interface = Field(description="address/prefix on the private network")
    private_network: IPv4Network = Field(
        IPv4Network("10.12.0.0/16"), description="the private network"
    )
    resolver: IPv4Address | None = Field(
        IPv4Address("10.12.0.53"), description="the private name server"
    )
    gateway: IPv4Address | None = Field(
        None,
        description="default route via this private address (the lb's); "
        "default: what the cloud's network config says",
    )

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _public_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            parse_public_keys(key)
        return keys

    @model_validator(mode="after")
    def _address_in_network(self) -> "Common":
        if self.private_address.ip not in self.private_network:
            raise ValueError(
                f"private_address {self.private_address} is outside private_network "
                f"{self.private_network}"
            )
        if self.gateway is not None and self.gateway not in self.private_network:
            raise ValueError(
                f"gateway {self.gateway} is outside private_network {self.private_network}"
            )
        return self

    def secrets(self) -> list[str]:
        return [name for name, value in self if isinstance(value, SecretStr) and value]


class Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    address: IPv4Address
    port: int = Field(80, ge=1, le=65535)


class Lb(Common):
    private_address: IPv4Interface = Field(
        IPv4Interface("10.12.0.1/16"), description="the gateway address of the private network"
    )
    web_backends: list[Backend] = Field(
        min_length=1, description="web servers: name, address, port"
    )
    tls_certificate: str | None = Field(
        None, description="PEM certificate (chain); else self-signed"
    )
    tls_key: SecretStr | None = Field(None, description="PEM private key of tls_certificate")

    @field_validator("tls_certificate")
    @classmethod
    def _certificate_pem(cls, value: str | None) -> str | None:
        return None if value is None else pem(value, "CERTIFICATE", "tls_certificate")

    @field_validator("tls_key")
    @classmethod
    def _key_pem(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        return SecretStr(pem(value.get_secret_value(), "PRIVATE KEY", "tls_key"))

    @model_validator(mode="after")
    def _tls_pair(self) -> "Lb":
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("tls_certificate and tls_key go together (or neither: self-signed)")
        return self


class Web(Common):
    server_name: DomainName = Field(description="the site's public name (Nginx server_name)")
    db_host: DomainName | IPv4Address = Field("db.internal", description="database server")
    db_name: SqlName = Field("app", description="the application's database")
    db_user: SqlName = Field("app", description="the application's database user")
    db_password: Password = Field(description="its password (secret)")


class Dns(Common):
    private_address: IPv4Interface = Field(
        IPv4Interface("10.12.0.53/16"), description="listen address (the only one)"
    )
    resolver: IPv4Address | None = Field(None, description="default: this server itself")
    zone: DomainName | None = Field(None, description="the private zone; default: domain")
    records: dict[Name, IPv4Address] = Field(min_length=1, description="A records of the zone")
    forwarders: list[IPv4Address] = Field([], description="where other names are resolved")

    @model_validator(mode="after")
    def _defaults(self) -> "Dns":
        self.resolver = self.resolver or self.private_address.ip
        self.zone = self.zone or self.domain
        return self


class Db(Common):
    private_address: IPv4Interface = Field(
        IPv4Interface("10.12.0.30/16"), description="address on the private network"
    )
    bind_address: IPv4Address | None = Field(None, description="default: the private address")
    client_subnet: IPv4Network = Field(
        IPv4Network("10.12.0.0/16"), description="where the application user may connect from"
    )
    db_name: SqlName = Field("app", description="the application's database")
    db_user: SqlName = Field("app", description="the application's database user")
    db_password: Password = Field(description="its password (secret)")

    @model_validator(mode="after")
    def _default_bind(self) -> "Db":
        self.bind_address = self.bind_address or self.private_address.ip
        return self

    @property
    def client_host(self) -> str:
        """MariaDB's host pattern for the client subnet."""
        return f"{self.client_subnet.network_address}/{self.client_subnet.netmask}"


ROLE_VALUES: dict[str, type[Common]] = {"lb": Lb, "web": Web, "dns": Dns, "db": Db}


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML, so lists and mappings work too."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"--set {assignment}: expected KEY=VALUE")
        values[key] = parse_yaml(raw, f"--set {key}") if raw else ""
    return values


def load_values(role: str, files: list[Path], assignments: list[str]) -> Common:
    """Merge --values files (in order) and --set pairs, then validate for the role."""
    data: dict[str, Any] = {}
    for path in files:
        loaded = load_yaml(path, "values")
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: values must be a mapping of variables")
        data.update(loaded)
    data.update(parse_set(assignments))
    return validate_values(role, data, f"{role} user data")


def validate_values(role: str, data: dict[str, Any], where: str) -> Common:
    """The role's values model, or one line saying what is wrong and where."""
    try:
        return ROLE_VALUES[role].model_validate(data)
    except ValidationError as err:
        raise UserError(f"{where}: {validation_problem(err)}") from None


def validation_problem(err: ValidationError) -> str:
    # A misspelt name explains the "missing" errors that come with it: say it first.
    problem = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        message = f"unknown variable '{where}'"
    elif problem["type"] == "missing":
        message = f"required variable '{where}' is missing"
    else:
        text = problem["msg"].removeprefix("Value error, ")
        message = f"{where}: {text}" if where else text
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return message + more


def example_values(role: str) -> Common:
    """The role's documented example values: what test instances boot with."""
    return load_values(role, [get_role(role).example_values], [])
