"""Leave nothing behind: mounts and loop devices a build made under its tmp dir."""

import json
import subprocess
from pathlib import Path


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces etc. octal-escaped.
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))
    return points


def _loops() -> list[tuple[str, str]]:
    result = subprocess.run(["losetup", "--list", "--json"], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [
        (dev["name"], dev.get("back-file") or "")
        for dev in json.loads(result.stdout).get("loopdevices", [])
    ]


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + "/")


def leftovers(root: Path) -> tuple[list[str], list[str]]:
    """(mount points, loop devices) that belong to a build under root."""
    mounts = [p for p in _mountpoints() if _under(p, root)]
    loops = [dev for dev, back in _loops() if _under(back.removesuffix(" (deleted)"), root)]
    return mounts, loops


def sweep(root: Path) -> list[str]:
    """Unmount and detach whatever a build left under root; returns what it did."""
    root = root.resolve()
    mounts, loops = leftovers(root)
    done: list[str] = []
    busy = []
    # Deepest first, so that nested chroot mounts go before the file systems that hold them.
    for point in sorted(mounts, key=lambda p: p.count("/"), reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode == 0:
            done.append(f"unmounted {point}")
        else:
            busy.append(point)
    for dev in loops:
        name = Path(dev).name
        for node in Path("/dev/mapper").glob(f"{name}p*"):
            if node.is_symlink():  # made by our kpartx stand-in
                node.unlink(missing_ok=True)
            else:
                subprocess.run(["dmsetup", "remove", node.name], capture_output=True)
        subprocess.run(["partx", "-d", dev], capture_output=True)
        if subprocess.run(["losetup", "-d", dev], capture_output=True).returncode == 0:
            done.append(f"detached {dev}")
    for point in busy:
        if subprocess.run(["umount", "--lazy", point], capture_output=True).returncode == 0:
            done.append(f"unmounted {point} (lazy)")
    return done
