"""`imagekit test` for real: each role image boots in a qemu VM and passes its suite."""

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagekit import suites
from imagekit.config import Config
from imagekit.instances import SshAddress, throwaway
from imagekit.instances.access import connect, run
from imagekit.instances.qemu import QemuInstance
from imagekit.manifest import SuiteResult
from imagekit.roles import get_role

Built = Callable[[str], Path]


def no_qemu_left() -> None:
    running = subprocess.run(
        ["pgrep", "-af", "qemu-system.*/(ft|imagekit-test)-"], capture_output=True, text=True
    )
    assert running.stdout == "", "a throwaway VM was left running"


@dataclass
class Boot:
    host_key: str
    machine_id: str
    suite: SuiteResult


def identity(address: SshAddress) -> tuple[str, str]:
    """The instance's SSH host key fingerprint and machine-id."""
    with connect(address) as client:
        _, host_key = run(client, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", 30)
        _, machine_id = run(client, "cat /etc/machine-id", 30)
    return host_key.split()[1], machine_id.strip()


@pytest.fixture(scope="module")
def dns_boot(built: Built, config: Config, tmp_path_factory: pytest.TempPathFactory) -> Boot:
    """One boot of the dns image that serves two tests: the web suite run against it, and
    the first of two boots whose identities must differ (a boot less in CI)."""
    instance = QemuInstance(built("dns") / "dns.qcow2", config.admin_user, "ft-negative")
    with throwaway(instance) as address:
        junit = tmp_path_factory.mktemp("negative") / "report.xml"
        suite = suites.run_suite(config, "web", address, junit, [get_role("web").suite])
        return Boot(*identity(address), suite)


def test_a_suite_fails_on_an_image_that_lacks_what_it_checks(dns_boot: Boot) -> None:
    """The web suite against the dns image (no Nginx, no PHP) must fail."""
    assert not dns_boot.suite.passed
    assert dns_boot.suite.failures >= 2
    no_qemu_left()


def test_each_boot_makes_its_own_host_keys_and_machine_id(
    built: Built, config: Config, dns_boot: Boot
) -> None:
    instance = QemuInstance(built("dns") / "dns.qcow2", config.admin_user, "ft-twice")
    with throwaway(instance) as address:
        host_key, machine_id = identity(address)
    assert host_key != dns_boot.host_key, "SSH host keys are made per instance"
    assert machine_id != dns_boot.machine_id
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    no_qemu_left()
