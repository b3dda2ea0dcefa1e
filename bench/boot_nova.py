#!/usr/bin/env python3
"""Benchmark: the web image as a Nova server on the compute dev cloud vs as a local qemu VM.

In one run, alternating (ROUNDS each, default 2): boot-to-SSH, cloud-init done,
the web suite and the total, as `imagekit test web` and `imagekit test web
--cloud devcloud` measure them. Starts the compute dev cloud (and stops it after)
unless it is up; publishes the newest web build (building one if there is none).
Run as root from the checkout: bench/boot_nova.py [ROUNDS]
"""

import os
import statistics
import sys

from figures import record

from imagekit import runs, verify
from imagekit.builders import dib
from imagekit.config import OpenStackSettings, load_config
from imagekit.devcloud import DevCloud
from imagekit.devcloud import compute as devcloud_compute
from imagekit.instances import factories
from imagekit.manifest import SuiteResult
from imagekit.publishing.publish import publish
from imagekit.store import Store


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    settings = OpenStackSettings(
        flavor="imagekit.small",
        network=devcloud_compute.NETWORK,
        floating_ip_network=devcloud_compute.PUBLIC_NETWORK,
        security_groups=[devcloud_compute.SECURITY_GROUP],
        private_network=devcloud_compute.PRIVATE_NETWORK,
        ssh_proxy_command=f"ip netns exec {devcloud_compute.PUBLIC_NS} nc %h %p",
    )
    config = load_config().model_copy(update={"openstack": settings})
    found = Store(config.output_dir).newest("web")
    build_dir = found.dir if found else dib.build(config, "web")
    cloud = DevCloud()
    started_here = not cloud.compute.is_up()
    if started_here:
        cloud.up(compute=True)
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cloud.clouds_yaml)
    runs.start(config.cache_dir)
    try:
        publish(config, "web", "devcloud", build_id=build_dir.name, force=True)
        target = factories.Target("web", build_dir / "web.qcow2", build_dir)
        backends = {
            "qemu": factories.qemu_instances(config, "bench"),
            "nova": factories.openstack_instances(config, "devcloud"),
        }
        results: dict[str, list[SuiteResult]] = {name: [] for name in backends}
        for _ in range(rounds):
            for name, backend in backends.items():
                results[name].append(verify.test_image(config, target, backend))
    finally:
        runs.end()
        if started_here:
            cloud.down()

    print(f"\nweb image {build_dir.name}, medians of {rounds} (alternating, one run)")
    print(
        "{:6} {:>9} {:>13} {:>8} {:>8}  results".format(
            "where", "to SSH s", "done s", "suite s", "total s"
        )
    )
    medians = {}
    for name, rows in results.items():
        ssh = statistics.median(r.timings.get("boot_to_ssh_s", 0) for r in rows)
        done = statistics.median(r.timings.get("cloud_init_done_s", 0) for r in rows)
        suite = statistics.median(r.suite_s for r in rows)
        total = statistics.median(r.total_s for r in rows)
        medians[name] = (ssh, done)
        passed = " ".join("passed" if r.passed else "FAILED" for r in rows)
        print(f"{name:6} {ssh:9.1f} {done:13.1f} {suite:8.1f} {total:8.1f}  {passed}")
    (nova_ssh, nova_done), (qemu_ssh, qemu_done) = medians["nova"], medians["qemu"]
    ratios = f"to SSH {nova_ssh / qemu_ssh:.2f}x, cloud-init done {nova_done / qemu_done:.2f}x"
    print(f"nova / qemu: {ratios}")
    record(
        "boot_nova",
        {
            "medians": {
                n: {"to_ssh_s": s, "cloud_init_done_s": d} for n, (s, d) in medians.items()
            },
            "nova_over_qemu_to_ssh": nova_ssh / qemu_ssh,
            "nova_over_qemu_cloud_init_done": nova_done / qemu_done,
        },
    )


if __name__ == "__main__":
    main()
