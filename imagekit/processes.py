"""Every long-running child imagekit starts: one way in, one way out.

DIB, Packer, qemu, the pipeline's stages and the dev cloud's daemons start
through `spawn()`: a session (so a process group) of their own, so that our
Ctrl-C does not reach them behind our back and a stop reaches everything they
forked; unless they are meant to outlive us, the kernel sends them a signal
when we die, however we die. They stop through `stop_groups()`: their stop
signal, a grace to clean up, then SIGKILL.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from imagekit.errors import ImagekitError

File = IO[Any] | int | None


def spawn(
    command: Sequence[str],
    *,
    stdout: File,
    stderr: File = subprocess.STDOUT,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    text: bool = False,
    die_with_us: signal.Signals | None = None,
) -> "subprocess.Popen[Any]":
    """Start a child in its own session; `die_with_us`: the signal it gets when we die.

    setpriv sets that up and execs the command (same pid): a preexec_fn is unsafe
    in a process with threads, and the pipeline and site tests start children
    from threads. The signal follows the death of the thread that called us.
    """
    prefix = []
    if die_with_us is not None:
        prefix = ["setpriv", "--pdeathsig", die_with_us.name.removeprefix("SIG"), "--"]
    try:
        return subprocess.Popen(
            [*prefix, *command],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            text=text,
            start_new_session=True,
        )
    except OSError as err:
        raise ImagekitError(f"cannot start {Path(command[0]).name}: {err}") from None


def signal_group(pgid: int, signum: signal.Signals) -> None:
    """Signal a child's whole process group, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


# After SIGKILL, how long a group may take to be gone.
KILL_WAIT_S = 5.0
_shield_depth = 0
_stop_held = False


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A clean-up that a stop signal must not cut short (stopping children, deleting
    what we made): a first signal that arrives meanwhile is held, and raised as
    KeyboardInterrupt when the clean-up is over."""
    global _shield_depth, _stop_held
    if threading.current_thread() is not threading.main_thread():
        yield  # signals interrupt only the main thread
        return
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
    # Raised only if nothing is on its way up already (an error being cleaned up
    # after stays the error; the stop is then done by the error's own exit).
    if _shield_depth == 0 and _stop_held and sys.exc_info()[1] is None:
        _stop_held = False
        raise KeyboardInterrupt


def hold_stop() -> bool:
    """For the signal handler: if a clean-up is under way, hold the stop until it ends."""
    global _stop_held
    if _shield_depth:
        _stop_held = True
    return _stop_held


def stop_groups(
    pgids: list[int],
    signum: signal.Signals = signal.SIGTERM,
    grace: float = 15.0,
    while_waiting: Callable[[], None] = lambda: None,
) -> None:
    """Stop these process groups: signum, up to `grace` seconds (calling
    `while_waiting`, say to keep reading their output), then SIGKILL."""
    with shielded():
        for sig, wait in ((signum, grace), (signal.SIGKILL, KILL_WAIT_S)):
            for pgid in pgids:
                signal_group(pgid, sig)
            if wait_gone(pgids, wait, while_waiting):
                return
        raise ImagekitError(f"process groups {pgids} do not stop")


def wait_gone(
    pgids: list[int], timeout: float, while_waiting: Callable[[], None] = lambda: None
) -> bool:
    """Wait until these process groups have no live (non-zombie) thread left."""
    deadline = time.monotonic() + timeout
    while True:
        while_waiting()
        for pid in pgids:  # our own children would linger as zombies
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        live = set()
        # Threads too: a leader shows as zombie while its threads (and sockets) live on.
        for process in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):  # processes come and go while we look
                for task in os.listdir(f"/proc/{process}/task"):
                    stat = Path(f"/proc/{process}/task/{task}/stat").read_text()
                    state, _, pgid = stat.rsplit(")", 1)[1].split()[:3]
                    if state != "Z":
                        live.add(int(pgid))
        if not live.intersection(pgids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def carries(pid: int, marker: str) -> bool:
    """The process exists, is no zombie, and its command line contains marker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(cmdline) and marker.encode() in cmdline  # a zombie's is empty


def stop_leftover(pid: int, marker: str, grace: float = 15.0) -> bool:
    """Stop a process that a dead or earlier run left (not our child): only while its
    command line still carries marker (a pid is reused), with its whole group when it
    leads one. False when it was already gone (or is someone else's)."""
    if not carries(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:  # started by spawn(): the group is everything it forked
            stop_groups([pid], grace=grace)
            return True
        with shielded():
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
                os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while carries(pid, marker) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not carries(pid, marker):
                    break
    return True
