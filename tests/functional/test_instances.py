"""`imagekit test` for real: each role image boots in a qemu VM and passes its suite."""

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from imagekit import verify
from imagekit.config import Config
from imagekit.instances import throwaway
from imagekit.instances.access import connect, run
from imagekit.instances.qemu import QemuInstance
from imagekit.roles import get_role

Built = Callable[[str], Path]


def no_qemu_left() -> None:
    running = subprocess.run(
        ["pgrep", "-af", "qemu-system.*/(ft|imagekit-test)-"], capture_output=True, text=True
    )
    assert running.stdout == "", "a throwaway VM was left running"


def test_a_suite_fails_on_an_image_that_lacks_what_it_checks(
    built: Built, config: Config, tmp_path: Path
) -> None:
    """The web suite against the dns image (no Nginx, no PHP) must fail."""
    image = built("dns") / "dns.qcow2"
    instance = QemuInstance(image, config.admin_user, "ft-negative")
    with throwaway(instance) as address:
        junit = tmp_path / "report.xml"
        result = verify.run_suite(config, "web", address, junit, [get_role("web").suite])
    assert not result.passed
    assert result.failures >= 2
    no_qemu_left()


def test_each_boot_makes_its_own_host_keys_and_machine_id(built: Built, config: Config) -> None:
    image = built("web") / "web.qcow2"
    seen = []
    for n in range(2):
        with throwaway(QemuInstance(image, config.admin_user, f"ft-twice-{n}")) as address:
            client = connect(address)
            with client:
                _, host_key = run(client, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", 30)
                _, machine_id = run(client, "cat /etc/machine-id", 30)
            seen.append((host_key.split()[1], machine_id.strip()))
    (key_a, id_a), (key_b, id_b) = seen
    assert key_a != key_b, "SSH host keys are made per instance"
    assert id_a != id_b and re.fullmatch(r"[0-9a-f]{32}", id_a)
    no_qemu_left()
