"""Functional tests: real diskimage-builder builds on this host (root needed).

Each role image is built once per test session and shared; DIB's cache lives
in the checkout's build/cache so that local re-runs are warm (CI starts clean).
"""

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagekit import doctor, host, verify
from imagekit.builders import dib
from imagekit.config import Config, load_config
from imagekit.devcloud import DevCloud
from imagekit.devcloud import compute as devcloud_compute
from imagekit.instances import factories
from imagekit.manifest import Manifest
from imagekit.roles import CHECKOUT
from imagekit.store import Store

CACHE_DIR = Path(os.environ.get("IMAGEKIT_TEST_CACHE", CHECKOUT / "build" / "cache"))
# The tests' dev cloud: beside a user's own, kept between runs (installed once).
DEVCLOUD_STATE = CHECKOUT / "build" / "devcloud-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.functional)
    # The nightly pipeline runs first: it builds and tests every role once, and
    # later tests reuse those builds (see `built`).
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")


@pytest.fixture(scope="session", autouse=True)
def builder_host() -> None:
    if os.geteuid() != 0:
        pytest.fail("functional tests build images for real and need root")
    host.ensure_requirements(doctor.ALL_REQUIREMENTS)


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway key pair; returns the private key path (the .pub is beside it)."""
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    cmd = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "functional@imagekit", "-f"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def make_config(tmp_path_factory: pytest.TempPathFactory, key_pair: Path) -> Callable[..., Path]:
    """Write a config with its own output dir and the shared cache; returns its path."""

    def make(extra: str = "") -> Path:
        directory = tmp_path_factory.mktemp("config")
        path = directory / "imagekit.yaml"
        path.write_text(
            f"ssh_keys: ['{key_pair}.pub']\n"
            "packages: [ca-certificates, curl, less, vim-tiny]\n"
            f"output_dir: {directory / 'images'}\n"
            f"cache_dir: {CACHE_DIR}\n" + extra
        )
        return path

    return make


@pytest.fixture(scope="session")
def config(make_config: Callable[..., Path]) -> Config:
    return load_config(make_config())


@pytest.fixture(scope="session")
def built(config: Config) -> Callable[[str], Path]:
    """Build directory of a role's image, built once per session through the Python API."""
    done: dict[str, Path] = {}

    def get(role: str) -> Path:
        if role not in done:
            found = Store(config.output_dir).newest(role)
            done[role] = found.dir if found else dib.build(config, role)
        return done[role]

    return get


@pytest.fixture(scope="session")
def devcloud() -> Iterator[DevCloud]:
    """The real Keystone + Glance on 127.0.0.1, once per session."""
    cloud = DevCloud(DEVCLOUD_STATE)
    cloud.up()
    try:
        yield cloud
    finally:
        cloud.down()


@pytest.fixture
def clouds_yaml(devcloud: DevCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev cloud is up, and openstacksdk (and imagekit commands the test starts) find it."""
    devcloud.up()  # a no-op when up; test_devcloud stops and starts it
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(devcloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)


@pytest.fixture(scope="session")
def web_build(built: Callable[[str], Path]) -> Path:
    return built("web")


@pytest.fixture(scope="session")
def tested_web(built: Callable[[str], Path], config: Config) -> Path:
    """The session's web build, tested for real if no earlier test did (publishing
    refuses an untested build, and tests may run alone or in any order)."""
    build_dir = built("web")
    if not Manifest.read(build_dir).tested:
        target = factories.Target("web", build_dir / "web.qcow2", build_dir)
        assert verify.test_image(config, target, factories.qemu_instances(config, "ft")).passed
    return build_dir


@pytest.fixture(scope="session")
def compute_devcloud(devcloud: DevCloud) -> Iterator[DevCloud]:
    """The session's dev cloud with compute (once), measured; down at the end, and nothing
    of it left on the host (warm restarts: bench/devcloud.py)."""
    started = time.monotonic()
    devcloud.up(compute=True)
    print(f"\ncompute dev cloud up in {time.monotonic() - started:.0f} s")
    print(f"RSS {cloud_rss_mib(devcloud)} MiB")
    try:
        yield devcloud
    finally:
        devcloud.down()
        assert host_leftovers() == []


def rss_mib(pids: list[int]) -> int:
    """Summed resident memory of these process groups (all their processes)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pids:  # process group
            total += int(fields[21]) * 4096  # rss pages
    return total // (1 << 20)


def cloud_rss_mib(cloud: DevCloud) -> int:
    daemons = [cloud.daemon(name) for name in ("keystone", "glance")]
    daemons += cloud.compute.daemons()
    groups = [pid for daemon in daemons if (pid := daemon.pid()) is not None]
    return rss_mib(groups)


def host_leftovers() -> list[str]:
    """Guests, namespaces, taps and bridges of the compute dev cloud left on the host."""
    found = []
    guests = subprocess.run(["virsh", "list", "--all", "--name"], capture_output=True, text=True)
    found += [f"guest {name}" for name in guests.stdout.split()]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [
        f"namespace {name}"
        for name in namespaces.split()
        if name.startswith(("qdhcp-", "qrouter-", devcloud_compute.PUBLIC_NS))
    ]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in links.splitlines()
        if line.split(":")[1].strip().startswith(("tap", "qr-", "qg-", "br-", "ikdc-", "vxlan"))
    ]
    return found
