#!/usr/bin/env python3
"""Benchmark: what the supply-chain evidence costs, in one run.

- SBOM generation: `sbom.document()` of every role's newest build (packages as recorded),
  --rounds times each; prints the median per image.
- A signed publish vs an unsigned one of the same web build to the dev cloud's Glance
  (alternating, --rounds pairs; Barbican holds the certificate, Glance verifies the
  signature as the data arrives): prints both medians and the ratio.

Needs a tested web build (and builds of the other roles for the SBOM figures). Run from
the checkout as root: bench/signing.py
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from imagekit import sbom
from imagekit.clouds import glance
from imagekit.config import PublishSettings, SigningSettings, load_config
from imagekit.devcloud import DevCloud
from imagekit.publishing.publish import publish
from imagekit.roles import CHECKOUT, ROLES
from imagekit.store import Store

sys.path.insert(0, str(CHECKOUT))  # the tests' throwaway signing key and certificate
from figures import record

from tests.signingkeys import make_signing_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config()
    store = Store(config.output_dir)

    print(f"{'SBOM of':10} {'packages':>8} {'median s':>9}")
    for role in ROLES:
        build = store.newest(role)
        if build is None:
            continue
        manifest = build.manifest()
        times = []
        for _ in range(args.rounds):
            started = time.monotonic()
            sbom.document(manifest)
            times.append(time.monotonic() - started)
        print(f"{role + ' ' + build.id[:8]:10} {len(manifest.packages):8} "
              f"{statistics.median(times):9.3f}")  # fmt: skip

    tested = store.newest_or_fail("web", tested=True)
    cloud = DevCloud()
    cloud.up()
    os.environ.update(cloud.env("devcloud"))
    plain: list[float] = []
    signed: list[float] = []
    conn = cloud.connect("devcloud")
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = make_signing_pair(Path(tmp))
        signing = SigningSettings.model_validate({"key": str(key), "certificate": str(cert)})
        try:
            for n in range(args.rounds):
                for kind, times, extra in (
                    ("plain", plain, {}),
                    ("signed", signed, {"signing": signing}),
                ):
                    settings = PublishSettings(
                        name_format=f"bench-{kind}{n}-{{role}}-{{build_id}}", **extra
                    )
                    started = time.monotonic()
                    publish(config.model_copy(update={"publish": settings}), "web", "devcloud",
                            build_id=tested.id)  # fmt: skip
                    times.append(time.monotonic() - started)
        finally:
            for image in list(glance(conn).images()):
                if image.name.startswith("bench-"):
                    glance(conn).delete_image(image)
            conn.close()
            cloud.down()  # as every bench that starts the dev cloud
    mib = tested.manifest().image.size_bytes >> 20  # type: ignore[union-attr]
    p, s = statistics.median(plain), statistics.median(signed)
    print(f"\npublish of web ({mib} MiB), median of {args.rounds}:")
    print(f"  unsigned {p:6.2f} s")
    print(f"  signed   {s:6.2f} s   (signed / unsigned {s / p:.2f}, +{s - p:.2f} s)")
    record("signing", {"unsigned_s": plain, "signed_s": signed, "signed_over_unsigned": s / p})


if __name__ == "__main__":
    main()
