"""Throwaway instances as local qemu VMs (the default backend)."""

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imagekit import processes, runs
from imagekit.host import free_ports, kvm_usable
from imagekit.instances import SshAddress
from imagekit.instances.access import make_key_pair, wait_until_ready
from imagekit.instances.seed import write_nocloud_seed
from imagekit.manifest import image_info

CONSOLE_TAIL = 15
# A throwaway's disk is bigger than its image, as a flavor's is: the image must grow to it.
# Not by much: under TCG, growing ext4 (its new inode tables zeroed at first boot) is slow.
DISK_HEADROOM = 256 << 20


@dataclass(frozen=True)
class Nic:
    netdev: str  # qemu's -netdev, without its id
    mac: str | None = None


def default_nics(ssh_port: int) -> list[Nic]:
    return [
        Nic(f"user,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
        # The private network, isolated: restrict=on lets nothing out through it.
        Nic("user,net=10.12.0.0/16,restrict=on"),
    ]


class QemuInstance:
    """A qcow2 overlay of the image, a NoCloud seed, SSH forwarded on 127.0.0.1."""

    def __init__(
        self,
        image: Path,
        user: str,
        name: str,
        user_data: str = "#cloud-config\n",
        memory_mb: int = 1024,
        cpus: int = 1,
        boot_timeout: float = 600,
        console_log: Path | None = None,
        nics: list["Nic"] | None = None,
        netns: str | None = None,
        network_config: dict[str, Any] | None = None,
        stop_with_us: bool = False,
    ) -> None:
        """`nics` default to a public NIC with SSH forwarded on 127.0.0.1 and an
        isolated private one; `netns` runs qemu in that network namespace;
        `network_config` goes into the seed as the cloud's would."""
        self.image = image.resolve()
        self.user = user
        self.name = name
        self.user_data = user_data
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.nics = nics
        self.netns = netns
        self.network_config = network_config
        self.accelerator = "kvm" if kvm_usable() else "tcg"
        # In our run's directory when it dies with us: a kill -9 at any moment, even before
        # qemu starts, leaves its files (the run's SSH key among them) to the next run.
        run = runs.current() if stop_with_us else None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=run.directory if run else None))
        self.console_log = console_log or self.workdir / "console.log"
        self.timings: dict[str, float] = {}
        # Stopped by the kernel if we die, and recorded in our run (imagekit.runs) so
        # that the next command stops it and removes its files; not for --keep.
        self.stop_with_us = stop_with_us
        self._proc: subprocess.Popen[bytes] | None = None
        self._ssh_port = 0
        self.address: SshAddress | None = None

    def start(self) -> SshAddress:
        started = time.monotonic()
        key_file, public_key = make_key_pair(self.workdir, f"imagekit-test-{self.name}")
        (port,) = free_ports(1)
        self.launch(public_key, port)
        address = self.address = SshAddress("127.0.0.1", port, self.user, str(key_file))
        self.timings = wait_until_ready(
            address, started, self.boot_timeout, self.gone, self.console_tail
        )
        return address

    def launch(self, public_key: str, ssh_port: int = 0) -> None:
        """Boot without waiting: overlay, seed (with the run's key), qemu."""
        overlay = self.workdir / "overlay.qcow2"
        make_overlay(self.image, overlay)
        seed = self.workdir / "seed.iso"
        write_nocloud_seed(
            seed,
            _with_key(self.user_data, public_key),
            f"instance-id: {uuid.uuid4()}\nlocal-hostname: {self.name}\n",
            self.network_config,
        )
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._ssh_port = ssh_port
        self._spawn(self._command(overlay, seed, ssh_port))

    def power_on(self) -> None:
        """Start a guest that powered itself off again: same disk, same seed."""
        if self._proc is not None and self._proc.poll() is None:
            return
        overlay, seed = self.workdir / "overlay.qcow2", self.workdir / "seed.iso"
        self._spawn(self._command(overlay, seed, self._ssh_port))

    def _spawn(self, command: list[str]) -> None:
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        with (self.workdir / "qemu.err").open("wb") as errors:
            self._proc = processes.spawn(
                command,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                die_with_us=signal.SIGTERM if self.stop_with_us else None,
            )
        run = runs.current()
        if run is not None and self.stop_with_us:
            # The workdir path in its command line proves the process is ours.
            run.note_process(self._proc.pid, str(self.workdir), [self.workdir])

    def _command(self, overlay: Path, seed: Path, port: int) -> list[str]:
        accel = (
            ["-accel", "kvm", "-cpu", "host"] if self.accelerator == "kvm" else ["-accel", "tcg"]
        )
        nics: list[str] = []
        for n, nic in enumerate(self.nics or default_nics(port)):
            # Fixed PCI slots from 3 on: the NICs are ens3, ens4, ... (on a cloud they may
            # be named otherwise: nothing in the images depends on the names)
            mac = f",mac={nic.mac}" if nic.mac else ""
            nics += ["-netdev", f"{nic.netdev},id=nic{n}"]
            nics += ["-device", f"virtio-net-pci,netdev=nic{n},addr={3 + n:#x}{mac}"]
        return [
            "qemu-system-x86_64",
            # i440fx, as Nova boots guests, with fixed PCI slots for the NICs.
            "-machine", "pc",
            *accel,
            "-m", str(self.memory_mb),
            "-smp", str(self.cpus),
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{self.console_log}",
            *nics,
            "-drive", f"file={overlay},if=none,id=disk,format=qcow2",
            "-device", "virtio-blk-pci,drive=disk,addr=0x5",
            "-drive", f"file={seed},if=none,id=seed,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=seed,addr=0x6",
        ]  # fmt: skip

    def describe(self) -> str:
        """Where a kept instance is, and how to get rid of it."""
        pid = self._proc.pid if self._proc else "?"
        return f"qemu pid {pid}, files in {self.workdir}; stop: kill {pid}; rm -r {self.workdir}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def gone(self) -> str | None:
        if self._proc is None or self._proc.poll() is None:
            return None
        error = (self.workdir / "qemu.err").read_text(errors="replace").strip()
        return f"qemu exited with status {self._proc.returncode}: {error[-300:]}"

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.stop_groups([proc.pid])
        shutil.rmtree(self.workdir, ignore_errors=True)
        if proc is not None and (run := runs.current()) is not None:
            run.forget_process(proc.pid)


def _with_key(user_data: str, public_key: str) -> str:
    """Add the run's key to #cloud-config user data (the default user gets it)."""
    data = yaml.safe_load(user_data) or {}
    data.setdefault("ssh_authorized_keys", []).append(public_key)
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)


def make_overlay(image: Path, overlay: Path) -> None:
    """A throwaway disk on the image, DISK_HEADROOM bigger (the image stays untouched)."""
    size = image_info(image)["virtual-size"] + DISK_HEADROOM
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2"]
    subprocess.run([*cmd, str(overlay), str(size)], check=True)
