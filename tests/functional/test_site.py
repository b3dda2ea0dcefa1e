"""`imagekit site test` for real: the whole site boots from the golden images.

The example site passing end to end is the pipeline's site stage (test_pipeline,
which runs first and builds every role). Here: a broken site fails the right
checks and is kept, then `imagekit site down`; an interrupt or SIGTERM during
boot. Each test shows that nothing is left behind: no namespace, tap, qemu
process, qemu work dir or run directory.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imagekit.config import Config
from imagekit.manifest import Manifest
from imagekit.roles import ROLES
from imagekit.site import network
from imagekit.site.model import DEFAULT_SITE, load_site
from imagekit.site.run import down_all, how_to_reach, site_test, sites_dir, summary

Built = Callable[[str], Path]

# Every check of tests/site/test_site.py (parametrized ones once per role).
SITE_CHECKS = 14


def nothing_left() -> None:
    """No namespace, run directory, qemu process or qemu work dir of a site instance."""
    names = [i.name for i in load_site(DEFAULT_SITE).instances]
    assert network.namespaces() == [], "a site namespace was left behind"
    assert list(sites_dir().iterdir()) == [], "a site run directory was left behind"
    workdirs = [f"{tempfile.gettempdir()}/{name}-" for name in names]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "qemu-system" in args[0]:
            assert not any(w in " ".join(args) for w in workdirs), f"left running: {args}"
    left = [d for w in workdirs for d in glob.glob(w + "*")]
    assert left == [], f"qemu work dirs left behind: {left}"


# Four VMs booted at once: 710 s on this kind of host (2 cores, TCG), which the CI run's 90
# minutes have no room for beside the pipeline's own site test. Seen passing here
# (2026-12-02, in a full CI run: 43 passed, 83.6 min).
# Run it with: tox -e functional -- -m extended tests/functional/test_site.py
@pytest.mark.extended
def test_a_site_with_a_wrong_database_password_fails_the_right_checks(
    built: Built, config: Config, tmp_path: Path, key_pair: Path
) -> None:
    data = yaml.safe_load(DEFAULT_SITE.read_text())
    # Four instances (one web, with a wrong password): a fifth VM would prove nothing more.
    data["instances"] = [
        {**i, "values": {"db_password": "not-the-password-1"}} if i["name"] == "web2" else i
        for i in data["instances"]
        if i["name"] != "web1"
    ]
    path = tmp_path / "broken-site.yaml"
    path.write_text(yaml.safe_dump(data))
    builds = {role: built(role) for role in ROLES}
    # Kept, as a user debugging a failing site would; then `imagekit site down`.
    result = site_test(config, load_site(path), path, builds, keep=True, identity=key_pair)
    try:
        print(summary(result))
        print(how_to_reach(result))
        outcomes = dict(result.checks)
        assert not result.record.passed
        failed = {check for check, outcome in outcomes.items() if outcome != "passed"}
        assert "test_every_web_instance_answers_and_visits_add_up" in failed
        # What does not depend on web2's database login still passes.
        assert outcomes["test_http_redirects_to_https"] == "passed"
        assert outcomes["test_the_lb_forwards_nothing_into_the_private_network"] == "passed"
        # The baked key (the session's, whose private half the test has) reaches every
        # instance.
        key_check = "test_the_admin_key_reaches_every_private_instance_through_the_lb"
        assert outcomes[key_check] == "passed"
        assert len(outcomes) == SITE_CHECKS
        assert not Manifest.read(builds["web"]).site_tested

        # Kept: it still answers from its outside world, and says why it fails.
        assert result.namespace is not None
        page = subprocess.run(
            ["ip", "netns", "exec", result.namespace,
             "curl", "-sk", "--max-time", "30", f"https://{result.lb_public_address}/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "on web2" in page.stdout and "visit: failed" in page.stdout, page
        down = subprocess.run(
            [sys.executable, "-m", "imagekit", "--config", str(config.source), "site", "down"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert down.returncode == 0 and result.namespace in down.stdout, down.stderr
    finally:
        down_all()
    nothing_left()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_during_boot_leaves_nothing(
    built: Built, config: Config, stop: signal.Signals
) -> None:
    args = [f"--build={role}={built(role).name}" for role in ROLES]
    child = subprocess.Popen(
        [sys.executable, "-m", "imagekit", "--config", str(config.source), "site", "test", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until every instance is booting, then Ctrl-C.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = list(sites_dir().glob("*/state.json"))
        if states and len(json.loads(states[0].read_text())["qemu"]) == 5:
            break
        time.sleep(0.5)
    else:
        child.kill()
        raise AssertionError("the site did not start booting")
    os.kill(child.pid, stop)
    _, errors = child.communicate(timeout=120)
    assert child.returncode == 130, errors
    nothing_left()
