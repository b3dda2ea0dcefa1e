"""The shared base layer: the base built once, every role image built on it.

A DIB build of imagekit-base saves its root (before it becomes a disk) as a tar;
role builds unpack it (imagekit-layer) and add only their own packages and
elements. The layer is content-addressed: its key hashes every input of the base
(the base elements' files, DIB's version, the config that reaches the base) and
the distribution's package index as the build mirrors serve it now, so tonight's
security updates mean a new base. Layers live in cache_dir/layers as KEY.tar,
with KEY.json naming the base build that made them; a layer is written under a
lock and appears only when complete.
"""

import hashlib
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from pydantic import BaseModel

from imagekit.config import Config
from imagekit.errors import BusyError, UserError
from imagekit.locking import Lock
from imagekit.manifest import utc_now
from imagekit.roles import ELEMENTS_DIR, cloud_init_datasources
from imagekit.store import Build

# The base's builds live under OUTPUT_DIR/base, like a role's.
BASE = "base"
# The element whose files are the base (imagekit-finish runs on every image, after the layer).
BASE_ELEMENT = ELEMENTS_DIR / "imagekit-base"
# Layers kept in the cache: the current one and the ones before it, for builds that still run.
KEEP = 3
INDEX_TIMEOUT_S = 30


class LayerRecord(BaseModel):
    """KEY.json: what a layer was made from, and the base build that made it."""

    key: str
    base_build: str  # the base build's directory: its manifest lists the layer's packages
    created: str
    inputs: dict[str, str]


@dataclass(frozen=True)
class Layer:
    record: LayerRecord
    tar: Path

    @property
    def base(self) -> Build:
        """The base build whose root this is; its image is the base image (Packer's)."""
        return Build(BASE, Path(self.record.base_build))


def layers_dir(config: Config) -> Path:
    return config.cache_dir / "layers"


def inputs(config: Config) -> dict[str, str]:
    """Everything the base is made from, each as a short string (hashes for files)."""
    main, security = config.resolved_mirrors()
    files = hashlib.sha256()
    for path in sorted(BASE_ELEMENT.rglob("*")):
        if path.is_file():
            files.update(f"{path.relative_to(ELEMENTS_DIR)}\0".encode())
            files.update(path.read_bytes())
    return {
        "diskimage-builder": version("diskimage-builder"),
        "elements": files.hexdigest(),
        "distribution": config.distribution,
        "release": config.release,
        "architecture": config.architecture,
        "mirrors": f"{main} {security}",
        "admin_user": config.admin_user,
        "authorized_keys": "\n".join(key.line for key in config.public_keys),
        "packages": " ".join(config.packages),
        "datasources": ", ".join(cloud_init_datasources()),
        **package_index(config.release, main, security),
    }


def package_index(release: str, main: str, security: str) -> dict[str, str]:
    """The sha256 of each suite's InRelease as the build mirrors serve it now."""
    suites = {
        f"index {release}": f"{main}/dists/{release}/InRelease",
        f"index {release}-updates": f"{main}/dists/{release}-updates/InRelease",
        f"index {release}-security": f"{security}/dists/{release}-security/InRelease",
    }
    found = {}
    for name, url in suites.items():
        try:
            with urllib.request.urlopen(url, timeout=INDEX_TIMEOUT_S) as response:
                found[name] = hashlib.sha256(response.read()).hexdigest()
        except OSError as err:
            raise UserError(f"cannot read the package index {url}: {err}") from None
    return found


def key_of(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def ensure(config: Config, build_base: Callable[[Path], Path]) -> Layer:
    """The layer for today's inputs, built with build_base(tar path) if there is none.

    build_base runs a base build that saves its layer to the given path and returns
    its build directory. Two builds at once wait for one another here; a layer
    that an interrupted build left half written is removed.
    """
    values = inputs(config)
    key = key_of(values)
    folder = layers_dir(config)
    with Lock(folder / ".lock", f"a build of the base layer in {folder}", wait=True):
        found = _read(folder, key)
        if found is not None:
            return found
        for stale in folder.glob("*.part"):
            stale.unlink()
        part = folder / f"{key}.tar.part"
        try:
            base_dir = build_base(part)
            if not part.is_file():
                raise UserError(f"the base build {base_dir} saved no layer at {part}")
            part.rename(folder / f"{key}.tar")
        finally:
            part.unlink(missing_ok=True)
        record = LayerRecord(key=key, base_build=str(base_dir), created=utc_now(), inputs=values)
        (folder / f"{key}.json").write_text(record.model_dump_json(indent=2) + "\n")
        _prune(folder)
        return Layer(record, folder / f"{key}.tar")


def remove_partial(config: Config) -> list[str]:
    """Layers that a killed base build left half written (none while a build runs)."""
    folder = layers_dir(config)
    if not folder.is_dir():
        return []
    try:
        with Lock(folder / ".lock", f"a build of the base layer in {folder}"):
            parts = sorted(folder.glob("*.part"))
            for part in parts:
                part.unlink()
    except BusyError:
        return []  # a build is making one now
    return [f"removed the half-written layer {part}" for part in parts]


def _read(folder: Path, key: str) -> Layer | None:
    """The complete layer KEY with its base build still there, or None."""
    tar, record_file = folder / f"{key}.tar", folder / f"{key}.json"
    if not (tar.is_file() and record_file.is_file()):
        return None
    layer = Layer(LayerRecord.model_validate_json(record_file.read_text()), tar)
    return layer if layer.base.image.is_file() else None


def _prune(folder: Path) -> None:
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[KEEP:]:
        old.with_suffix(".tar").unlink(missing_ok=True)
        old.unlink()
