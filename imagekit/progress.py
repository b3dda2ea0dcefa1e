"""What the library tells the user while it works: a one-line progress display for
long steps (the full output goes to a log), and `say()` for a note or a warning.

How much shows is the CLI's choice (`-q`, default, `-v`): `set_verbosity()`.
"""

import contextlib
import shutil
import sys
import threading
import time
import weakref
from typing import TextIO

QUIET, NORMAL, VERBOSE = -1, 0, 1
_verbosity = NORMAL
# In logs (no terminal), a line at least this often during a long step, so that a CI
# log shows a build or a boot is alive.
HEARTBEAT_S = 30.0


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


_say_lock = threading.Lock()


def say(line: str, warning: bool = False) -> None:
    """A line on stderr for the user (warnings even under -q); threads take turns, and a
    terminal that went away (a hang-up) never breaks the work."""
    if _verbosity == QUIET and not warning:
        return
    with _say_lock, contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class Progress:
    """On a terminal, one line rewritten in place (as wide as the terminal); elsewhere, a
    line per stage (per step with -v) and a heartbeat while a stage lasts."""

    def __init__(
        self, label: str, stream: TextIO | None = None, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._stage = ""
        self._detail = ""
        self._lock = threading.Lock()
        self._last_line = self.started
        self._done = threading.Event()
        if not self.tty and _verbosity > QUIET:
            threading.Thread(
                target=_heartbeat, args=(weakref.ref(self), self._done, heartbeat_s), daemon=True
            ).start()

    def update(self, stage: str, detail: str = "") -> None:
        if _verbosity == QUIET:
            return
        with self._lock:
            if self.tty:
                width = shutil.get_terminal_size().columns - 1
                text = f"{self._prefix()} {stage} {detail}".rstrip()
                self._write(f"\r{text[:width]}\x1b[K")
            elif stage != self._stage:
                self._line(stage)
            elif _verbosity >= VERBOSE and detail and detail != self._detail:
                self._line(f"{stage} {detail}")
            self._stage, self._detail = stage, detail

    def close(self) -> None:
        """Stop the heartbeat without a last line (the step failed; its error says why)."""
        self._done.set()

    def finish(self, message: str) -> None:
        self._done.set()
        if _verbosity == QUIET:
            return
        with self._lock:
            self._write(("\r\x1b[K" if self.tty else "") + f"{self._prefix()} {message}\n")

    def beat(self, every: float) -> None:
        """A line if none was written for `every` seconds (called by the heartbeat)."""
        with self._lock:
            if time.monotonic() - self._last_line >= every:
                doing = f"{self._stage} {self._detail}".strip() or "starting"
                self._line(f"{doing} (still running)")

    def _line(self, text: str) -> None:
        self._write(f"{self._prefix()} {text}\n")
        self._last_line = time.monotonic()

    def _write(self, text: str) -> None:
        # After a hang-up the terminal is gone: progress must not break the clean-up.
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def _prefix(self) -> str:
        return f"[{self.label} {elapsed(time.monotonic() - self.started)}]"


def _heartbeat(progress: "weakref.ref[Progress]", done: threading.Event, every: float) -> None:
    # A weak reference: a Progress dropped without finish() (an error) ends its heartbeat.
    while not done.wait(min(every / 3, 5.0)):
        shown = progress()
        if shown is None:
            return
        shown.beat(every)
        del shown
