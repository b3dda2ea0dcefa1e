"""`imagekit test`: boot an image in a throwaway instance and run its role's suite.

Which image (find_target), then boot, suite and record (test_image); the instance
comes from a factory (imagekit.instances.factories), the suite's run from
imagekit.suites."""

import time
from collections.abc import Callable
from pathlib import Path

from imagekit.config import Config
from imagekit.instances import SshAddress, throwaway
from imagekit.instances.factories import InstanceFactory, Target, instance_values
from imagekit.instances.openstack import OpenStackInstance
from imagekit.manifest import Manifest, SuiteResult, check_qcow2
from imagekit.progress import Progress, say
from imagekit.store import Build, Store
from imagekit.suites import run_suite


def find_target(config: Config, role: str, image: Path | None, build_id: str | None) -> Target:
    if image is not None:
        return Target(role, check_qcow2(image, "--image").resolve(), None)
    store = Store(config.output_dir)
    build = store.get(role, build_id) if build_id is not None else store.newest_or_fail(role)
    return Target(role, build.image, build.dir)


def test_image(
    config: Config,
    target: Target,
    make_instance: InstanceFactory,
    keep: bool = False,
    on_ready: Callable[[SshAddress], None] | None = None,
) -> SuiteResult:
    """Boot, run the suite, destroy (unless keep); record the result in the manifest."""
    files = Build(target.role, target.report_dir)  # a bare image's beside it, prefixed
    junit, console = files.report(target.report_prefix), files.console_log(target.report_prefix)
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
