"""Throwaway instances that boot an image so its suite can run over SSH.

Every backend has the same small interface (start, ssh address, stop) and is
used through `throwaway()`, which always stops it: on errors, Ctrl-C,
SIGTERM and SIGHUP (the CLI turns the first into KeyboardInterrupt and
ignores later ones, so a stop is never cut short) and timeouts.
"""

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SshAddress:
    host: str
    port: int
    user: str
    key_file: str
    # ssh's ProxyCommand (%h, %p): for addresses the builder cannot route to.
    proxy_command: str | None = None

    @property
    def command(self) -> str:
        """How a person logs in (printed by --keep)."""
        proxy = f"-o ProxyCommand={shlex.quote(self.proxy_command)} " if self.proxy_command else ""
        return (
            f"ssh -i {self.key_file} -p {self.port} -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null {proxy}{self.user}@{self.host}"
        )


class Instance(Protocol):
    """A booted image reachable over SSH."""

    accelerator: str

    def start(self) -> SshAddress:
        """Boot and wait until SSH answers and cloud-init is done."""
        ...

    def describe(self) -> str:
        """Where the instance is and how to remove it by hand (for --keep)."""
        ...

    def stop(self) -> None:
        """Destroy the instance and everything made for it; safe to call twice."""
        ...


@contextmanager
def throwaway(instance: Instance, keep: bool = False) -> Iterator[SshAddress]:
    try:
        yield instance.start()
    finally:
        if not keep:
            instance.stop()
