"""`imagekit publish`: a tested build to Glance, verified, shared, old images rotated."""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openstack.connection import Connection

from imagekit import runs
from imagekit.clouds import TOOL_TAG, cloud_errors, connect, glance
from imagekit.config import Config
from imagekit.errors import UserError
from imagekit.manifest import (
    Manifest,
    Publication,
    utc_now,
)
from imagekit.progress import Progress, say
from imagekit.publishing.attributes import image_attributes, image_name
from imagekit.publishing.rotation import RotationPlan, rotate
from imagekit.publishing.sharing import resolve_projects, share
from imagekit.publishing.signing import certificate_uuid, load_signer, signature_properties
from imagekit.publishing.upload import (
    HashingReader,
    create_and_upload,
    file_md5,
    verify,
    wait_active,
)
from imagekit.store import Store


@dataclass
class PublishResult:
    role: str
    build_id: str
    name: str
    image_id: str | None
    uploaded: bool
    members: dict[str, str] = field(default_factory=dict)
    rotation: RotationPlan = field(default_factory=RotationPlan)
    upload_s: float = 0
    size_bytes: int = 0


def find_publishable(config: Config, role: str, build_id: str | None, force: bool) -> Path:
    """The build to publish: the given one, or the newest that passed its tests."""
    store = Store(config.output_dir)
    if build_id is not None:
        build = store.get(role, build_id)
        if force or build.manifest().tested:
            return build.dir
        raise UserError(
            f"--build {build_id}: not a tested build of '{role}' "
            f"(run: imagekit test {role} --build {build_id}); --force publishes anyway"
        )
    return store.newest_or_fail(role, tested=not force).dir


def existing_image(conn: Connection, name: str, sha256: str) -> Any | None:
    """This project's active image of that name and content, if already uploaded."""
    for image in glance(conn).images(name=name, owner=conn.current_project_id, tag=TOOL_TAG):
        properties = image.properties or {}
        if image.status == "active" and properties.get("imagekit_sha256") == sha256:
            return image
    return None


def verify_existing(conn: Connection, image_id: str, path: Path, sha256: str) -> None:
    """An image an earlier run uploaded but did not record: check it as a new upload is."""
    reader = HashingReader(path)
    try:
        while reader.read():
            pass
    finally:
        reader.close()
    verify(wait_active(conn, image_id), reader.hashes(), sha256)


def record(build_dir: Path, publication: Publication) -> None:
    """Store a step as soon as it is true (this build's entry for that image, replaced)."""
    key = (publication.cloud, publication.image_id)

    def change(manifest: Manifest) -> None:
        kept = [p for p in manifest.publications if (p.cloud, p.image_id) != key]
        manifest.publications = [*kept, publication]

    Manifest.update(build_dir, change)


def publish(
    config: Config,
    role: str,
    cloud: str,
    build_id: str | None = None,
    shares: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> PublishResult:
    """Upload (or find) and verify, share, rotate: each step recorded in the build's
    manifest when done, and each safe to repeat, so a re-run finishes what an
    interrupted one left."""
    build_dir = find_publishable(config, role, build_id, force)
    manifest = Manifest.read(build_dir)
    assert manifest.image is not None
    forced = not manifest.tested
    if forced:
        say(
            f"imagekit: warning: publishing untested build {manifest.build_id} "
            f"of '{role}' (--force)",
            warning=True,
        )
    signing = config.publish.signing
    signer = load_signer(signing) if signing else None  # a bad key: nothing uploaded
    conn = connect(cloud, authenticate=True)
    identity = (
        connect(config.publish.identity_cloud, authenticate=True)
        if config.publish.identity_cloud
        else conn
    )
    # Every project is resolved before anything is uploaded.
    members = resolve_projects(identity, [*config.publish.members, *(shares or [])])
    name = image_name(config, manifest)
    result = PublishResult(role, manifest.build_id, name, None, False)
    result.size_bytes = manifest.image.size_bytes
    image_file = build_dir / manifest.image.file

    image = existing_image(conn, name, manifest.image.sha256)
    publication = None
    if image is not None:
        result.image_id = image.id
        publication = next(
            (p for p in manifest.publications if (p.cloud, p.image_id) == (cloud, image.id)),
            None,
        )
        if publication is None and not dry_run:  # uploaded by a run that did not record it
            verify_existing(conn, image.id, image_file, manifest.image.sha256)
    elif not dry_run:
        run = runs.current()
        if run is not None:
            run.note_cloud(cloud, "images")
        started = time.monotonic()
        attributes = image_attributes(
            config, manifest, forced, file_md5(image_file), run.id if run else None
        )
        if signer is not None:
            with cloud_errors(cloud, "storing the signing certificate in the key manager"):
                attributes |= signature_properties(
                    signer, image_file, certificate_uuid(conn, signer)
                )
        progress = Progress(f"{role} publish")
        try:
            stored, _ = create_and_upload(
                conn, image_file, attributes, manifest.image.sha256, progress
            )
        finally:
            progress.close()
        result.upload_s = round(time.monotonic() - started, 1)
        progress.finish(f"uploaded and verified in {result.upload_s:.0f}s")
        result.image_id, result.uploaded = stored["id"], True
    if result.image_id is None:  # dry run of a new upload
        return result
    if dry_run:
        result.members = {pid: "(would add)" for pid in members.values()}
        result.rotation = rotate(
            conn, role, result.image_id, config.publish.keep, config.publish.delete_after_days, True
        )
        return result
    if publication is None:
        publication = Publication(
            cloud=cloud, image_id=result.image_id, name=name, when=utc_now(), forced=forced
        )
        record(build_dir, publication)
    result.members = share(conn, result.image_id, list(members.values()))
    publication.shared, publication.members = utc_now(), list(result.members)
    record(build_dir, publication)
    result.rotation = rotate(
        conn, role, result.image_id, config.publish.keep, config.publish.delete_after_days, False
    )
    publication.rotated = utc_now()
    record(build_dir, publication)
    return result
