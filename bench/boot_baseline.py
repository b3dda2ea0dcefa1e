#!/usr/bin/env python3
"""Benchmark: first boot of the web image vs DIB's plain image, alternating, in one run.

The baseline is what DIB makes without imagekit: debian-minimal, vm, cloud-init and
nginx, sshd (+ ifupdown and a DHCP client, so that it gets an address). Each round boots
the newest web build (with the role's example user data, as `imagekit test` does)
and the baseline, one after the other (each first in every other round, both read into
the host's cache first), in throwaway qemu VMs (1 vCPU), and times SSH and "cloud-init
done"; prints medians, web/baseline ratios and both sizes.
Run as root from the checkout: bench/boot_baseline.py [--rounds N]
"""

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from build_web import MIB, baseline_build
from figures import record

from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.instances import factories, throwaway
from imagekit.instances.qemu import QemuInstance
from imagekit.store import Store

BASELINE_USER = "debian"  # Debian's cloud-init default user
MEASURES = ("boot_to_ssh_s", "cloud_init_done_s")


def boot(image: Path, user: str, user_data: str, name: str) -> dict[str, float]:
    instance = QemuInstance(image, user, name, user_data, stop_with_us=True)
    with throwaway(instance):
        return instance.timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="web/baseline boot pairs")
    args = parser.parse_args()
    config = load_config()
    found = Store(config.output_dir).newest("web")
    web = (found.dir if found else dib.build(config, "web")) / "web.qcow2"

    work = Path(tempfile.mkdtemp(prefix="imagekit-bench-", dir="/var/tmp"))
    try:
        _, baseline_size, baseline = baseline_build(config.source, work)
        times: dict[str, list[dict[str, float]]] = {"web": [], "baseline": []}
        web_data = factories.instance_user_data(config, "web")
        boots = {
            "web": (web, config.admin_user, web_data),
            "baseline": (baseline, BASELINE_USER, "#cloud-config\n{}\n"),
        }
        # The first web boot of every run, right after the baseline's build, was its slowest
        # (51-60 s to SSH, against 39-50): both images start in the host's page cache.
        for path, _, _ in boots.values():
            with path.open("rb") as f:
                while f.read(1 << 20):
                    pass
        for n in range(args.rounds):
            # Each goes first in every other round, so that neither pays alone for what the
            # host did just before a round.
            for name in ("web", "baseline") if n % 2 == 0 else ("baseline", "web"):
                path, user, user_data = boots[name]
                times[name].append(boot(path, user, user_data, f"bench-{name}{n}"))
            print(
                f"round {n + 1}: web {times['web'][-1]}, baseline {times['baseline'][-1]}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {
        image: {m: statistics.median(t[m] for t in runs) for m in MEASURES}
        for image, runs in times.items()
    }
    ratios = {m: medians["web"][m] / medians["baseline"][m] for m in MEASURES}
    print(f"\n{'image':10} {'to SSH s':>9} {'cloud-init done s':>18} {'qcow2 MiB':>10}")
    sizes = {"web": web.stat().st_size / MIB, "baseline": baseline_size / MIB}
    for image, row in medians.items():
        print(
            f"{image:10} {row['boot_to_ssh_s']:9.1f} {row['cloud_init_done_s']:18.1f} "
            f"{sizes[image]:10.1f}"
        )
    print(
        f"\nweb / baseline, medians of {args.rounds}: to SSH {ratios['boot_to_ssh_s']:.2f}x, "
        f"to cloud-init done {ratios['cloud_init_done_s']:.2f}x"
    )
    record(
        "boot_baseline",
        {"boots": times, "medians": medians, "web_over_baseline": ratios, "qcow2_mib": sizes},
    )


if __name__ == "__main__":
    main()
