"""Failed, interrupted and concurrent builds: clear messages, nothing left behind."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.builders import dib
from imagekit.cleanup import leftovers
from imagekit.config import load_config
from imagekit.locking import Lock
from imagekit.manifest import Manifest
from imagekit.store import Store


def start_build(config_path: Path, role: str = "web") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagekit", "--config", str(config_path), "build", role],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_log(output_dir: Path, text: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in output_dir.glob("*/*/build.log"):
            if text in log.read_text(errors="replace"):
                return
        time.sleep(0.5)
    raise AssertionError(f"'{text}' never appeared in the build log")


def assert_nothing_left(config_path: Path) -> None:
    config = load_config(config_path)
    tmp = config.cache_dir / "tmp"
    mounts, loops = leftovers(tmp)
    assert mounts == [] and loops == []
    assert not tmp.exists() or not any(tmp.iterdir()), "temp dirs removed"
    (made,) = Store(config.output_dir).builds("web")
    build_dir = made.dir
    manifest = Manifest.read(build_dir)
    assert manifest.status == "failed" and manifest.error
    assert not (build_dir / "web.qcow2").exists()
    assert (build_dir / "build.log").stat().st_size > 0


@pytest.mark.parametrize(
    ("signals", "moment"),
    [
        # Ctrl-C while packages install in the chroot (proc, sys, dev mounted).
        ([signal.SIGINT], "dib-run-parts Running /tmp/in_target.d/install.d"),
        # Once the disk image is on a loop device and mounted: a dropped SSH session,
        # then an impatient Ctrl-C and a SIGTERM while DIB cleans up: one orderly stop,
        # the later signals said and ignored. (SIGTERM first: the site's interrupt test.)
        # Sent back to back: DIB may be done within half a second, and a signal after
        # imagekit's stop is over is ignored without a word.
        ([signal.SIGHUP, signal.SIGINT, signal.SIGTERM], "Calling [sudo losetup"),
    ],
    ids=["sigint-in-chroot", "sighup-then-two-more-on-loop-device"],
)
def test_interrupted_build_cleans_up(
    make_config: Callable[..., Path], signals: list[int], moment: str
) -> None:
    config_path = make_config()
    dib.base_layer(load_config(config_path))  # the role build's own moments, not the base's
    build = start_build(config_path)
    wait_for_log(config_path.parent / "images", moment)
    for signum in signals:
        build.send_signal(signum)
    _, stderr = build.communicate(timeout=300)
    assert build.returncode == 130
    assert "was interrupted; log:" in stderr and "build.log" in stderr
    assert "Traceback" not in stderr
    if len(signals) > 1:
        assert "imagekit: still cleaning up\n" in stderr
        assert "imagekit: still cleaning up, at most" in stderr
    assert_nothing_left(config_path)


def test_failed_build_keeps_its_log_and_says_where(make_config: Callable[..., Path]) -> None:
    config_path = make_config("roles:\n  web:\n    packages: [no-such-package-imagekit]\n")
    build = start_build(config_path)
    _, stderr = build.communicate(timeout=900)
    assert build.returncode == 1
    line = next(line for line in stderr.splitlines() if "build of 'web' failed" in line)
    log = Path(line.split("log: ", 1)[1])
    assert "no-such-package-imagekit" in log.read_text(errors="replace")
    assert_nothing_left(config_path)


def test_second_build_of_a_role_is_refused(make_config: Callable[..., Path]) -> None:
    config_path = make_config()
    output = load_config(config_path).output_dir
    with Lock(output / "web" / ".lock", "a build of 'web'"):
        build = start_build(config_path)
        _, stderr = build.communicate(timeout=120)
    assert build.returncode == 3
    assert f"a build of 'web' in {output / 'web'} is already running" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not list((output / "web").glob("2*")), "no build directory was started"
