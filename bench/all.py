#!/usr/bin/env python3
"""Run the benchmarks in one go and keep their figures as JSON.

Each benchmark script runs in turn (its table printed as it goes); their figures,
with this host's cores, accelerator and the checkout's commit, go to one JSON file
(--output, default bench-results/RUN.json) for comparing runs later. Ratios within
one run mean something on a shared host; absolute seconds do not. Run as root from
the checkout: bench/all.py [--only NAME ...] [--skip NAME ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from figures import ENV

from imagekit.host import kvm_usable
from imagekit.roles import CHECKOUT

BENCH = Path(__file__).resolve().parent
# Cheapest first; each line is a script and its arguments.
SET = {
    "build_web": ["build_web.py", "--baseline"],
    "build_all": ["build_all.py"],
    "boot_baseline": ["boot_baseline.py"],
    "test_roles": ["test_roles.py"],
    "site": ["site.py"],
    "publish_web": ["publish_web.py"],
    "signing": ["signing.py"],
    "packer_web": ["packer_web.py"],
    "pipeline": ["pipeline.py"],
    "devcloud": ["devcloud.py"],
    "boot_nova": ["boot_nova.py"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SET, default=list(SET), metavar="NAME")
    parser.add_argument("--skip", nargs="+", choices=SET, default=[], metavar="NAME")
    parser.add_argument("--output", type=Path, help="the JSON file (default: bench-results/)")
    args = parser.parse_args()
    started = datetime.now(UTC)
    output = args.output or CHECKOUT / "bench-results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(CHECKOUT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    header: dict[str, object] = {
        "started": started.isoformat(),
        "commit": commit,
        "cores": os.cpu_count(),
        "accelerator": "kvm" if kvm_usable() else "tcg",
        "benchmarks": {},
        "seconds": {},
        "failed": [],
    }
    output.write_text(json.dumps(header, indent=2) + "\n")
    for name in (n for n in args.only if n not in args.skip):
        print(f"\n=== {name}", flush=True)
        begun = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(BENCH / SET[name][0]), *SET[name][1:]],
            cwd=CHECKOUT,
            env={**os.environ, ENV: str(output)},
        )
        data = json.loads(output.read_text())
        data["seconds"][name] = round(time.monotonic() - begun, 1)
        if done.returncode != 0:
            data["failed"].append(name)
        output.write_text(json.dumps(data, indent=2) + "\n")
    data = json.loads(output.read_text())
    print(
        f"\nfigures: {output}"
        + (f"; failed: {', '.join(data['failed'])}" if data["failed"] else "")
    )
    sys.exit(1 if data["failed"] else 0)


if __name__ == "__main__":
    main()
