#!/usr/bin/env python3
"""Benchmark: the web role with Packer, in one run.

1. imagekit build web --with packer vs a plain `packer build` of the same template and
   variables (imagekit's overhead: seed, key, manifest, sha256);
2. Packer vs diskimage-builder for the web role: build time and image size.
Needs a DIB base image (built on demand). Run as root from the checkout.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from figures import record

from imagekit.builders import dib, packer
from imagekit.config import load_config
from imagekit.instances.access import make_key_pair

MIB = 2**20


def timed(action: Callable[[], Path]) -> tuple[float, Path]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


def plain_packer(config_path: Path, work: Path) -> Path:
    config = load_config(config_path)
    (work / "seed").mkdir(parents=True)
    key, public = make_key_pair(work, packer.BUILD_KEY_COMMENT)
    (work / "seed" / "user-data").write_text(f"#cloud-config\nssh_authorized_keys:\n  - {public}\n")
    (work / "seed" / "meta-data").write_text(f"instance-id: {uuid.uuid4()}\n")
    var_file = work / "vars.json"
    var_file.write_text(
        json.dumps(packer.variables(config, "web", packer.base_image(config), work, key))
    )
    subprocess.run(
        ["packer", "build", "-only=qemu.role", f"-var-file={var_file}", str(packer.PACKER_DIR)],
        cwd=work,
        check=True,
        capture_output=True,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(work / "cache")},
    )
    # The template leaves compression to its caller (imagekit's configured one): plain qemu-img.
    image = work / "web.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-c",
            "-O",
            "qcow2",
            str(work / "output" / "web.qcow2"),
            str(image),
        ],
        check=True,
    )
    return image


def main() -> None:
    config = load_config()
    packer.base_image(config)  # not part of either measurement
    rows = []
    seconds, build_dir = timed(lambda: packer.build(config, "web"))
    rows.append(
        ("imagekit build web --with packer", seconds, (build_dir / "web.qcow2").stat().st_size)
    )
    work = Path(tempfile.mkdtemp(prefix="bench-packer-", dir="/var/tmp"))
    try:
        seconds, image = timed(lambda: plain_packer(config.source, work))
        rows.append(("plain packer build (same template)", seconds, image.stat().st_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds, build_dir = timed(lambda: dib.build(config, "web"))
    rows.append(
        ("imagekit build web (DIB, cached)", seconds, (build_dir / "web.qcow2").stat().st_size)
    )
    print(f"\n{'build':40} {'seconds':>8} {'qcow2 MiB':>10}")
    for name, secs, size in rows:
        print(f"{name:40} {secs:8.1f} {size / MIB:10.1f}")
    print(f"\nimagekit / plain packer: {rows[0][1] / rows[1][1]:.2f}x")
    print(f"packer / DIB for web: {rows[0][1] / rows[2][1]:.2f}x")
    record(
        "packer_web",
        {
            "builds": [{"build": n, "seconds": s, "qcow2_mib": b / MIB} for n, s, b in rows],
            "imagekit_over_plain_packer": rows[0][1] / rows[1][1],
            "packer_over_dib": rows[0][1] / rows[2][1],
        },
    )


if __name__ == "__main__":
    main()
