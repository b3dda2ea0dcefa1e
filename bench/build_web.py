#!/usr/bin/env python3
"""Benchmark: imagekit vs plain disk-image-create for the web image, in one run.

Prints build times, imagekit's overhead ratio over plain DIB with the same
elements, settings and base layer (cached, alternating runs), the cold build
(empty cache: debootstrap, the base layer, then web) vs a cached rebuild (on the
layer), and image sizes. Run as root from the checkout: bench/build_web.py
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from figures import record

from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.progress import Progress

MIB = 1024 * 1024


def imagekit_build(config_path: Path) -> tuple[float, int]:
    config = load_config(config_path)
    started = time.monotonic()
    build_dir = dib.build(config, "web", Progress("imagekit"))
    return time.monotonic() - started, (build_dir / "web.qcow2").stat().st_size


def plain_build(config_path: Path, out: Path, extra: list[str] | None = None) -> tuple[float, int]:
    """The same disk-image-create call imagekit makes, run directly."""
    config = load_config(config_path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out))
    env = dib.environment(config, tmp)
    if extra is None:  # imagekit's own call: on the base layer it built
        env["DIB_IMAGEKIT_LAYER"] = str(dib.base_layer(config).tar)
    cmd = extra or dib.command(config, "web", out)
    started = time.monotonic()
    with (out / "plain.log").open("w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=log, check=True)
    seconds = time.monotonic() - started
    shutil.rmtree(tmp, ignore_errors=True)
    image = out / (Path(cmd[cmd.index("-o") + 1]).name + ".qcow2")
    return seconds, image.stat().st_size


# DIB's plain image, without imagekit's elements: what the figures compare against.
BASELINE = ["debian-minimal", "vm", "cloud-init", "cloud-init-datasources"]
BASELINE_PACKAGES = "nginx,openssh-server,ifupdown,isc-dhcp-client"  # a DHCP address, SSH
# DIB's cloud-init-datasources element needs them said; imagekit's images have the same.
DATASOURCES = "NoCloud, ConfigDrive, OpenStack"


def baseline_build(config_path: Path, work: Path) -> tuple[float, int, Path]:
    """Build the baseline under work; (seconds, qcow2 bytes, qcow2 path)."""
    os.environ["DIB_CLOUD_INIT_DATASOURCES"] = DATASOURCES  # plain_build passes ours on
    cmd = ["disk-image-create", "-a", "amd64", "-t", "qcow2", "-o", str(work / "baseline")]
    seconds, size = plain_build(config_path, work, [*cmd, "-p", BASELINE_PACKAGES, *BASELINE])
    return seconds, size, work / "baseline.qcow2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="warm imagekit/plain pairs")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also build DIB's plain image (baseline_build: no imagekit elements)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagekit-bench-", dir="/var/tmp"))
    config_path = work / "imagekit.yaml"
    shipped = load_config()
    keys = "\n".join(f"  - '{k.line}'" for k in shipped.public_keys)
    config_path.write_text(
        f"ssh_keys:\n{keys}\npackages: {shipped.packages}\n"
        f"output_dir: {work / 'images'}\ncache_dir: {work / 'cache'}\n"
    )
    rows: list[tuple[str, float, int]] = []
    try:
        seconds, size = imagekit_build(config_path)
        rows.append(("imagekit, cold cache (base layer + web)", seconds, size))
        ik, plain = [], []
        for n in range(args.rounds):
            seconds, size = imagekit_build(config_path)
            ik.append(seconds)
            rows.append((f"imagekit, on the cached layer #{n + 1}", seconds, size))
            seconds, size = plain_build(config_path, work / f"plain{n}")
            plain.append(seconds)
            rows.append((f"plain disk-image-create, cached #{n + 1}", seconds, size))
        if args.baseline:
            seconds, size, _ = baseline_build(config_path, work)
            rows.append(("plain DIB: debian-minimal + nginx (baseline)", seconds, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'build':45} {'seconds':>8} {'qcow2 MiB':>10}")
    for name, seconds, size in rows:
        print(f"{name:45} {seconds:8.1f} {size / MIB:10.1f}")
    ratio = sum(ik) / sum(plain)
    print(
        f"\nimagekit / plain DIB (cached, {args.rounds} rounds): {ratio:.3f} "
        f"({(ratio - 1) * 100:+.1f}% overhead)"
    )
    print(f"cached rebuild / cold build: {(sum(ik) / len(ik)) / rows[0][1]:.2f}")
    record(
        "build_web",
        {
            "builds": [{"build": n, "seconds": s, "qcow2_mib": b / MIB} for n, s, b in rows],
            "imagekit_over_plain_dib": ratio,
            "cached_over_cold": (sum(ik) / len(ik)) / rows[0][1],
        },
    )


if __name__ == "__main__":
    main()
