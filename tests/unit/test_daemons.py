"""The dev cloud's daemon helper: pid files that survive pid reuse, groups stopped whole."""

import os
import subprocess
import time
from pathlib import Path

from imagekit.daemons import Daemon


def test_daemon_group_starts_and_stops_with_its_children(tmp_path: Path) -> None:
    # A shell with a child: stopping the daemon stops the whole group.
    daemon = Daemon("d", ["sh", "-c", "sleep 300 & wait"], tmp_path / "run", tmp_path / "logs")
    daemon.start(dict(os.environ), tmp_path)
    pid = daemon.pid()
    assert pid is not None and os.getpgid(pid) == pid
    deadline = time.monotonic() + 5
    while len(group(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group(pid)) == 2
    daemon.stop(timeout=5)
    assert daemon.pid() is None and not daemon.pid_file.exists()
    assert group(pid) == []


def group(pgid: int) -> list[str]:
    """Live members of a process group (this host's PID 1 may leave zombies unreaped)."""
    found = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True
    )
    return [line.split()[0] for line in found.stdout.splitlines() if "Z" not in line.split()[1]]


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    daemon = Daemon("d", [], tmp_path, tmp_path)
    # Our own pid, but with another start time: a process that reused the pid.
    daemon.pid_file.write_text(f"{os.getpid()} 1")
    assert daemon.pid() is None
    daemon.pid_file.write_text("garbage")
    assert daemon.pid() is None
