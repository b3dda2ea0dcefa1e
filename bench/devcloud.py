#!/usr/bin/env python3
"""Benchmark: the compute dev cloud's start times and memory.

Prints: `up --compute` (cold the first time: installs and database syncs), `down`, a warm
`up --compute` (installs kept, databases restored from their snapshot), and the resident
memory of all its processes. Uses a state dir of its own (removed with --clean).
Run as root from the checkout: bench/devcloud.py [--clean]
"""

import shutil
import sys
import time
from collections.abc import Callable

from figures import record

from imagekit.devcloud import DevCloud
from imagekit.roles import CHECKOUT
from tests.functional.conftest import cloud_rss_mib

STATE = CHECKOUT / "build" / "devcloud-bench"


def main() -> None:
    cloud = DevCloud(STATE)
    timings = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("up --compute", lambda: cloud.up(compute=True)),
        ("down", cloud.down),
        ("warm up --compute", lambda: cloud.up(compute=True)),
    ]
    for step, action in steps:
        started = time.monotonic()
        action()
        timings[step] = time.monotonic() - started
    rss = cloud_rss_mib(cloud)
    cloud.down()
    for step, seconds in timings.items():
        print(f"{step:20} {seconds:6.1f} s")
    print(f"{'resident memory':20} {rss:6d} MiB (every process of the cloud, after warm up)")
    record("devcloud", {"seconds": timings, "rss_mib": rss})
    if "--clean" in sys.argv:
        shutil.rmtree(STATE)


if __name__ == "__main__":
    main()
