"""`imagekit site test` for real: the whole site boots from the golden images.

The example site passing end to end is the pipeline's site stage (test_pipeline,
which runs first and builds every role). Here: a broken site fails the right
checks, and an interrupt during boot. Each test shows that nothing is left
behind: no namespace, tap, qemu process or run directory.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from imagekit.config import Config
from imagekit.manifest import Manifest
from imagekit.roles import ROLES
from imagekit.site import network
from imagekit.site.model import DEFAULT_SITE, load_site
from imagekit.site.run import site_test, sites_dir, summary

Built = Callable[[str], Path]

# Every check of tests/site/test_site.py (parametrized ones once per role).
SITE_CHECKS = 13


def nothing_left() -> None:
    assert network.namespaces() == [], "a site namespace was left behind"
    running = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    assert "imagekit-site" not in running.stdout and "/lb1-" not in running.stdout
    assert list(sites_dir().iterdir()) == [], "a site run directory was left behind"


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
    result = site_test(config, load_site(path), path, builds, identity=key_pair)
    print(summary(result))
    outcomes = dict(result.checks)
    assert not result.record.passed
    failed = {check for check, outcome in outcomes.items() if outcome != "passed"}
    assert "test_every_web_instance_answers_and_visits_add_up" in failed
    # What does not depend on web2's database login still passes.
    assert outcomes["test_http_redirects_to_https"] == "passed"
    assert outcomes["test_the_lb_forwards_nothing_into_the_private_network"] == "passed"
    # The baked key (the session's, whose private half the test has) reaches every instance.
    assert outcomes["test_the_admin_key_reaches_every_private_instance_through_the_lb"] == "passed"
    assert len(outcomes) == SITE_CHECKS
    assert not Manifest.read(builds["web"]).site_tested
    nothing_left()


def test_an_interrupt_during_boot_leaves_nothing(built: Built, config: Config) -> None:
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
    os.kill(child.pid, signal.SIGINT)
    _, errors = child.communicate(timeout=120)
    assert child.returncode == 130, errors
    nothing_left()
