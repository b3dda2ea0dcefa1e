"""The builder host: what builds need on it, and installing what is missing."""

import contextlib
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imagekit.errors import ImagekitError

# Stand-ins for kpartx/dmsetup (and a sudo that reaches them) on hosts
# without device-mapper.
SHIM_DIR = Path(__file__).resolve().parent / "hostshims"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Requirement:
    command: str
    package: str
    why: str


BUILD_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("debootstrap", "debootstrap", "bootstraps the Debian root file system"),
    Requirement("qemu-img", "qemu-utils", "writes the qcow2 image"),
    Requirement("sgdisk", "gdisk", "partitions the disk"),
    Requirement("kpartx", "kpartx", "maps partitions (device-mapper hosts)"),
    Requirement("partx", "util-linux", "maps partitions (hosts without device-mapper)"),
    Requirement("losetup", "mount", "attaches the disk image"),
    Requirement("mkfs.ext4", "e2fsprogs", "makes the root file system"),
    Requirement("mkfs.vfat", "dosfstools", "makes EFI file systems"),
    Requirement("mksquashfs", "squashfs-tools", "used by diskimage-builder"),
    Requirement("sudo", "sudo", "diskimage-builder runs its steps through sudo"),
    Requirement("git", "git", "records the checkout's commit in manifests"),
)


TEST_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("qemu-system-x86_64", "qemu-system-x86", "boots throwaway instances"),
    Requirement("qemu-img", "qemu-utils", "makes the instance's overlay disk"),
    Requirement("ssh-keygen", "openssh-client", "checks keys in the test suite"),
)

SITE_REQUIREMENTS: tuple[Requirement, ...] = (
    *TEST_REQUIREMENTS,
    Requirement("ip", "iproute2", "makes the site's network namespace, bridges and taps"),
    Requirement("ssh", "openssh-client", "reaches the site's instances through the lb"),
)


def which(command: str) -> str | None:
    path = os.environ.get("PATH", "") + ":" + SYSTEM_PATH
    return shutil.which(command, path=path)


def missing(requirements: tuple[Requirement, ...] = BUILD_REQUIREMENTS) -> list[Requirement]:
    return [req for req in requirements if which(req.command) is None]


def has_device_mapper(proc_misc: Path = Path("/proc/misc")) -> bool:
    """True when the kernel offers device-mapper (kpartx/dmsetup work)."""
    try:
        return "device-mapper" in proc_misc.read_text().split()
    except OSError:
        return False


def kvm_usable(
    cpuinfo: Path = Path("/proc/cpuinfo"), sys_module: Path = Path("/sys/module")
) -> bool:
    """KVM only where it really works: an openable /dev/kvm is not proof.

    Nested "kvm_pvm" hosts expose /dev/kvm without vmx/svm, and a stock
    kernel stalls there at boot.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    if (sys_module / "kvm_pvm").exists():
        return False
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"vmx", "svm"})


def vm_cpus() -> int:
    """vCPUs for a VM that boots alone (a role's test, a Packer build): two where the host
    has them. Under TCG each vCPU is a host thread, and a guest's boot runs units side by
    side: measured here (bench/boot_profile.py), two took the web image from 70 s to SSH
    and 89 s to cloud-init done down to 53 s and 63 s. Only for a VM that has the host to
    itself: a two-vCPU TCG guest competing with a build was seen livelocked, both vCPUs in
    soft lockup for minutes (the pipeline's tests and the site's VMs get one each)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def free_ports(count: int) -> list[int]:
    """count different free TCP ports on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:  # all bound at once, so all different
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


# Free space a pipeline needs, by config directory (GiB): images, then DIB's caches and work.
DISK_NEEDS_GIB = {"output_dir": 2, "cache_dir": 4}


def free_gib(directory: Path) -> float:
    """Free space where directory is, or will be (its nearest existing parent)."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return shutil.disk_usage(directory).free / 2**30


def install_packages(packages: list[str]) -> None:
    """apt-get install, as root; the error names what failed."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise ImagekitError(
            "missing host packages; as root run: apt-get install " + " ".join(packages)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
            raise ImagekitError(f"'{' '.join(command)}' failed: {last[0]}")


def ensure_requirements(
    requirements: tuple[Requirement, ...] = BUILD_REQUIREMENTS, install: bool = True
) -> list[str]:
    """Install what is missing of requirements; returns the packages it installed."""
    packages = sorted({req.package for req in missing(requirements)})
    if packages and not install:
        raise ImagekitError(
            "missing host packages: " + " ".join(packages) + " (run: imagekit doctor --fix)"
        )
    install_packages(packages)
    return packages
