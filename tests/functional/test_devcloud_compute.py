"""The dev cloud with compute, for real: a Nova server from a role image on Neutron.

One compute dev cloud per session (conftest's `compute_devcloud`); the web image
is the session's real build, published to Glance. Times and memory go to stdout.
"""

import base64
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagekit import devcloud_compute
from imagekit.config import Config
from imagekit.devcloud import DevCloud
from imagekit.publishing.publish import publish
from tests.functional.conftest import host_leftovers

BOOT_TIMEOUT = 900  # a real image under TCG on a busy host


def ssh(address: str, key: Path, user: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("ip", "netns", "exec", devcloud_compute.PUBLIC_NS, "ssh", "-i", str(key)),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "ConnectTimeout=10", "-o", "BatchMode=yes", f"{user}@{address}", command),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for_ssh(address: str, key: Path, user: str, command: str) -> tuple[str, float]:
    started = time.monotonic()
    while True:
        result = ssh(address, key, user, command)
        if result.returncode == 0:
            return result.stdout, time.monotonic() - started
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise AssertionError(f"no SSH to {address}: {result.stderr[-500:]}")
        time.sleep(5)


def nothing_left(conn: Any, name: str) -> None:
    assert [s.name for s in conn.compute.servers() if s.name == name] == []
    assert [k.name for k in conn.compute.keypairs() if k.name == name] == []
    assert list(conn.network.ips()) == []
    # Only the router's and DHCP's ports stay on the tenant network.
    owners = {port.device_owner for port in conn.network.ports()}
    assert owners <= {"network:router_interface", "network:dhcp", "network:router_gateway"}


def test_server_boots_from_glance_with_keypair_user_data_and_floating_ip(
    compute_devcloud: DevCloud,
    built: Callable[[str], Path],
    config: Config,
    clouds_yaml: None,
    tmp_path: Path,
) -> None:
    build_dir = built("web")
    cfg = config.model_copy(
        update={
            "publish": config.publish.model_copy(update={"name_format": "ct-{role}-{build_id}"})
        }
    )
    image_id = publish(cfg, "web", "devcloud", build_id=build_dir.name, force=True).image_id
    assert image_id

    key = tmp_path / "id_ed25519"  # not the key baked into the image: Nova's keypair
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    proof = secrets.token_hex(8)
    user_data = (
        "#cloud-config\n"
        f"write_files:\n- path: /var/tmp/proof\n  content: '{proof}'\n  permissions: '0644'\n"
    )
    name = f"ct-{proof}"
    conn = compute_devcloud.connect("devcloud")
    try:
        keypair = conn.compute.create_keypair(
            name=name, public_key=key.with_suffix(".pub").read_text()
        )
        network = conn.network.find_network(devcloud_compute.NETWORK, ignore_missing=False)
        started = time.monotonic()
        server = conn.compute.create_server(
            name=name,
            image_id=image_id,
            flavor_id=conn.compute.find_flavor("imagekit.small", ignore_missing=False).id,
            networks=[{"uuid": network.id}],
            key_name=keypair.name,
            user_data=base64.b64encode(user_data.encode()).decode(),
            security_groups=[{"name": devcloud_compute.SECURITY_GROUP}],
        )
        server = conn.compute.wait_for_server(server, wait=600)
        active = time.monotonic() - started
        assert server.has_config_drive
        public = conn.network.find_network(devcloud_compute.PUBLIC_NETWORK, ignore_missing=False)
        port = next(iter(conn.network.ports(device_id=server.id)))
        ip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)

        # Not reachable from the root namespace: only from inside the dev cloud's.
        outside = subprocess.run(
            ["ping", "-c", "1", "-W", "2", ip.floating_ip_address], capture_output=True
        )
        assert outside.returncode != 0
        output, to_ssh = wait_for_ssh(
            ip.floating_ip_address, key, config.admin_user, "cat /var/tmp/proof"
        )
        assert output.strip() == proof
        print(f"\nserver ACTIVE in {active:.0f} s, SSH {active + to_ssh:.0f} s after create")
        assert len(virsh_guests()) == 1

        conn.network.delete_ip(ip)
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=300)
        conn.compute.delete_keypair(keypair)
        conn.image.delete_image(image_id)
        nothing_left(conn, name)
        assert conn.image.find_image(image_id) is None
    finally:
        conn.close()
    assert virsh_guests() == []
    assert f"link tap{port.id[:11]}" not in host_leftovers()  # the server's own tap


def virsh_guests() -> list[str]:
    listed = subprocess.run(
        ["virsh", "list", "--all", "--name"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()
