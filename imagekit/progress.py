"""A one-line progress display for long steps; the full output goes to a log."""

import sys
import time
from typing import TextIO


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class Progress:
    """On a terminal, one line rewritten in place; elsewhere, a line per stage."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._stage = ""

    def update(self, stage: str, detail: str = "") -> None:
        prefix = f"[{self.label} {elapsed(time.monotonic() - self.started)}]"
        if self.tty:
            text = f"{prefix} {stage} {detail}".rstrip()
            self.stream.write(f"\r{text[:110]}\x1b[K")
            self.stream.flush()
        elif stage != self._stage:
            self.stream.write(f"{prefix} {stage}\n")
            self.stream.flush()
        self._stage = stage

    def finish(self, message: str) -> None:
        prefix = f"[{self.label} {elapsed(time.monotonic() - self.started)}]"
        self.stream.write(("\r\x1b[K" if self.tty else "") + f"{prefix} {message}\n")
        self.stream.flush()
