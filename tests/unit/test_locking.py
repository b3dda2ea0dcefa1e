import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagekit.errors import BusyError
from imagekit.locking import Lock


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    lock = tmp_path / "web" / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from imagekit.locking import Lock\n"
            f"with Lock(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(
                BusyError, match=rf"a build of web is already running \(pid {holder.pid}"
            ),
            Lock(lock, "a build of web"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock to clean up.
    with Lock(lock, "a build of web"):
        pass


def test_a_waiting_lock_says_so_and_gets_it_when_freed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "dib" / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from imagekit.locking import Lock\n"
            f"with Lock(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); time.sleep(1)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    started = time.monotonic()
    with Lock(lock, "another build using the cache", wait=True):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5, "it waited for the holder (who held it 1 s)"
    assert capsys.readouterr().err == (
        f"imagekit: waiting for another build using the cache (pid {holder.pid}, lock {lock})\n"
    )
