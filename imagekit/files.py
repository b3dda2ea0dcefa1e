"""Writing files that hold secrets, without following links or touching what is not ours."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

from imagekit.errors import UserError


def write_private(path: Path, text: str) -> None:
    """Write text to path, mode 0600, replacing a regular file of that name.

    A symlink, a directory or a missing parent directory is refused: the file is
    written under a temp name in the same directory and renamed over path, so no
    link is followed and nothing but our own new file is ever chmod-ed.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a symlink; refusing to write through it")
    if mode is not None and not stat.S_ISREG(mode):
        raise UserError(f"{path}: is not a regular file")
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # replaces a name, never follows one
    except BaseException:
        os.unlink(tmp)
        raise


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree; nothing when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
