"""A site's networks: one network namespace per run, with no way out of it.

Inside: a bridge for the private network and one for the public side, a tap
per instance NIC (qemu runs in the namespace), and the "outside world" as an
address on the public bridge. Nothing links the namespace to the host's
networks: no veth, no route out. Removing the namespace removes all of it.
"""

import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from imagekit.errors import ImagekitError

PREFIX = "imagekit-site-"
PRIVATE_BRIDGE = "br-private"
PUBLIC_BRIDGE = "br-public"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ImagekitError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def namespaces() -> list[str]:
    """The site namespaces on this host (kept sites, or leftovers of a dead run)."""
    return sorted(p.name for p in Path("/run/netns").glob(PREFIX + "*"))


class SiteNetwork:
    def __init__(self, name: str, public_network: IPv4Network, outside: IPv4Address) -> None:
        self.namespace = PREFIX + name
        self.public_network = public_network
        self.outside = outside
        self.taps: list[str] = []

    def create(self) -> None:
        _ip("netns", "add", self.namespace)
        self._in("link", "set", "lo", "up")
        for bridge in (PRIVATE_BRIDGE, PUBLIC_BRIDGE):
            self._in("link", "add", bridge, "type", "bridge")
            self._in("link", "set", bridge, "up")
        # The outside world; the private bridge has no address: only the lb routes into it.
        address = f"{self.outside}/{self.public_network.prefixlen}"
        self._in("addr", "add", address, "dev", PUBLIC_BRIDGE)

    def tap(self, public: bool) -> str:
        """A new tap on the public or the private bridge; returns its name."""
        name = f"tap{len(self.taps)}"
        self._in("tuntap", "add", "dev", name, "mode", "tap")
        self._in("link", "set", name, "master", PUBLIC_BRIDGE if public else PRIVATE_BRIDGE)
        self._in("link", "set", name, "up")
        self.taps.append(name)
        return name

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def _in(self, *args: str) -> None:
        _ip("-n", self.namespace, *args)


def remove(namespace: str) -> None:
    """Delete a site namespace (its bridges and taps go with it); safe to call twice."""
    if (Path("/run/netns") / namespace).exists():
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
