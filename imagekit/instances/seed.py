"""A NoCloud seed: an ISO 9660 volume labelled "cidata", made in Python."""

import io
from pathlib import Path
from typing import Any

import pycdlib
import yaml


def write_nocloud_seed(
    path: Path, user_data: str, meta_data: str, network_config: dict[str, Any] | None = None
) -> None:
    """`network_config` (cloud-init's version 1 or 2) stands for what a cloud's
    config drive or DHCP would give; without it the instance uses DHCP."""
    files = [("user-data", user_data), ("meta-data", meta_data)]
    if network_config is not None:
        files.append(("network-config", yaml.safe_dump(network_config, sort_keys=False)))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in files:
        data = text.encode()
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            "/" + name.replace("-", "").upper() + ".;1",
            rr_name=name,
            joliet_path="/" + name,
        )
    iso.write(str(path))
    iso.close()
