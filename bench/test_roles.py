#!/usr/bin/env python3
"""Benchmark: boot each role's latest build in a throwaway qemu VM and run its suite.

Prints per role: boot-to-SSH, cloud-init done, suite and total seconds, and the
accelerator used. Builds a role first if it has no build yet. Run as root from
the checkout: bench/test_roles.py [ROLE...]
"""

import sys

from figures import record

from imagekit import verify
from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.instances import factories
from imagekit.roles import resolve_roles
from imagekit.store import Store


def main() -> None:
    config = load_config()
    rows = []
    for role in resolve_roles(sys.argv[1:] or ["all"]):
        found = Store(config.output_dir).newest(role)
        build_dir = found.dir if found else dib.build(config, role)
        target = factories.Target(role, build_dir / f"{role}.qcow2", build_dir)

        result = verify.test_image(config, target, factories.qemu_instances(config, "bench"))
        rows.append((role, result))

    header = ("role", "accel", "to SSH s", "cloud-init s", "suite s", "total s")
    print("\n{:5} {:5} {:>9} {:>13} {:>8} {:>8}  result".format(*header))
    for role, r in rows:
        print(
            f"{role:5} {r.accelerator:5} {r.timings.get('boot_to_ssh_s', 0):9.1f} "
            f"{r.timings.get('cloud_init_done_s', 0):13.1f} {r.suite_s:8.1f} {r.total_s:8.1f}  "
            f"{'passed' if r.passed else 'FAILED'} {r.tests - r.failures - r.errors}/{r.tests}"
        )
    record("test_roles", {role: r.model_dump() for role, r in rows})


if __name__ == "__main__":
    main()
