"""Look inside a built qcow2 without booting it: a read-only loop mount."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def mounted_root(image: Path, work: Path) -> Iterator[Path]:
    raw = work / "image.raw"
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", "--read-only", str(raw)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    mounted = False
    try:
        for _ in range(50):
            partitions = sorted(Path("/dev").glob(f"{Path(loop).name}p*"))
            if partitions:
                break
            time.sleep(0.1)
        for partition in partitions:
            cmd = ["mount", "-o", "ro,noload", str(partition), str(mnt)]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                continue
            if (mnt / "etc" / "os-release").exists():
                mounted = True
                break
            subprocess.run(["umount", str(mnt)], check=True)
        assert mounted, f"no root file system found in {image}"
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)
        subprocess.run(["losetup", "-d", loop], check=True)
        raw.unlink()
