#!/usr/bin/env python3
"""Benchmark: `imagekit publish` vs `openstack image create --file`, same qcow2, same Glance.

Starts the dev cloud, uploads the latest web build both ways in one run
(alternating, --rounds pairs) and prints times, the ratio and upload rates.
imagekit's time includes its sha512 verification. Needs a tested web build
(imagekit build web && imagekit test web). Run from the checkout as root.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from figures import record

from imagekit.config import PublishSettings, load_config
from imagekit.devcloud import DevCloud
from imagekit.manifest import Manifest
from imagekit.publishing.publish import find_publishable, publish

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    openstack_cli = Path(sys.executable).parent / "openstack"
    if not openstack_cli.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "python-openstackclient"], check=True
        )

    config = load_config()
    build_dir = find_publishable(config, "web", None, force=False)
    manifest = Manifest.read(build_dir)
    assert manifest.image is not None
    image = build_dir / manifest.image.file
    cloud = DevCloud()
    cloud.up()
    os.environ.update(cloud.env("devcloud"))
    ours, theirs = [], []
    try:
        for n in range(args.rounds):
            settings = PublishSettings(name_format=f"bench{n}-{{role}}-{{build_id}}")
            started = time.monotonic()
            publish(config.model_copy(update={"publish": settings}), "web", "devcloud")
            ours.append(time.monotonic() - started)
            started = time.monotonic()
            subprocess.run(
                [
                    str(openstack_cli),
                    "image",
                    "create",
                    "--disk-format",
                    "qcow2",
                    "--container-format",
                    "bare",
                    "--file",
                    str(image),
                    f"plain{n}-web",
                ],
                check=True,
                capture_output=True,
            )
            theirs.append(time.monotonic() - started)
    finally:
        cloud.down()
    size = image.stat().st_size / MIB
    print(f"\nimage: {image} ({size:.0f} MiB)")
    print(f"{'round':6} {'imagekit publish s':>19} {'openstack image create s':>25}")
    for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        print(f"{n + 1:<6} {a:19.2f} {b:25.2f}")
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    print(f"\nimagekit / openstack CLI: {mean_ours / mean_theirs:.2f}x (target <= 1.2x)")
    print(f"upload rate: imagekit {size / mean_ours:.0f} MiB/s, CLI {size / mean_theirs:.0f} MiB/s")
    record(
        "publish_web",
        {
            "qcow2_mib": size,
            "imagekit_s": ours,
            "openstack_cli_s": theirs,
            "imagekit_over_cli": mean_ours / mean_theirs,
        },
    )


if __name__ == "__main__":
    main()
