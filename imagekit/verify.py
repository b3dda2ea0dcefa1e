"""`imagekit test`: boot an image in a throwaway instance and run its role's suite."""

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagekit import runs
from imagekit.builders.dib import CLOUD_INIT_DATASOURCES
from imagekit.clouds import connect
from imagekit.config import Config
from imagekit.errors import UserError
from imagekit.host import vm_cpus
from imagekit.instances import Instance, SshAddress, throwaway
from imagekit.instances.openstack import OpenStackInstance, ServerSettings
from imagekit.instances.qemu import QemuInstance
from imagekit.manifest import (
    Manifest,
    SuiteResult,
    check_qcow2,
    utc_now,
)
from imagekit.progress import Progress, say
from imagekit.publishing.attributes import image_name
from imagekit.roles import CHECKOUT, SUITES_DIR, get_role
from imagekit.store import Store
from imagekit.userdata import load_values, render_user_data
from imagekit.userdata.render import template_context
from imagekit.userdata.values import Common


@dataclass(frozen=True)
class Target:
    """What to test: an image file, and the build it belongs to (if any)."""

    role: str
    image: Path
    build_dir: Path | None

    @property
    def report_dir(self) -> Path:
        return self.build_dir or self.image.parent

    @property
    def report_prefix(self) -> str:
        return "test" if self.build_dir else f"{self.image.name}.test"


def find_target(config: Config, role: str, image: Path | None, build_id: str | None) -> Target:
    if image is not None:
        return Target(role, check_qcow2(image, "--image").resolve(), None)
    store = Store(config.output_dir)
    build = store.get(role, build_id) if build_id is not None else store.newest_or_fail(role)
    return Target(role, build.image, build.dir)


InstanceFactory = Callable[[Target, Path], Instance]


def example_values(role: str) -> Common:
    """The role's documented example values: what test instances boot with."""
    return load_values(role, [get_role(role).example_values], [])


def instance_values(role: str, private_nic_by_cloud: bool = False) -> Common:
    """What every test instance boots with, whatever the backend: the role's example values.

    private_nic_by_cloud: the cloud's network config sets the private address
    (a port with a fixed IP) on a NIC named as the cloud's hardware has it, so the
    user data does not.
    """
    values = example_values(role)
    if private_nic_by_cloud:
        values = values.model_copy(update={"configure_private_interface": False})
    return values


def instance_user_data(config: Config, role: str, private_nic_by_cloud: bool = False) -> str:
    return render_user_data(role, instance_values(role, private_nic_by_cloud), config.cache_dir)


def qemu_instances(
    config: Config, prefix: str = "imagekit-test", keep: bool = False
) -> InstanceFactory:
    """The default backend: a local qemu VM per target, its console log beside the report.

    Unless kept, the VM dies with us and is recorded in our run (if one was
    started: imagekit.runs), so that the next command removes it if we die.
    """

    def make(target: Target, console: Path) -> Instance:
        return QemuInstance(
            target.image,
            config.admin_user,
            f"{prefix}-{target.role}",
            instance_user_data(config, target.role),
            cpus=vm_cpus(),
            console_log=console,
            stop_with_us=not keep,
        )

    return make


def published_image(config: Config, cloud: str, build_dir: Path) -> str:
    """The build's image in that cloud: the id its publication recorded, else publish's name."""
    manifest = Manifest.read(build_dir)
    publication = manifest.publication(cloud)
    return publication.image_id if publication else image_name(config, manifest)


def openstack_instances(config: Config, cloud: str, keep: bool = False) -> InstanceFactory:
    """A server per target on the cloud, booted from the build's published Glance image."""
    if config.openstack is None:
        raise UserError(f"{config.source}: openstack: section missing (needed by --cloud)")
    if config.openstack.private_network is None:
        raise UserError(
            f"{config.source}: openstack.private_network missing (test servers need a NIC "
            "on the private network, whose address the role suites check)"
        )
    conn = connect(cloud, authenticate=True)
    settings = ServerSettings(**config.openstack.model_dump(exclude={"apt_proxy"}))

    def make(target: Target, console: Path) -> Instance:
        if target.build_dir is None:
            raise UserError("--image is a local file: with --cloud, test a build (--build ID)")
        # Tagged with our run's id: the next command deletes what we leave if we die.
        run = runs.current()
        if run is not None and not keep:
            run.note_cloud(cloud, "servers")
        return OpenStackInstance(
            conn,
            published_image(config, cloud, target.build_dir),
            config.admin_user,
            f"imagekit-test-{target.role}" + (f"-{run.id}" if run else ""),
            settings,
            instance_user_data(config, target.role, private_nic_by_cloud=True),
            run_id=run.id if run else None,
            private_address=str(example_values(target.role).private_address.ip),
        )

    return make


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
        "datasources": [d.strip() for d in CLOUD_INIT_DATASOURCES.split(",")],
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


def test_image(
    config: Config,
    target: Target,
    make_instance: InstanceFactory,
    keep: bool = False,
    on_ready: Callable[[SshAddress], None] | None = None,
) -> SuiteResult:
    """Boot, run the suite, destroy (unless keep); record the result in the manifest."""
    junit = target.report_dir / f"{target.report_prefix}-report.xml"
    console = target.report_dir / f"{target.report_prefix}-console.log"
    junit.unlink(missing_ok=True)
    instance = make_instance(target, console)
    started = time.monotonic()
    progress = Progress(f"{target.role} test")
    progress.update(f"booting ({instance.accelerator})")
    try:
        with throwaway(instance, keep=keep) as address:
            if on_ready:
                on_ready(address)
            manifest = Manifest.read(target.build_dir) if target.build_dir else None
            progress.update("running the suite")
            # The values the instance booted with (see the backends' factories).
            values = instance_values(target.role, isinstance(instance, OpenStackInstance))
            record = run_suite(
                config, target.role, address, junit, manifest=manifest, values=values
            )
    finally:
        progress.close()
    progress.finish(f"suite {'passed' if record.passed else 'FAILED'}")
    if keep:
        say(f"instance left running: {instance.describe()}", warning=True)
    record.backend = type(instance).__name__
    record.accelerator = instance.accelerator
    record.total_s = round(time.monotonic() - started, 1)
    record.timings = dict(getattr(instance, "timings", {}))
    if target.build_dir is not None:
        Manifest.update(target.build_dir, lambda manifest: manifest.tests.append(record))
    return record
