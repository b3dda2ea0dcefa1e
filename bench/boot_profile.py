#!/usr/bin/env python3
"""Benchmark: where a role image's boot time goes, in one throwaway qemu VM.

Boots a build (the newest of ROLE, or --image FILE) with the role's example user
data, as `imagekit test` does, and prints the seconds to SSH and to "cloud-init
done", then the slowest systemd units and cloud-init stages/modules inside the
guest. Run as root from the checkout: bench/boot_profile.py web [--image FILE]
"""

import argparse
import shlex
from pathlib import Path

from imagekit.config import load_config
from imagekit.instances import access, factories, throwaway
from imagekit.instances.qemu import QemuInstance
from imagekit.store import Store

PROBES = {
    "systemd-analyze": "systemd-analyze",
    "slowest units": "systemd-analyze blame --no-pager | head -15",
    "critical chain": "systemd-analyze critical-chain --no-pager | head -20",
    "critical chain to sshd": "systemd-analyze critical-chain ssh.service --no-pager | head -20",
    "critical chain to cloud-final": (
        "systemd-analyze critical-chain cloud-final.service --no-pager | head -20"
    ),
    # On one vCPU whatever else runs during the boot slows the chain: CPU time per unit.
    "cpu per unit (ms)": (
        "for u in $(systemctl list-units --all --no-legend --plain | awk '{print $1}'); do"
        ' n=$(systemctl show -P CPUUsageNSec -- $u); [ "$n" -gt 0 ] 2>/dev/null &&'
        ' echo "$((n / 1000000)) $u"; done | sort -rn | head -25'
    ),
    "cloud-init stages": "sudo cloud-init analyze show | grep -E '^Finished stage|Total Time'",
    "slowest cloud-init steps": "sudo cloud-init analyze blame | head -20",
    # cloud-init's four stages are four Python processes: their start-up is the boot.
    "python start-up": (
        "TIMEFORMAT=%R; time python3 -c pass; time python3 -c 'import cloudinit.cmd.main'"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role")
    parser.add_argument("--image", type=Path, help="a qcow2 to boot instead of the newest build")
    parser.add_argument("--cpus", type=int, default=1, help="the VM's vCPUs (default 1)")
    args = parser.parse_args()
    config = load_config()
    image = args.image or Store(config.output_dir).newest_or_fail(args.role).image
    instance = QemuInstance(
        image,
        config.admin_user,
        f"bench-boot-{args.role}",
        factories.instance_user_data(config, args.role),
        cpus=args.cpus,
        stop_with_us=True,
    )
    with throwaway(instance) as address:
        print(f"{image}: {instance.accelerator}, {instance.timings}")
        with access.connect(address) as client:
            for title, command in PROBES.items():
                output = access.run(client, f"bash -c {shlex.quote(command)} 2>&1", 300)[1]
                print(f"\n## {title}\n{output.rstrip()}", flush=True)


if __name__ == "__main__":
    main()
