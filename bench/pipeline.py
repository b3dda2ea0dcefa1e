#!/usr/bin/env python3
"""Benchmark: `imagekit pipeline` for all four roles vs the plain tools one after another.

In one run, against the local dev cloud: the pipeline's wall time and per-stage times (from its
JSON summary), then the same work with the plain tools in sequence: disk-image-create per role,
qemu + the testinfra suite per role (through imagekit's instance and suite code, the part with no
plain equivalent), `openstack image create` per role; and the pipeline's wall time over the sum
of its stages (how much of the work ran side by side). Run as root from the checkout.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import record

from imagekit import verify
from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.devcloud import DevCloud
from imagekit.instances import factories
from imagekit.roles import ROLES


def main() -> None:
    config = load_config()
    cloud = DevCloud()
    cloud.up()
    os.environ.update(cloud.env("devcloud"))
    try:
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "imagekit", "pipeline", "--cloud", "devcloud"], check=False
        )
        pipeline_s = time.monotonic() - started
        summary = json.loads(
            sorted((config.output_dir / "pipeline").glob("*.json"))[-1].read_text()
        )

        plain: dict[str, float] = {"build": 0, "test": 0, "publish": 0}
        openstack_cli = Path(sys.executable).parent / "openstack"
        if not openstack_cli.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "python-openstackclient"], check=True
            )
        # The plain builds too: the base once (saving its layer), each role on it.
        work = Path(tempfile.mkdtemp(dir="/var/tmp"))
        layer = {"DIB_IMAGEKIT_SAVE_LAYER": str(work / "layer.tar")}
        for role in (dib.BASE, *ROLES):
            out = Path(tempfile.mkdtemp(dir="/var/tmp"))
            started = time.monotonic()
            subprocess.run(
                dib.command(config, role, out),
                env={**dib.environment(config, out / "tmp"), **layer},
                check=True,
                capture_output=True,
            )
            plain["build"] += time.monotonic() - started
            layer = {"DIB_IMAGEKIT_LAYER": str(work / "layer.tar")}
            if role == dib.BASE:
                continue
            image = out / f"{role}.qcow2"
            started = time.monotonic()
            verify.test_image(
                config,
                factories.Target(role, image, None),
                factories.qemu_instances(config, "bench"),
            )
            plain["test"] += time.monotonic() - started
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
                    f"plain-{role}",
                ],
                check=True,
                capture_output=True,
            )
            plain["publish"] += time.monotonic() - started
    finally:
        cloud.down()

    print(f"\npipeline wall time, 4 roles: {pipeline_s:.0f}s")
    for role in summary["roles"]:
        stages = ", ".join(
            f"{s['name']} {s['seconds']:.0f}s ({s['result']})" for s in role["stages"]
        )
        print(f"  {role['role']:4} {stages}")
    # The site test is one stage that every role records: counted once.
    every = [s for r in summary["roles"] for s in r["stages"]]
    site_s = max((s["seconds"] or 0 for s in every if s["name"] == "site"), default=0)
    stages_s = site_s + sum(s["seconds"] or 0 for s in every if s["name"] != "site")
    print(f"wall time / sum of its stages: {pipeline_s / stages_s:.2f}")
    total = sum(plain.values())
    parts = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in plain.items())
    print(f"plain tools one after another: {total:.0f}s ({parts})")
    print(f"pipeline / plain: {pipeline_s / total:.2f}x")
    record(
        "pipeline",
        {
            "pipeline_s": pipeline_s,
            "stages": {r["role"]: r["stages"] for r in summary["roles"]},
            "plain_s": plain,
            "pipeline_over_plain": pipeline_s / total,
            "wall_over_stages": pipeline_s / stages_s,
        },
    )


if __name__ == "__main__":
    main()
