"""Throwaway instances as servers on an OpenStack cloud (`imagekit test --cloud NAME`).

Above the HTTP boundary everything is as for a local VM: a key pair made for
this run, the same readiness wait (SSH, then cloud-init) and the same suite.
Server, keypair and floating IP are deleted whatever happened.
"""

import base64
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openstack.connection import Connection

from imagekit import runs
from imagekit.clouds import run_description
from imagekit.errors import ImagekitError
from imagekit.instances import SshAddress
from imagekit.instances.access import make_key_pair, wait_until_ready


@dataclass(frozen=True)
class ServerSettings:
    """Where and how test servers boot (the config's `openstack:` section)."""

    flavor: str
    network: str
    floating_ip_network: str | None = None
    security_groups: list[str] = field(default_factory=list)
    private_network: str | None = None
    ssh_proxy_command: str | None = None


class OpenStackInstance:
    accelerator = "nova"

    def __init__(
        self,
        conn: Connection,
        image: str,
        user: str,
        name: str,
        settings: ServerSettings,
        user_data: str = "#cloud-config\n",
        boot_timeout: float = 900,
        run_id: str | None = None,
        private_address: str | None = None,
        scratch_dir: Path | None = None,
    ) -> None:
        self.conn = conn
        self.image = image
        self.user = user
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.settings = settings
        self.user_data = user_data
        self.boot_timeout = boot_timeout
        # Tags every resource, so that a dead run's leftovers are found (imagekit.runs).
        self.run_id = run_id
        self.private_address = private_address
        # Its SSH key; under scratch_dir (the run's directory, unless kept), a kill -9 at
        # any moment leaves it to the next run's recovery.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch_dir))
        self.timings: dict[str, float] = {}
        self._keypair: Any = None
        self._server: Any = None
        self._floating_ip: Any = None
        self._private_port: Any = None

    def start(self) -> SshAddress:
        started = time.monotonic()
        compute, network = self.conn.compute, self.conn.network
        key_file, public_key = make_key_pair(self.workdir, self.name)
        image = self.conn.image.find_image(self.image, ignore_missing=False)
        flavor = compute.find_flavor(self.settings.flavor, ignore_missing=False)
        net = network.find_network(self.settings.network, ignore_missing=False)
        description = run_description(self.run_id) if self.run_id else "imagekit throwaway"
        nics = [{"uuid": net.id}]
        if self.settings.private_network:
            # A second NIC, as the role has on the site: the cloud's network config sets
            # its address (a fixed IP on a port, as operators do it).
            private = network.find_network(self.settings.private_network, ignore_missing=False)
            self._private_port = network.create_port(
                network_id=private.id,
                name=self.name,
                description=description,
                fixed_ips=[{"ip_address": self.private_address}] if self.private_address else [],
            )
            nics.append({"port": self._private_port.id})
        self._keypair = compute.create_keypair(name=self.name, public_key=public_key)
        self._server = compute.create_server(
            name=self.name,
            image_id=image.id,
            flavor_id=flavor.id,
            networks=nics,
            key_name=self._keypair.name,
            user_data=base64.b64encode(self.user_data.encode()).decode(),
            security_groups=[{"name": group} for group in self.settings.security_groups],
            metadata={
                "imagekit": "throwaway",
                **({"imagekit_run": self.run_id} if self.run_id else {}),
            },
        )
        server = compute.wait_for_server(self._server, wait=int(self.boot_timeout))
        host = _fixed_address(server, self.settings.network)
        if self.settings.floating_ip_network:
            external = network.find_network(self.settings.floating_ip_network, ignore_missing=False)
            port = next(iter(network.ports(device_id=server.id, network_id=net.id)))
            self._floating_ip = network.create_ip(
                floating_network_id=external.id, port_id=port.id, description=description
            )
            host = self._floating_ip.floating_ip_address
        address = SshAddress(host, 22, self.user, str(key_file), self.settings.ssh_proxy_command)
        self.timings = wait_until_ready(
            address, started, self.boot_timeout, self._gone, self.console_tail
        )
        return address

    def _gone(self) -> str | None:
        server = self.conn.compute.get_server(self._server.id)
        if server.status == "ERROR":
            return f"server {server.id} is in ERROR: {(server.fault or {}).get('message', '?')}"
        return None

    def console_tail(self, lines: int = 15) -> str:
        try:
            output = self.conn.compute.get_server_console_output(self._server, length=lines)
            return str(output.get("output", ""))
        except Exception as err:  # the console is a diagnostic: never mask the real error
            return f"(no console: {err})"

    def describe(self) -> str:
        server = self._server.id if self._server else "?"
        return f"server {server}, keypair {self.name}; files in {self.workdir}"

    def stop(self) -> None:
        """Delete what start made; one failed deletion does not stop the others."""
        compute, network = self.conn.compute, self.conn.network
        errors = []
        steps: list[tuple[str, Callable[[Any], object]]] = [
            ("_floating_ip", lambda ip: network.delete_ip(ip, ignore_missing=True)),
            ("_server", lambda server: _delete_server(compute, server)),
            ("_private_port", lambda port: network.delete_port(port, ignore_missing=True)),
            ("_keypair", lambda keypair: compute.delete_keypair(keypair, ignore_missing=True)),
        ]
        for what, delete in steps:
            if getattr(self, what) is None:
                continue
            try:
                delete(getattr(self, what))
                setattr(self, what, None)
            except Exception as err:
                errors.append(f"{what.strip('_')}: {err}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            runs.leave_for_cleanup()  # everything carries our run id
            raise ImagekitError(f"{self.name}: could not delete " + "; ".join(errors))


def _delete_server(compute: Any, server: Any) -> None:
    compute.delete_server(server, ignore_missing=True)
    compute.wait_for_delete(server, wait=300)


def _fixed_address(server: Any, network: str) -> str:
    """The server's IPv4 address on its first network (named as in the config)."""
    for address in (server.addresses or {}).get(network, []):
        if address.get("version") == 4:
            return str(address["addr"])
    raise RuntimeError(f"server {server.id} has no IPv4 address")
