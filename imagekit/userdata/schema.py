"""cloud-init's own JSON schema, from the distribution's cloud-init package.

The images run Debian's cloud-init; its package ships the schema that its
`cloud-init schema` command validates with. We take it from that package
(apt-get download, no installation on the host) and validate with jsonschema.
"""

import functools
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from imagekit.errors import ImagekitError, UserError

SCHEMA_IN_PACKAGE = (
    "usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"
)


def _download(cache: Path) -> Path:
    version = subprocess.run(
        ["apt-cache", "policy", "cloud-init"], capture_output=True, text=True, check=False
    ).stdout
    candidate = next(
        (line.split()[-1] for line in version.splitlines() if "Candidate:" in line), "unknown"
    )
    target = cache / candidate / "schema-cloud-config-v1.json"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", "cloud-init"]
        result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0 and os.geteuid() == 0:
            # A fresh host has no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImagekitError(
                "cannot fetch the cloud-init package for its schema "
                f"(apt-get download cloud-init: {result.stderr.strip()[-200:]})"
            )
        deb = next(Path(tmp).glob("cloud-init_*.deb"))
        data = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        tar_path = Path(tmp) / "data.tar"
        tar_path.write_bytes(data)
        with tarfile.open(tar_path) as tar:
            member = tar.extractfile("./" + SCHEMA_IN_PACKAGE)
            if member is None:
                raise ImagekitError(f"{deb.name} holds no {SCHEMA_IN_PACKAGE}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(member.read())
    return target


@functools.cache
def cloud_config_schema(cache_dir: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_download(cache_dir / "cloud-init-schema").read_text())
    return schema


def top_level_keys(schema: dict[str, Any]) -> set[str]:
    """Every key some module of cloud-init reads, from the schema itself."""
    keys: set[str] = set()
    for part in schema.get("allOf", []):
        ref = part.get("$ref", "").removeprefix("#/$defs/")
        keys.update(schema.get("$defs", {}).get(ref, {}).get("properties", {}))
    return keys


def validate_cloud_config(text: str, cache_dir: Path) -> None:
    """Raise UserError on anything cloud-init would reject or ignore."""
    if not text.startswith("#cloud-config\n"):
        raise UserError("user data must start with '#cloud-config'")
    data = yaml.safe_load(text)
    schema = cloud_config_schema(cache_dir)
    # cloud-init 22.4's schema allows unknown top-level keys; a misspelt key would be ignored.
    unknown = sorted(set(data) - top_level_keys(schema))
    if unknown:
        raise UserError(f"user data: key(s) no cloud-init module reads: {', '.join(unknown)}")
    # Here, not at the top: importing jsonschema costs every imagekit command ~2 s
    # (its optional format checkers build a grammar at import).
    import jsonschema

    errors = sorted(
        jsonschema.Draft4Validator(schema).iter_errors(data), key=lambda e: list(e.path)
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "(top level)"
        raise UserError(f"user data invalid for cloud-init: {where}: {first.message[:200]}")
