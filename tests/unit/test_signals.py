"""One orderly stop: the first signal stops the child, later ones never abandon its clean-up."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagekit import cli

# The real `imagekit` main, whose command runs a real child through the builders'
# run_logged, as a DIB build does. The child needs 2 s to clean up after its stop signal.
SCRIPT = """
import os, signal, sys
from pathlib import Path
from imagekit import cli
from imagekit.builders import run_logged

CHILD = (
    'trap "sleep 2; echo done > $WORK/cleaned; exit 1" TERM; '
    'echo ready $$; while :; do sleep 0.1; done'
)

def command(args):
    work = Path(sys.argv[1])
    env = {"PATH": os.environ["PATH"], "WORK": str(work)}
    show = lambda line: print(line, end="", flush=True)
    run_logged(["sh", "-c", CHILD], env, work / "log", show, signal.SIGTERM)
    return 0

cli._doctor = command
sys.exit(cli.main(["doctor"]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_later_signals_never_abandon_the_childs_clean_up(
    tmp_path: Path, first: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == "ready", ready
    child = int(ready[1])

    proc.send_signal(first)  # the orderly stop: the child gets SIGTERM and cleans up
    time.sleep(0.5)
    for later in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        proc.send_signal(later)  # a second Ctrl-C, systemd, a dropped session
        time.sleep(0.1)
    assert proc.poll() is None, "still waiting for the child's clean-up"

    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert (tmp_path / "cleaned").read_text() == "done\n", "the child finished its clean-up"
    assert not _alive(child)
    # The second signal says so; the third and fourth how long the stop can still take.
    assert err.count("imagekit: still cleaning up\n") == 1, err
    assert err.count("imagekit: still cleaning up, at most ") == 2, err
    assert err.strip().splitlines()[-1] == "imagekit: interrupted"


# A command whose child fails on its own; while imagekit stops what the child left
# (a second child that takes 2 s to clean up), a first Ctrl-C arrives.
ERROR_SCRIPT = """
import os, signal, sys, subprocess
from pathlib import Path
from imagekit import cli, processes
from imagekit.errors import ImagekitError

LINGER = (
    'trap "sleep 2; echo done > $WORK/cleaned; exit 1" TERM; '
    'echo ready; while :; do sleep 0.1; done'
)

def command(args):
    work = Path(sys.argv[1])
    env = {"PATH": os.environ["PATH"], "WORK": str(work)}
    helper = processes.spawn(["sh", "-c", LINGER], stdout=subprocess.PIPE, env=env)
    print(helper.stdout.readline().decode(), end="", flush=True)
    try:
        raise ImagekitError("the build failed")
    finally:
        processes.stop_groups([helper.pid], grace=10)

cli._doctor = command
sys.exit(cli.main(["doctor"]))
"""


def test_a_first_signal_during_a_clean_up_after_an_error_waits_for_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", ERROR_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.5)  # the clean-up is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert (tmp_path / "cleaned").read_text() == "done\n", "the clean-up was not cut short"
    assert "imagekit: stopping once the clean-up under way is done" in err
    assert "imagekit: error: the build failed" in err and proc.returncode == 1, err


def test_internal_error_is_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> int:
        raise KeyError("imagekit_build_id")

    monkeypatch.setattr(cli, "_doctor", broken)
    assert cli.main(["doctor"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "imagekit: internal error: KeyError: 'imagekit_build_id' "
        "(re-run with --debug for the traceback)"
    )
    assert cli.main(["--debug", "doctor"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken" in err


def test_signals_that_keep_coming_until_the_end_never_kill_the_stop(tmp_path: Path) -> None:
    # A child that stops at once: its clean-up ends while signals are still arriving,
    # some of them while the interpreter shuts down, where Python's own handlers are gone.
    script = SCRIPT.replace("sleep 2; ", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
    while proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert (tmp_path / "cleaned").read_text() == "done\n"
