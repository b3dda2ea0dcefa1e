"""`imagekit test` for real: each role image boots in a qemu VM and passes its suite."""

import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagekit import suites
from imagekit.config import Config
from imagekit.errors import ImagekitError
from imagekit.instances import SshAddress
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
    suite: SuiteResult | None  # only where a suite was run
    error: str | None  # why the boot failed, if it did


# A step of the user data fails: the boot must fail and say which, and why.
FAILING_USER_DATA = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo imagekit-step-failed; exit 3']\n"


def identity(address: SshAddress) -> tuple[str, str]:
    """The instance's SSH host key fingerprint and machine-id."""
    with connect(address) as client:
        _, host_key = run(client, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", 30)
        _, machine_id = run(client, "cat /etc/machine-id", 30)
    return host_key.split()[1], machine_id.strip()


@pytest.fixture(scope="module")
def dns_boots(
    built: Built, config: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Boot, Boot]:
    """Two instances of the dns image, booted at once (a core each): the first runs the
    web suite (which must fail there); the second's user data fails; the identities of
    the two must differ."""
    image = built("dns") / "dns.qcow2"  # built before the threads: one build
    junit = tmp_path_factory.mktemp("negative") / "report.xml"

    def boot(name: str, suite: bool, user_data: str = "#cloud-config\n") -> Boot:
        instance = QemuInstance(image, config.admin_user, name, user_data)
        error = None
        try:
            try:
                instance.start()
            except ImagekitError as err:
                error = str(err)  # cloud-init failed; the instance is up, its identity readable
            address = instance.address
            assert address is not None, error
            result = None
            if suite:
                result = suites.run_suite(config, "web", address, junit, [get_role("web").suite])
            return Boot(*identity(address), result, error)
        finally:
            instance.stop()

    with ThreadPoolExecutor(2) as pool:
        negative = pool.submit(boot, "ft-negative", True)
        other = pool.submit(boot, "ft-twice", False, FAILING_USER_DATA)
        return negative.result(), other.result()


def test_a_suite_fails_on_an_image_that_lacks_what_it_checks(
    dns_boots: tuple[Boot, Boot],
) -> None:
    """The web suite against the dns image (no Nginx, no PHP) must fail."""
    suite = dns_boots[0].suite
    assert suite is not None and not suite.passed
    assert suite.failures >= 2
    no_qemu_left()


def test_each_boot_makes_its_own_host_keys_and_machine_id(dns_boots: tuple[Boot, Boot]) -> None:
    first, second = dns_boots
    assert first.host_key != second.host_key, "SSH host keys are made per instance"
    assert first.machine_id != second.machine_id
    assert re.fullmatch(r"[0-9a-f]{32}", second.machine_id)
    no_qemu_left()


def test_a_failing_user_data_step_fails_the_boot_and_says_why(
    dns_boots: tuple[Boot, Boot],
) -> None:
    """The first line names cloud-init's error (a pipeline prints only that line); the
    tail of cloud-init's output log follows."""
    negative, failed = dns_boots
    assert negative.error is None
    assert failed.error is not None, "a failed runcmd went unnoticed"
    first = failed.error.splitlines()[0]
    assert first.startswith("cloud-init finished with errors: "), first
    assert "scripts" in first and "Runparts: 1 failures" in first, first
    assert "imagekit-step-failed" in failed.error
    no_qemu_left()
