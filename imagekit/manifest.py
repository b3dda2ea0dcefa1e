"""The JSON manifest beside each built image, and finding builds on disk."""

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from imagekit.errors import UserError
from imagekit.roles import CHECKOUT

MANIFEST = "manifest.json"
# What new_build_id makes: a build id never holds a path character.
BUILD_ID = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
QCOW2_MAGIC = b"QFI\xfb"


class Source(BaseModel):
    commit: str | None
    dirty: bool


class ImageFile(BaseModel):
    file: str
    format: str
    size_bytes: int
    virtual_size_bytes: int
    sha256: str
    # The qcow2's cluster compression as qemu-img reports it (zlib, zstd; None before it).
    compression: str | None = None


class Package(BaseModel):
    name: str
    version: str
    arch: str
    # The source package it was built from, and the archive suite its version came
    # from (bookworm, bookworm-security, ...; "" when no index of the build had it).
    source: str = ""
    source_version: str = ""
    suite: str = ""

    @property
    def security(self) -> bool:
        return self.suite.endswith("-security")


class SuiteResult(BaseModel):
    """One `imagekit test` run of the build's image."""

    when: str
    passed: bool
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    suite_s: float = 0
    total_s: float = 0
    backend: str = ""
    accelerator: str = ""
    timings: dict[str, float] = {}
    report: str | None = None


class SiteTestRecord(SuiteResult):
    """One `imagekit site test` run that this build took part in."""

    site: str
    run_id: str
    instances: dict[str, str] = {}  # instance name -> ROLE/BUILD_ID
    error: str | None = None  # why the site did not come up, when it did not


class Publication(BaseModel):
    """The build's image in one cloud's Glance; each step recorded as soon as it is true."""

    cloud: str
    image_id: str
    name: str
    when: str  # uploaded (or found) and verified
    forced: bool = False
    shared: str | None = None  # when the members were added
    members: list[str] = []
    rotated: str | None = None  # when the role's older images were rotated

    @property
    def complete(self) -> bool:
        return self.shared is not None and self.rotated is not None


class BaseLayer(BaseModel):
    """The shared base layer a role image was built on (imagekit.builders.layer)."""

    key: str  # cache_dir/layers/KEY.json says what it was made from
    build_dir: str  # the base build that made it: its manifest, its image


# Raised when a change makes older manifests read differently (new fields have defaults).
SCHEMA_VERSION = 1


class Manifest(BaseModel):
    """The contract between stages: what a build was made from and what happened to it.

    Later stages (test, site test, publish) read their expectations from here, never
    from today's config.
    """

    schema_version: int = SCHEMA_VERSION
    role: str
    build_id: str
    status: Literal["building", "built", "failed"]
    created: str
    finished: str | None = None
    duration_s: float | None = None
    builder: str = "diskimage-builder"
    builder_version: str
    source: Source
    distribution: str
    release: str
    architecture: str
    elements: list[str]
    base_layer: BaseLayer | None = None  # None: built from debootstrap (the base itself)
    admin_user: str
    ssh_key_fingerprints: list[str]
    # The baked public keys and the packages asked for (shared + role): what the suites check.
    authorized_keys: list[str] = []
    requested_packages: list[str] = []
    datasources: list[str] = []  # cloud-init's, in order (empty in manifests before it)
    log: str = "build.log"
    run_id: str | None = None  # the imagekit run that built it (see imagekit.runs)
    error: str | None = None
    image: ImageFile | None = None
    sbom_sha256: str | None = None  # of sbom.cdx.json beside the image
    packages: list[Package] = []
    tests: list[SuiteResult] = []
    site_tests: list[SiteTestRecord] = []
    publications: list[Publication] = []

    @property
    def tested(self) -> bool:
        """The newest test run of this build passed."""
        return bool(self.tests) and self.tests[-1].passed

    @property
    def site_tested(self) -> bool:
        """The newest site test this build took part in passed."""
        return bool(self.site_tests) and self.site_tests[-1].passed

    def publication(self, cloud: str) -> Publication | None:
        """The newest publication of this build to that cloud."""
        return next((p for p in reversed(self.publications) if p.cloud == cloud), None)

    def write(self, build_dir: Path) -> None:
        """Replace the manifest at once (temp file + rename): readers never see half of it.

        Only a new build writes its first manifest this way; every later change goes
        through `update`, so that concurrent writers never drop each other's records.
        """
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=build_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.model_dump_json(indent=2) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, build_dir / MANIFEST)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def read(cls, build_dir: Path) -> "Manifest":
        """The build's manifest; a corrupt one is a one-line UserError naming the file."""
        path = build_dir / MANIFEST
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as err:
            raise UserError(f"{path}: cannot read manifest: {err.strerror}") from None
        except ValidationError as err:
            raise UserError(f"{path}: corrupt manifest ({err.errors()[0]['msg']})") from None

    @classmethod
    def update(cls, build_dir: Path, change: Callable[["Manifest"], None]) -> "Manifest":
        """Read-modify-write under a lock beside the manifest: concurrent updates all land."""
        with (build_dir / (MANIFEST + ".lock")).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            manifest = cls.read(build_dir)
            change(manifest)
            manifest.write(build_dir)
            return manifest


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_build_id(role_dir: Path) -> str:
    """A sortable UTC timestamp; a suffix if one second saw two builds."""
    base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    build_id, n = base, 1
    while (role_dir / build_id).exists():
        build_id, n = f"{base}-{n}", n + 1
    return build_id


def git_source(checkout: Path = CHECKOUT) -> Source:
    def git(*args: str) -> str | None:
        result = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return Source(commit=commit, dirty=bool(status))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def image_info(path: Path) -> dict[str, Any]:
    """What `qemu-img info` says of a disk image (format, virtual-size, backing file...)."""
    cmd = ["qemu-img", "info", "--output=json", str(path)]
    info: dict[str, Any] = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    )
    return info


def describe_image(path: Path) -> ImageFile:
    info = image_info(path)
    return ImageFile(
        file=path.name,
        format=info["format"],
        size_bytes=path.stat().st_size,
        virtual_size_bytes=info["virtual-size"],
        sha256=sha256_file(path),
        compression=info.get("format-specific", {}).get("data", {}).get("compression-type"),
    )


def read_package_list(path: Path) -> list[Package]:
    """What imagekit-base's `imagekit-package-list` wrote (tab-separated), DIB or Packer."""
    fields = ("name", "version", "arch", "source", "source_version", "suite")
    return [
        Package(**dict(zip(fields, line.split("\t"), strict=True)))
        for line in path.read_text().splitlines()
    ]


def check_build_id(build_id: str, option: str = "--build ") -> str:
    """A build id from the command line: never a path (`../lb/ID`, `/tmp/x`)."""
    if not BUILD_ID.fullmatch(build_id):
        raise UserError(f"{option}{build_id!r}: not a build id (like 20260101T020000Z)")
    return build_id


def check_qcow2(path: Path, option: str) -> Path:
    """An image given on the command line exists and is a qcow2 (its magic number)."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{option} {path}: is a directory, not a qcow2 image") from None
    except OSError as err:
        raise UserError(f"{option} {path}: cannot read: {err.strerror}") from None
    if magic != QCOW2_MAGIC:
        raise UserError(f"{option} {path}: not a qcow2 image")
    return path


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, generated from the model (for other tools)."""
    return Manifest.model_json_schema()
