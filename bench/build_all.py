#!/usr/bin/env python3
"""Benchmark: `imagekit build all` vs `imagekit build web`, each from an empty cache, in one run.

The four roles share one base layer, so building all of them should cost far
less than four times one. Prints each build's seconds (the base layer's
included) and each role's qcow2 size. Run as root from the checkout:
bench/build_all.py
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import record

from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.roles import ROLES
from imagekit.store import Store

MIB = 1024 * 1024


def build(work: Path, roles: list[str]) -> tuple[float, dict[str, float], dict[str, float]]:
    """`imagekit build ROLES` with an empty cache; (seconds, seconds per build, MiB per role)."""
    shipped = load_config()
    keys = "\n".join(f"  - '{k.line}'" for k in shipped.public_keys)
    config_path = work / "imagekit.yaml"
    config_path.write_text(
        f"ssh_keys:\n{keys}\npackages: {shipped.packages}\n"
        f"output_dir: {work / 'images'}\ncache_dir: {work / 'cache'}\n"
    )
    cmd = [sys.executable, "-m", "imagekit", "--config", str(config_path), "build", *roles]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    store = Store(load_config(config_path).output_dir)
    durations, sizes = {}, {}
    for role in [dib.BASE, *roles]:
        found = store.newest(role)
        assert found is not None, f"no {role} build"
        durations[role] = found.manifest().duration_s or 0.0
        if role != dib.BASE:
            sizes[role] = found.image.stat().st_size / MIB
    return seconds, durations, sizes


def main() -> None:
    one_work = Path(tempfile.mkdtemp(prefix="imagekit-bench-", dir="/var/tmp"))
    all_work = Path(tempfile.mkdtemp(prefix="imagekit-bench-", dir="/var/tmp"))
    try:
        one_s, one_parts, _ = build(one_work, ["web"])
        all_s, all_parts, sizes = build(all_work, list(ROLES))
    finally:
        shutil.rmtree(one_work, ignore_errors=True)
        shutil.rmtree(all_work, ignore_errors=True)

    print(f"\n{'build (empty cache)':28} {'seconds':>8}   of which (s)")
    for name, seconds, parts in (("build web", one_s, one_parts), ("build all", all_s, all_parts)):
        detail = ", ".join(f"{role} {s:.0f}" for role, s in parts.items())
        print(f"{name:28} {seconds:8.1f}   {detail}")
    print(f"\n{'role':8} {'qcow2 MiB':>10}")
    for role, mib in sizes.items():
        print(f"{role:8} {mib:10.1f}")
    print(f"\nbuild all 4 roles / build 1 role: {all_s / one_s:.2f}x")
    record(
        "build_all",
        {
            "build_one_s": one_s,
            "build_all_s": all_s,
            "all_over_one": all_s / one_s,
            "seconds_per_build": {"one": one_parts, "all": all_parts},
            "qcow2_mib": sizes,
        },
    )


if __name__ == "__main__":
    main()
