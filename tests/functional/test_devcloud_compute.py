"""The dev cloud with compute, for real: Nova servers from the role images on Neutron.

One compute dev cloud per session (conftest's `compute_devcloud`); the web image
is the session's real build, published to Glance once for this module. Each test
shows that nothing is left in the cloud or on the host. Times go to stdout.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imagekit.config import Config
from imagekit.devcloud import DevCloud
from imagekit.devcloud import compute as devcloud_compute
from imagekit.publishing.publish import PublishResult, publish
from imagekit.roles import CHECKOUT, ROLES
from imagekit.store import Build
from tests.functional.conftest import host_leftovers
from tests.functional.imagefs import apt_source_uris, mounted_root
from tests.functional.test_site import SITE_CHECKS

BOOT_TIMEOUT = 900  # a real image under TCG on a busy host
# The config's `openstack:` section for the dev cloud (as in the README).
OPENSTACK_SECTION = f"""
openstack:
  flavor: imagekit.small
  network: {devcloud_compute.NETWORK}
  floating_ip_network: {devcloud_compute.PUBLIC_NETWORK}
  security_groups: [{devcloud_compute.SECURITY_GROUP}]
  private_network: {devcloud_compute.PRIVATE_NETWORK}
  ssh_proxy_command: ip netns exec {devcloud_compute.PUBLIC_NS} nc %h %p
  outside_namespace: {devcloud_compute.PUBLIC_NS}
  apt_proxy: {devcloud_compute.APT_PROXY}
"""


@pytest.fixture(scope="module")
def cloud_config(
    config: Config, compute_devcloud: DevCloud, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The session's config (same builds) with test servers on the dev cloud."""
    path = tmp_path_factory.mktemp("cloud-config") / "imagekit.yaml"
    path.write_text(config.source.read_text() + OPENSTACK_SECTION)
    return path


@pytest.fixture(scope="module")
def published_web(
    compute_devcloud: DevCloud, tested_web: Path, config: Config
) -> Iterator[PublishResult]:
    """The web build published to the images project and shared with alpha (by name)."""
    cfg = config.model_copy(
        update={"publish": config.publish.model_copy(update={"identity_cloud": "devcloud-admin"})}
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OS_CLIENT_CONFIG_FILE", str(compute_devcloud.clouds_yaml))
        result = publish(cfg, "web", "devcloud", build_id=tested_web.name, shares=["alpha"])
    assert result.image_id and list(result.members.values()) == ["pending"]
    yield result
    conn = compute_devcloud.connect("devcloud")
    try:
        conn.image.delete_image(result.image_id)
    finally:
        conn.close()


def imagekit(config: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def in_namespace(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a command where the floating IPs are: the dev cloud's public namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", devcloud_compute.PUBLIC_NS, *command],
        capture_output=True,
        text=True,
        timeout=90,
    )


def ssh(address: str, key: Path, user: str, command: str) -> subprocess.CompletedProcess[str]:
    return in_namespace(
        *("ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no"),
        *("-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"),
        *("-o", "BatchMode=yes", f"{user}@{address}", command),
    )


def wait_for(what: str, attempt: Callable[[], subprocess.CompletedProcess[str]]) -> str:
    """Retry until the command succeeds; its output."""
    started = time.monotonic()
    while True:
        result = attempt()
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise AssertionError(f"{what}: {result.stderr[-500:]}")
        time.sleep(5)


def nothing_left(conn: Any) -> None:
    """No server, keypair, floating IP or loose port in the connection's project."""
    assert [s.name for s in conn.compute.servers()] == []
    assert [k.name for k in conn.compute.keypairs()] == []
    assert [ip.floating_ip_address for ip in conn.network.ips()] == []
    assert [n.name for n in conn.network.networks() if n.name.startswith("imagekit-site-")] == []
    # Only the router's and DHCP's ports stay on the project's networks.
    owners = {port.device_owner for port in conn.network.ports()}
    assert owners <= {"network:router_interface", "network:dhcp", "network:router_gateway"}


def cloud_and_host_empty(cloud: DevCloud) -> None:
    """Nothing left in the devcloud project, and no libvirt guest on this host."""
    conn = cloud.connect("devcloud")
    try:
        nothing_left(conn)
    finally:
        conn.close()
    assert virsh_guests() == []


def virsh_guests() -> list[str]:
    listed = subprocess.run(
        ["virsh", "list", "--all", "--name"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def test_a_member_boots_the_shared_image_with_its_own_user_data(
    compute_devcloud: DevCloud,
    published_web: PublishResult,
    config: Config,
    cloud_config: Path,
    tmp_path: Path,
    clouds_yaml: None,
) -> None:
    """The README's walkthrough, as project alpha: accept, user data, server, floating IP."""
    accepted = imagekit(cloud_config, "accept", published_web.name, "--cloud", "devcloud-alpha")
    assert accepted.returncode == 0, accepted.stderr
    user_data = tmp_path / "alpha-web.yaml"
    rendered = imagekit(
        cloud_config,
        *("userdata", "web", "--values", str(CHECKOUT / "cloud-init/examples/web.yaml")),
        *("--set", "hostname=alpha-web1", "--set", "server_name=shop.alpha.example"),
        *("--set", "configure_private_interface=false", "--set", "db_password=alpha-Secret-42"),
        *("--output", str(user_data)),
    )
    assert rendered.returncode == 0, rendered.stderr
    key = tmp_path / "id_ed25519"  # the member's own key: Nova's keypair, not a baked one
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    conn = compute_devcloud.connect("devcloud-alpha")
    try:
        image = conn.image.find_image(published_web.name, ignore_missing=False)
        assert image.id == published_web.image_id
        keypair = conn.compute.create_keypair(
            name="alpha-key", public_key=key.with_suffix(".pub").read_text()
        )
        network = conn.network.find_network(devcloud_compute.NETWORK, ignore_missing=False)
        started = time.monotonic()
        server = conn.compute.create_server(
            name="alpha-web1",
            image_id=image.id,
            flavor_id=conn.compute.find_flavor("imagekit.small", ignore_missing=False).id,
            networks=[{"uuid": network.id}],
            key_name=keypair.name,
            user_data=base64.b64encode(user_data.read_bytes()).decode(),
            security_groups=[{"name": devcloud_compute.SECURITY_GROUP}],
        )
        server = conn.compute.wait_for_server(server, wait=600)
        active = time.monotonic() - started
        assert server.has_config_drive
        public = conn.network.find_network(devcloud_compute.PUBLIC_NETWORK, ignore_missing=False)
        port = next(iter(conn.network.ports(device_id=server.id)))
        ip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)
        address = ip.floating_ip_address

        # Not reachable from the root namespace: only from inside the dev cloud's.
        outside = subprocess.run(["ping", "-c", "1", "-W", "2", address], capture_output=True)
        assert outside.returncode != 0
        page = wait_for(
            f"no page from {address}",
            lambda: in_namespace(
                # The page also tries its database by name: a resolver that is not there
                # (the example's) costs the resolver's timeouts first.
                *("curl", "-sSf", "--max-time", "60"),
                *("-H", "Host: shop.alpha.example", f"http://{address}/"),
            ),
        )
        print(f"\nserver ACTIVE in {active:.0f} s, page {time.monotonic() - started:.0f} s")
        assert "imagekit web: PHP" in page and "on alpha-web1" in page, page
        hostname = ssh(address, key, config.admin_user, "hostname")
        assert hostname.stdout.strip() == "alpha-web1", hostname.stderr
        assert len(virsh_guests()) == 1

        conn.network.delete_ip(ip)
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=300)
        conn.compute.delete_keypair(keypair)
        nothing_left(conn)
    finally:
        conn.close()
    assert virsh_guests() == []
    assert f"link tap{port.id[:11]}" not in host_leftovers()  # the server's own tap


def test_a_killed_cloud_test_is_cleaned_up_by_the_next_run(
    compute_devcloud: DevCloud,
    published_web: PublishResult,
    built: Callable[[str], Path],
    cloud_config: Path,
    clouds_yaml: None,
) -> None:
    """kill -9 once the server, its ports, keypair and floating IP exist; then `cleanup`."""
    web = built("web")
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "imagekit", "--config", str(cloud_config)),
            *("test", "web", "--cloud", "devcloud", "--build", web.name),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = compute_devcloud.connect("devcloud")
    try:
        deadline = time.monotonic() + 600
        while not list(conn.network.ips()):
            assert child.poll() is None and time.monotonic() < deadline, "no floating IP made"
            time.sleep(1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert [s.name for s in conn.compute.servers()] != [], "the server outlived its run"

        cleanup = imagekit(cloud_config, "cleanup")
        assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
        for kind in ("server", "keypair", "floating IP", "port"):
            assert f"deleted {kind} " in cleanup.stdout, cleanup.stdout
        nothing_left(conn)
    finally:
        conn.close()
    assert virsh_guests() == []


def test_imagekit_test_on_the_cloud_passes_the_web_suite(
    compute_devcloud: DevCloud,
    published_web: PublishResult,
    built: Callable[[str], Path],
    cloud_config: Path,
    clouds_yaml: None,
) -> None:
    """`imagekit test web --cloud devcloud`: the published image on a Nova server with the
    role's user data and a private NIC passes the same web suite as a local VM."""
    web = Build("web", built("web"))
    tested = imagekit(cloud_config, "test", "web", "--cloud", "devcloud", "--build", web.id)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    record = web.manifest().tests[-1]
    assert record.passed and record.backend == "OpenStackInstance" and record.tests >= 10
    print(f"on Nova: {record.timings}, suite {record.suite_s} s, total {record.total_s} s")
    cloud_and_host_empty(compute_devcloud)


# Seen passing here (2026-12-01: the build on Nova 836 s, 19 min with the compute dev
# cloud, the DIB base and the local suite), which is too long for the CI run's time
# budget on top of everything else, so not in the default run (tox.ini).
# Run it with: tox -e functional -- -m extended tests/functional/test_devcloud_compute.py
@pytest.mark.extended
def test_packer_builds_web_on_the_cloud(
    compute_devcloud: DevCloud,
    config: Config,
    cloud_config: Path,
    tmp_path: Path,
    clouds_yaml: None,
) -> None:
    """`imagekit build web --with packer --cloud devcloud`: a server from the DIB base image
    in Glance, provisioned by the web element's own files, snapshotted and brought back;
    the result passes the web suite."""
    started = time.monotonic()
    built = imagekit(cloud_config, "build", "web", "--with", "packer", "--cloud", "devcloud")
    assert built.returncode == 0, built.stderr[-3000:]
    print(f"\npacker on the cloud: {time.monotonic() - started:.0f} s")
    build = Build("web", Path(built.stdout.strip().splitlines()[-1]).parent)
    manifest = build.manifest()
    assert manifest.status == "built" and manifest.builder == "packer"
    assert {"nginx-light", "php-fpm", "php-mysql"} <= {p.name for p in manifest.packages}
    assert manifest.image is not None and manifest.image.format == "qcow2"
    print(f"image {manifest.image.size_bytes >> 20} MiB")

    with mounted_root(build.image, tmp_path) as root:
        keys = (root / f"home/{config.admin_user}/.ssh/authorized_keys").read_text().strip()
        assert keys == config.public_keys[0].line, "only the baked key: the build's is gone"
        assert not (root / "root/.ssh/authorized_keys").exists()
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert (root / "etc/machine-id").read_text() == ""
        assert not list((root / "etc/apt/apt.conf.d").glob("*imagekit-build-proxy*"))
        assert apt_source_uris(root) == {config.mirrors.image_main, config.mirrors.image_security}

    conn = compute_devcloud.connect("devcloud")
    try:
        nothing_left(conn)  # Packer's server and keypair are gone
        names = [image.name for image in conn.image.images()]
        assert not [name for name in names if name.startswith("imagekit-web-packer-")]
        assert [name for name in names if name.startswith("imagekit-base-")], "base uploaded"
    finally:
        conn.close()
    assert virsh_guests() == []
    tested = imagekit(cloud_config, "test", "web", "--local", "--build", build.id)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]


# Five Nova servers under TCG on two cores: too long for the CI run's time budget on top of
# everything else, so not in the default run (tox.ini). The local site test runs there.
# Run it with: tox -e functional -- -m extended tests/functional/test_devcloud_compute.py
@pytest.mark.extended
def test_the_whole_site_on_the_cloud(
    compute_devcloud: DevCloud,
    config: Config,
    built: Callable[[str], Path],
    cloud_config: Path,
    clouds_yaml: None,
) -> None:
    """`imagekit site test --cloud devcloud`: the site's instances as Nova servers from the
    published images, wired with Neutron (the lb's port the private subnet's gateway, a
    floating IP on its public side), pass the site suite; nothing is left afterwards."""
    cfg = config.model_copy(
        update={"publish": config.publish.model_copy(update={"identity_cloud": "devcloud-admin"})}
    )
    builds = {role: Build(role, built(role)) for role in ROLES}
    for role, build in builds.items():
        publish(cfg, role, "devcloud", build_id=build.id, force=True)
    chosen = [f"--build={role}={build.id}" for role, build in builds.items()]
    result = imagekit(
        cloud_config, "site", "test", "--cloud", "devcloud", *chosen, "-f", "json", timeout=3000
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(result.stdout)
    print(f"\nsite on Nova: {document['timings']}, suite {document['suite_s']} s, "
          f"total {document['total_s']} s")  # fmt: skip
    assert document["passed"] and document["backend"] == "OpenStack"
    # The checks of the local namespace's wiring are left out; every other one passed.
    assert document["tests"] == SITE_CHECKS - 2
    assert set(document["checks"].values()) == {"passed"}
    assert "test_private_instances_go_out_through_the_lb_and_its_nat[web]" in document["checks"]
    record = builds["web"].manifest().site_tests[-1]
    assert record.passed and record.backend == "OpenStack"
    cloud_and_host_empty(compute_devcloud)
