"""A site on an OpenStack cloud (`imagekit site test --cloud NAME`): the same site,
wired with Neutron instead of a local namespace.

Made per run, each carrying the run's id (imagekit.runs finds what a dead run
left): the private network with the site's CIDR, whose subnet's gateway is the
lb's fixed IP and whose name server is the dns instance (no DHCP: every
instance has a port with its fixed address); port security off on it, because
the lb routes and NATs for the others (the site's own nftables policies guard
it, as the site suite shows). The lb has a second NIC on the config's
`network` with its security groups and a floating IP: the site's public entry
point. Servers boot from the builds' published images, with a key pair of the
run and each instance's user data on the config drive.
"""

import base64
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openstack.connection import Connection
from openstack.exceptions import ResourceFailure

from imagekit import progress, runs
from imagekit.clouds import cloud_errors, connect, delete_run_leftovers, run_description
from imagekit.config import Config, OpenStackSettings
from imagekit.errors import ImagekitError, UserError
from imagekit.instances.access import make_key_pair
from imagekit.instances.factories import published_image
from imagekit.site.model import Site, SiteInstance
from imagekit.site.run import Member, SiteRun
from imagekit.userdata import render_user_data

CONSOLE_TAIL = 15


class Server:
    """One instance of the site as a Nova server: what a site run asks of a machine."""

    accelerator = "nova"
    pid = None

    def __init__(self, conn: Connection, server: Any, workdir: Path) -> None:
        self.conn = conn
        self.id = server.id
        self.workdir = workdir

    def gone(self) -> str | None:
        server = self.conn.compute.get_server(self.id)
        if server.status == "ERROR":
            return f"server {server.id} is in ERROR: {(server.fault or {}).get('message', '?')}"
        if server.status == "SHUTOFF":
            return f"server {server.id} is off"
        return None

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        try:
            output = self.conn.compute.get_server_console_output(self.id, length=lines)
            return str(output.get("output", ""))
        except Exception as err:  # a diagnostic: never mask the real error
            return f"(no console: {err})"

    def power_on(self) -> None:
        """Start a server that powered itself off (the suite's fault check)."""
        compute = self.conn.compute
        if compute.get_server(self.id).status == "SHUTOFF":
            compute.start_server(self.id)
            compute.wait_for_server(compute.get_server(self.id), wait=300)

    def stop(self) -> None:
        """Servers go with the whole site (CloudSite.down)."""


class CloudSite:
    """The Neutron wiring, key pair and servers of one site run."""

    def __init__(
        self, conn: Connection, cloud: str, settings: OpenStackSettings, run_id: str
    ) -> None:
        self.conn = conn
        self.cloud = cloud
        self.settings = settings
        self.run_id = run_id
        self.name = f"imagekit-site-{run_id}"
        self.description = run_description(run_id)
        self.public_address = ""
        self._ports: dict[str, Any] = {}
        self._keypair: Any = None
        self._public_port: Any = None  # the lb's

    def create_network(self, site: Site) -> None:
        network = self.conn.network
        with cloud_errors(self.cloud, "the site's private network"):
            private = network.create_network(
                name=self.name, description=self.description, is_port_security_enabled=False
            )
            subnet = network.create_subnet(
                network_id=private.id,
                name=self.name,
                description=self.description,
                ip_version=4,
                cidr=str(site.private_network),
                # The lb routes for the private network (a fixed IP on its port).
                gateway_ip=str(site.lb.address),
                is_dhcp_enabled=False,
                dns_nameservers=[str(site.dns.address)],
            )
            for instance in site.instances:
                self._ports[instance.name] = network.create_port(
                    network_id=private.id,
                    name=f"{self.name}-{instance.name}",
                    description=self.description,
                    fixed_ips=[{"subnet_id": subnet.id, "ip_address": str(instance.address)}],
                )

    def create_keypair(self, public_key: str) -> None:
        with cloud_errors(self.cloud, "the site's key pair"):
            self._keypair = self.conn.compute.create_keypair(name=self.name, public_key=public_key)

    def boot(self, instance: SiteInstance, image: str, user_data: str, workdir: Path) -> Server:
        compute, network = self.conn.compute, self.conn.network
        with cloud_errors(self.cloud, f"booting {instance.name}"):
            image_id = self.conn.image.find_image(image, ignore_missing=False).id
            flavor = compute.find_flavor(self.settings.flavor, ignore_missing=False)
            nics = [{"port": self._ports[instance.name].id}]
            if instance.role == "lb":
                # The public side first, as on the local site: a port of ours with the
                # security groups (Nova applies none when a NIC's network has port
                # security off).
                public = network.find_network(self.settings.network, ignore_missing=False)
                groups = [
                    network.find_security_group(group, ignore_missing=False).id
                    for group in self.settings.security_groups
                ]
                self._public_port = network.create_port(
                    network_id=public.id,
                    name=f"{self.name}-{instance.name}-public",
                    description=self.description,
                    security_group_ids=groups,
                )
                nics.insert(0, {"port": self._public_port.id})
            server = compute.create_server(
                name=f"{self.name}-{instance.name}",
                image_id=image_id,
                flavor_id=flavor.id,
                networks=nics,
                key_name=self._keypair.name,
                user_data=base64.b64encode(user_data.encode()).decode(),
                config_drive=True,
                metadata={"imagekit": "site", "imagekit_run": self.run_id},
            )
        return Server(self.conn, server, workdir)

    def wait_active(self, servers: list[Server], timeout: float) -> None:
        """Every server ACTIVE; then the lb's floating IP."""
        compute, network = self.conn.compute, self.conn.network
        with cloud_errors(self.cloud, "booting the site"):
            for server in servers:
                try:
                    compute.wait_for_server(compute.get_server(server.id), wait=int(timeout))
                except ResourceFailure:
                    raise ImagekitError(f"the site did not boot: {server.gone()}") from None
            external = network.find_network(
                self.settings.floating_ip_network or "", ignore_missing=False
            )
            ip = network.create_ip(
                floating_network_id=external.id,
                port_id=self._public_port.id,
                description=self.description,
            )
        self.public_address = str(ip.floating_ip_address)

    def outside(self, exec_prefix: list[str]) -> str:
        """The outside world's address: where the suite's packets to the lb come from."""
        route = subprocess.run(
            [*exec_prefix, "ip", "-o", "route", "get", self.public_address],
            capture_output=True,
            text=True,
        )
        words = route.stdout.split()
        if route.returncode != 0 or "src" not in words:
            raise ImagekitError(f"no route to the lb's floating IP {self.public_address}")
        return words[words.index("src") + 1]

    def down(self) -> list[str]:
        """Delete everything the run made here (found by its id, so also after a crash)."""
        return delete(self.cloud, self.run_id)


def delete(cloud: str, run_id: str) -> list[str]:
    """What a site run made in the cloud: servers, floating IP, ports, network, key pair."""
    return delete_run_leftovers(cloud, run_id, ["servers"])


class CloudSiteRun(SiteRun):
    """A site on a cloud: the same instances, values, readiness, suite and records as
    on this host (SiteRun); the wiring is Neutron's and the outside world is where
    the cloud's floating IPs are reached from (`openstack.outside_namespace`)."""

    backend = "OpenStack"

    def __init__(
        self,
        config: Config,
        site: Site,
        site_file: Path,
        builds: dict[str, Path],
        cloud: str,
        identity: Path | None = None,
        say: Callable[[str], None] = progress.say,
    ) -> None:
        super().__init__(config, site, site_file, builds, identity, say=say)
        settings = config.openstack
        if settings is None or not settings.floating_ip_network:
            raise UserError(
                f"{config.source}: openstack.floating_ip_network missing (the site's lb "
                "needs a public address)"
            )
        self.cloud = cloud
        self.namespace = settings.outside_namespace
        # Every resource carries the id of our run (imagekit.runs): a run that dies
        # leaves them to the next command's recovery.
        run = runs.current()
        if run is None:
            raise ImagekitError("a cloud site needs the command's run (runs.start)")
        run.note_cloud(cloud, "servers")
        self.cloud_site = CloudSite(connect(cloud, authenticate=True), cloud, settings, run.id)
        self._outside = ""  # known once the lb has its floating IP

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace] if self.namespace else []

    @property
    def lb_public_address(self) -> str:
        return self.cloud_site.public_address

    @property
    def outside(self) -> str:
        return self._outside

    def up(self) -> None:
        self.workdir.mkdir(mode=0o700)
        self._save_state(kept=False)
        self.reports.mkdir(parents=True)
        key_file, public_key = make_key_pair(self.workdir, self.cloud_site.name)
        started = time.monotonic()
        self.cloud_site.create_network(self.site)
        self.cloud_site.create_keypair(public_key)
        servers = []
        for instance in self.site.instances:
            build_dir = self.builds[instance.role]
            image = published_image(self.config, self.cloud, build_dir)
            values = self.site.role_values(instance)
            user_data = render_user_data(instance.role, values, self.config.cache_dir)
            servers.append(self.cloud_site.boot(instance, image, user_data, self.workdir))
            self.members.append(Member(instance, build_dir, servers[-1]))
            self.say(f"[site] {instance.name} ({instance.role} {build_dir.name}) booting")
        self.cloud_site.wait_active(servers, self.boot_timeout)
        self._outside = self.cloud_site.outside(self.exec_prefix())
        self._save_state(kept=False)
        self._write_ssh_config(key_file)
        self._wait_all_ready(started)

    def _where(self) -> dict[str, object]:
        return {"cloud": self.cloud, "run_id": self.cloud_site.run_id, "namespace": self.namespace}

    def down(self) -> None:
        self.cloud_site.down()
        shutil.rmtree(self.workdir, ignore_errors=True)
