"""Look inside a built qcow2 without booting it: its partition table, and a read-only mount."""

import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SECTOR = 512


def mbr_partitions(head: bytes) -> list[tuple[int, int, int]]:
    """(type, first sector, sectors) of each used MBR entry; [] without a valid MBR."""
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        return []
    entries = []
    for n in range(4):
        entry = head[446 + 16 * n : 446 + 16 * (n + 1)]
        kind = entry[4]
        start, sectors = struct.unpack("<II", entry[8:16])
        if kind:
            entries.append((kind, start, sectors))
    return entries


def read_head(image: Path, work: Path) -> bytes:
    head = work / "head.raw"
    subprocess.run(
        ["qemu-img", "dd", "-O", "raw", "bs=1M", "count=1", f"if={image}", f"of={head}"],
        check=True,
    )
    data = head.read_bytes()
    head.unlink()
    return data


@contextmanager
def mounted_root(image: Path, work: Path) -> Iterator[Path]:
    """Mount the image's root partition read-only (through an auto-cleared loop device)."""
    raw = work / "image.raw"
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    try:
        partitions = [p for p in mbr_partitions(raw.read_bytes()[:SECTOR]) if p[0] == 0x83]
        assert partitions, f"no Linux partition in {image}"
        offset = partitions[0][1] * SECTOR
        subprocess.run(
            ["mount", "-o", f"ro,noload,loop,offset={offset}", str(raw), str(mnt)], check=True
        )
        try:
            assert (mnt / "etc" / "os-release").exists(), "not a root file system"
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        raw.unlink()


def apt_source_uris(root: Path) -> set[str]:
    """The URIs of every "deb" line of a mounted image's one-line apt sources."""
    files = [root / "etc/apt/sources.list", *(root / "etc/apt/sources.list.d").glob("*.list")]
    return {
        line.split()[1]
        for path in files
        if path.is_file()
        for line in path.read_text().splitlines()
        if line.startswith("deb ")
    }
