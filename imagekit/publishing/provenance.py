"""`imagekit verify`: is the image in Glance the one imagekit built and published?

Usable by a member project: it downloads the image (shared images can be), checks
the bytes against Glance's own sha512 (`os_hash_value`) and against the sha256
the build recorded (the `imagekit_sha256` property), checks a signed image's
signature against its certificate (from the key manager, or a file for a member
whose project cannot read the publisher's secrets), and reads who built it from
which commit.
"""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openstack import exceptions as os_exceptions

from imagekit.clouds import cloud_errors, connect, glance
from imagekit.errors import ImagekitError, UserError
from imagekit.progress import Progress
from imagekit.publishing.signing import verify_signature
from imagekit.publishing.upload import CHUNK, transfer

SIGNATURE_PROPERTIES = (
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
)


@dataclass
class Provenance:
    image_id: str
    name: str
    size: int
    sha512_matches: bool  # the bytes we read are what Glance says it stores
    sha256_matches: bool  # ... and what the build recorded
    role: str | None
    build_id: str | None
    source: str | None  # git commit (+ "-dirty")
    builder: str | None
    built: str | None
    sbom_sha256: str | None
    signed: bool = False
    signature_valid: bool | None = None  # None: signed, but not checked (see signature)
    signature: str = "not signed"  # the signer, or why it failed or was not checked

    @property
    def ok(self) -> bool:
        return self.sha512_matches and self.sha256_matches and self.signature_valid is not False


def verify_image(cloud: str, image: str, certificate: Path | None = None) -> Provenance:
    """Download IMAGE (a name or id) from CLOUD and check it; the facts, for the CLI.

    certificate: the signer's PEM certificate, else the one the image names in the
    cloud's key manager."""
    if certificate is not None and not certificate.is_file():
        raise UserError(f"--certificate {certificate}: no such file")
    conn = connect(cloud, authenticate=True)
    try:
        with cloud_errors(cloud, f"reading image {image!r}"):
            found = _find(conn, image)
            props: dict[str, Any] = {**(found.properties or {})}
            if "imagekit_sha256" not in props:
                raise UserError(f"image {image!r} in '{cloud}' was not published by imagekit")
            sha256, sha512, size = hashlib.sha256(), hashlib.sha512(), 0
            response = glance(conn).download_image(found, stream=True)
            shown, started = Progress(f"verify {found.name}"), time.monotonic()
            try:
                for chunk in response.iter_content(CHUNK):
                    sha256.update(chunk)
                    sha512.update(chunk)
                    size += len(chunk)
                    shown.update("downloading", transfer(size, found.size or size, started))
            finally:
                shown.close()
            signature: dict[str, Any] = {}
            if all(props.get(name) for name in SIGNATURE_PROPERTIES):
                signature = _check_signature(conn, props, sha256.digest(), certificate)
    finally:
        conn.close()
    return Provenance(
        image_id=found.id,
        name=found.name,
        size=size,
        sha512_matches=found.hash_algo == "sha512" and found.hash_value == sha512.hexdigest(),
        sha256_matches=props["imagekit_sha256"] == sha256.hexdigest(),
        role=props.get("imagekit_role"),
        build_id=props.get("imagekit_build_id"),
        source=props.get("imagekit_source"),
        builder=props.get("imagekit_builder"),
        built=props.get("image_build_date"),
        sbom_sha256=props.get("imagekit_sbom_sha256"),
        **signature,
    )


def _check_signature(
    conn: Any, props: dict[str, Any], digest: bytes, certificate: Path | None
) -> dict[str, Any]:
    if certificate is not None:
        pem = certificate.read_bytes()
    else:
        uuid = props["img_signature_certificate_uuid"]
        try:
            response = conn.key_manager.get(
                f"/secrets/{uuid}/payload", headers={"Accept": "application/octet-stream"}
            )
            os_exceptions.raise_from_response(response)
            pem = response.content
        except os_exceptions.SDKException as err:
            return {
                "signed": True,
                "signature": f"not checked: certificate {uuid} not readable here ({err}); "
                "give --certificate FILE",
            }
    try:
        signer = verify_signature(pem, props, digest)
    except (ImagekitError, ValueError) as err:
        return {"signed": True, "signature_valid": False, "signature": f"INVALID: {err}"}
    return {"signed": True, "signature_valid": True, "signature": f"valid, signed by {signer}"}


def _find(conn: Any, image: str) -> Any:
    """By id, else by name (one image of that name visible to the project)."""
    images = glance(conn)
    by_id = images.find_image(image, ignore_missing=True)
    if by_id is not None and by_id.id == image:
        return images.get_image(by_id.id)
    named = [i for i in images.images(name=image) if i.status == "active"]
    if not named:
        raise UserError(f"no active image {image!r} visible in this project")
    if len(named) > 1:
        raise UserError(f"{len(named)} images are named {image!r}: give the image's id")
    return images.get_image(named[0].id)


def report(found: Provenance) -> str:
    lines = [
        f"image {found.name} ({found.image_id}), {found.size >> 20} MiB",
        f"  sha512 vs Glance's os_hash_value: {'ok' if found.sha512_matches else 'MISMATCH'}",
        f"  sha256 vs the build's record:      {'ok' if found.sha256_matches else 'MISMATCH'}",
        f"  built by imagekit: role {found.role}, build {found.build_id}, on {found.built}",
        f"  from commit {found.source}, with {found.builder}",
        f"  SBOM sha256: {found.sbom_sha256 or '(none recorded)'}",
        f"  signature: {found.signature}",
    ]
    if not found.ok:
        lines.append("NOT the image imagekit published: do not boot it")
    return "\n".join(lines)
