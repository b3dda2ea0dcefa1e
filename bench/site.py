#!/usr/bin/env python3
"""Benchmark: the whole site test beside the slowest single-role test, in one run.

Boots every role alone (`imagekit test`, one after another), then the example
site (all instances at once), and prints each one's boot, cloud-init and suite
times, and the ratio of the site's wall time to the sum of the single-role
tests and to the slowest of them. Needs a build of every role (builds the
missing ones). Run as root from the checkout: bench/site.py
"""

import time

from figures import record

from imagekit import verify
from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.instances import factories
from imagekit.roles import ROLES
from imagekit.site.model import DEFAULT_SITE, load_site
from imagekit.site.run import site_test
from imagekit.store import Store


def main() -> None:
    config = load_config()
    store = Store(config.output_dir)
    builds = {
        role: b.dir if (b := store.newest(role)) else dib.build(config, role) for role in ROLES
    }
    singles = {}
    for role, build_dir in builds.items():
        target = factories.Target(role, build_dir / f"{role}.qcow2", build_dir)
        singles[role] = verify.test_image(config, target, factories.qemu_instances(config, "bench"))

    started = time.monotonic()
    site = site_test(config, load_site(DEFAULT_SITE), DEFAULT_SITE, builds)
    site_s = time.monotonic() - started

    print(f"\n{'run':10} {'to SSH s':>9} {'cloud-init s':>13} {'suite s':>8} {'total s':>8}")
    for role, r in singles.items():
        print(
            f"{'test ' + role:10} {r.timings.get('boot_to_ssh_s', 0):9.1f} "
            f"{r.timings.get('cloud_init_done_s', 0):13.1f} {r.suite_s:8.1f} {r.total_s:8.1f}"
        )
    for member in site.members:
        t = member.timings
        print(
            f"{'site ' + member.instance.name:10} {t.get('boot_to_ssh_s', 0):9.1f} "
            f"{t.get('cloud_init_done_s', 0):13.1f} {'':>8} {'':>8}"
        )
    slowest = max(r.total_s for r in singles.values())
    total = sum(r.total_s for r in singles.values())
    print(
        f"\nsite: {'passed' if site.record.passed else 'FAILED'}, {len(site.members)} instances, "
        f"suite {site.record.suite_s:.1f}s, wall {site_s:.1f}s ({site.record.accelerator})\n"
        f"site / slowest single-role test ({slowest:.1f}s): {site_s / slowest:.2f}\n"
        f"site / sum of single-role tests ({total:.1f}s): {site_s / total:.2f}"
    )
    record(
        "site",
        {
            "passed": site.record.passed,
            "site_s": site_s,
            "singles_s": {role: r.total_s for role, r in singles.items()},
            "members": {m.instance.name: m.timings for m in site.members},
            "site_over_slowest_single": site_s / slowest,
            "site_over_sum_of_singles": site_s / total,
        },
    )


if __name__ == "__main__":
    main()
