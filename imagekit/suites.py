"""Running a testinfra suite (a role's, or the site's) and reading its JUnit report."""

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from imagekit.config import Config
from imagekit.instances import SshAddress
from imagekit.manifest import Manifest, SuiteResult, utc_now
from imagekit.roles import CHECKOUT, SUITES_DIR, cloud_init_datasources, get_role
from imagekit.userdata import example_values
from imagekit.userdata.render import template_context
from imagekit.userdata.values import Common


def suite_files(role: str) -> list[Path]:
    return [SUITES_DIR / "test_common.py", get_role(role).suite]


def suite_context(
    config: Config,
    role: str,
    address: SshAddress,
    manifest: Manifest | None = None,
    values: Common | None = None,
) -> dict[str, object]:
    """What the role suites expect: what the build recorded (its manifest; the config
    only for a bare --image or a manifest from before these were recorded) and the
    instance's user-data values (default: the role's examples)."""
    values = values or example_values(role)
    revealed = json.loads(values.model_dump_json())
    for name, value in template_context(values).items():
        # Secrets in clear (the suites log in with them) and derived values.
        if name not in revealed or name in values.secrets():
            revealed[name] = value
    return {
        "values": json.loads(json.dumps(revealed, default=str)),
        "admin_user": manifest.admin_user if manifest else config.admin_user,
        "authorized_keys": (manifest and manifest.authorized_keys)
        or [key.line for key in config.public_keys],
        "packages": (manifest and manifest.requested_packages) or config.role_packages(role),
        "datasources": (manifest and manifest.datasources) or cloud_init_datasources(),
        "ssh": f"{address.host}:{address.port}",
        "ssh_proxy_command": address.proxy_command,
    }


def pytest_command(junit: Path, *args: str) -> list[str]:
    """How imagekit runs a suite (role or site): quiet, no cache, a JUnit report."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--color=no",
        f"--rootdir={CHECKOUT}",
        f"--junitxml={junit}",
        *args,
    ]


def run_suite(
    config: Config,
    role: str,
    address: SshAddress,
    junit: Path,
    files: list[Path] | None = None,
    manifest: Manifest | None = None,
    values: Common | None = None,
) -> SuiteResult:
    """Run the role's testinfra suite against a booted instance; the JUnit XML goes to junit."""
    with tempfile.TemporaryDirectory(prefix="imagekit-suite-") as tmp:
        context = Path(tmp) / "context.json"
        context.write_text(json.dumps(suite_context(config, role, address, manifest, values)))
        # A throwaway instance's host key is new by definition.
        ssh_config = Path(tmp) / "ssh_config"
        proxy = f"  ProxyCommand {address.proxy_command}\n" if address.proxy_command else ""
        ssh_config.write_text(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n" + proxy
        )
        cmd = pytest_command(
            junit,
            f"--hosts=paramiko://{address.user}@{address.host}:{address.port}",
            f"--ssh-identity-file={address.key_file}",
            f"--ssh-config={ssh_config}",
            *map(str, files or suite_files(role)),
        )
        started = time.monotonic()
        subprocess.run(cmd, env={**os.environ, "IMAGEKIT_SUITE_CONTEXT": str(context)}, check=False)
        seconds = round(time.monotonic() - started, 1)
    return _record(junit, seconds)


def _record(junit: Path, seconds: float) -> SuiteResult:
    if not junit.is_file():
        # pytest did not even write a report: count it as an error, never a pass.
        return SuiteResult(when=utc_now(), passed=False, errors=1, suite_s=seconds)
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    # A skipped check is not a passed one.
    passed = counts["tests"] > 0 and not (
        counts["failures"] or counts["errors"] or counts["skipped"]
    )
    return SuiteResult(when=utc_now(), passed=passed, suite_s=seconds, report=junit.name, **counts)
