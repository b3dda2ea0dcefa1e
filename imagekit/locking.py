"""A lock file so that two imagekit processes never share one output."""

import fcntl
import os
from pathlib import Path
from types import TracebackType

from imagekit import progress
from imagekit.errors import BusyError


class Lock:
    """flock-based: the kernel drops it when the holder dies, so it is never stale."""

    def __init__(self, path: Path, what: str, wait: bool = False) -> None:
        self.path = path
        self.what = what
        self.wait = wait  # block until it is free (saying so) instead of BusyError
        self._fd: int | None = None

    def __enter__(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            if not self.wait:
                os.close(fd)
                raise BusyError(
                    f"{self.what} is already running (pid {holder}, lock {self.path})"
                ) from None
            progress.say(f"imagekit: waiting for {self.what} (pid {holder}, lock {self.path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
