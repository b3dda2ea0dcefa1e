"""A NoCloud seed: an ISO 9660 volume labelled "cidata", made in Python."""

import io
from pathlib import Path

import pycdlib


def write_nocloud_seed(path: Path, user_data: str, meta_data: str) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in (("user-data", user_data), ("meta-data", meta_data)):
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
