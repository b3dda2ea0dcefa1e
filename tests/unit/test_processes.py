import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagekit import processes
from imagekit.errors import ImagekitError


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_child_started_from_a_thread_dies_when_we_are_killed(tmp_path: Path) -> None:
    """kill -9 of imagekit (the pipeline starts its stages from threads): the kernel
    stops the child, which waits in the thread that started it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, signal, threading, time\n"
            "from imagekit import processes\n"
            "def stage():\n"
            "    child = processes.spawn(['sleep', '120'], stdout=None,"
            " die_with_us=signal.SIGTERM)\n"
            f"    pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
            "    child.wait()\n"
            "threading.Thread(target=stage).start()\n"
            "time.sleep(120)\n",
        ]
    )
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    while b"setpriv" in Path(f"/proc/{child}/cmdline").read_bytes():
        time.sleep(0.05)  # until setpriv has exec'd sleep
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not gone(child):
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived its parent")


def test_a_group_that_ignores_its_stop_signal_is_killed_after_the_grace() -> None:
    """What the child forked is stopped too; `while_waiting` runs during the grace."""
    child = processes.spawn(
        ["sh", "-c", "trap '' TERM; sleep 60 & trap '' TERM; wait"], stdout=subprocess.DEVNULL
    )
    time.sleep(0.3)
    members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == child.pid]
    assert len(members) >= 2, "the shell and its sleep, in the child's group"
    calls: list[float] = []
    started = time.monotonic()
    processes.stop_groups([child.pid], signal.SIGTERM, 1.0, lambda: calls.append(1))
    assert time.monotonic() - started >= 1.0, "SIGKILL only after the grace"
    assert len(calls) >= 2
    assert all(gone(pid) for pid in members)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_missing_program_is_one_line() -> None:
    with pytest.raises(ImagekitError, match="cannot start no-such-tool: "):
        processes.spawn(["/nonexistent/no-such-tool"], stdout=subprocess.DEVNULL)


def test_a_stop_held_during_a_clean_up_is_raised_when_it_ends() -> None:
    assert not processes.hold_stop(), "no clean-up under way: nothing to hold"
    inner_done = False
    with pytest.raises(KeyboardInterrupt), processes.shielded():
        with processes.shielded():
            assert processes.hold_stop()
        inner_done = True  # the outer clean-up goes on: the stop waits for it
    assert inner_done
    assert not processes.hold_stop()


def marked(
    marker: str, own_group: bool, script: str = "time.sleep(120)"
) -> "subprocess.Popen[bytes]":
    """A process whose command line carries marker (python ignores the argument)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import os, signal, subprocess, time\n{script}", marker],
        start_new_session=own_group,
        stdout=subprocess.PIPE,
    )
    while not processes.carries(proc.pid, marker):  # cmdline is empty just after exec
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("own_group", [True, False], ids=["group leader", "lone process"])
def test_a_leftover_is_stopped_only_while_it_carries_the_marker(own_group: bool) -> None:
    proc = marked("marker-a", own_group)
    try:
        assert not processes.stop_leftover(proc.pid, "marker-b")
        assert proc.poll() is None
        assert processes.stop_leftover(proc.pid, "marker-a")
        # (Not its return code: stopping a group reaps it if it is our child, as here.)
        assert not processes.carries(proc.pid, "marker-a")
        assert not processes.stop_leftover(proc.pid, "marker-a"), "already gone"
    finally:
        proc.kill()
        proc.wait()


def test_a_leftover_group_is_stopped_whole_and_killed_after_the_grace() -> None:
    """What a leader forked goes with it; SIGTERM ignored: SIGKILL after the grace."""
    proc = marked(
        "leftover-group",
        own_group=True,
        script="signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '120'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)",
    )
    try:
        assert proc.stdout is not None
        forked = int(proc.stdout.readline())  # printed once SIGTERM is ignored
        assert _pgid(forked) == proc.pid
        started = time.monotonic()
        assert processes.stop_leftover(proc.pid, "leftover-group", grace=1)
        assert time.monotonic() - started >= 1, "SIGKILL only after the grace"
        assert not processes.carries(proc.pid, "leftover-group")
        assert gone(forked)
    finally:
        proc.kill()
        proc.wait()
