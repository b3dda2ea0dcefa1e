"""Errors the CLI turns into one line and an exit status."""


class ImagekitError(Exception):
    """A failure worth one line to the user; exit status 1."""

    exit_status = 1


class UserError(ImagekitError):
    """Bad input: unknown role, malformed config, missing key file; exit status 2."""

    exit_status = 2


class BusyError(ImagekitError):
    """Another imagekit process holds the lock we need; exit status 3."""

    exit_status = 3


class Interrupted(ImagekitError):
    """Ctrl-C or SIGTERM stopped the work (after cleaning up); exit status 130."""

    exit_status = 130


def one_line(error: Exception) -> str:
    """An exception's message on one line (HTTP errors span several)."""
    return " ".join(str(error).split())
