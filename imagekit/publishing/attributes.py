"""The Glance record of a build: name, formats, conventional properties, tags."""

import math
from typing import Any

from imagekit.clouds import TOOL_TAG
from imagekit.config import Config
from imagekit.manifest import Manifest

DEBIAN_VERSIONS = {"bookworm": "12", "trixie": "13", "bullseye": "11"}
ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}


def role_tag(role: str) -> str:
    return f"imagekit-role-{role}"


def image_name(config: Config, manifest: Manifest) -> str:
    return config.publish.name_format.format(role=manifest.role, build_id=manifest.build_id)


def image_attributes(
    config: Config, manifest: Manifest, forced: bool, md5: str, run_id: str | None = None
) -> dict[str, Any]:
    """md5: of the image file (openstacksdk's own uploads carry it, see below)."""
    assert manifest.image is not None
    gib = 1024**3
    name = image_name(config, manifest)
    attributes: dict[str, Any] = {
        "name": name,
        "disk_format": manifest.image.format,
        "container_format": "bare",
        "visibility": "private",  # shared once verified
        "tags": [TOOL_TAG, role_tag(manifest.role)],
        "os_distro": manifest.distribution,
        "os_version": DEBIAN_VERSIONS.get(manifest.release, manifest.release),
        "architecture": ARCHITECTURES.get(manifest.architecture, manifest.architecture),
        "hw_disk_bus": "virtio",
        "hw_vif_model": "virtio",
        "hw_qemu_guest_agent": "no",
        "min_disk": max(1, math.ceil(manifest.image.virtual_size_bytes / gib)),
        "min_ram": config.publish.min_ram_mb,
        "os_admin_user": manifest.admin_user,
        "image_build_date": manifest.created,
        "imagekit_source": (manifest.source.commit or "unknown")
        + ("-dirty" if manifest.source.dirty else ""),
        "imagekit_role": manifest.role,
        "imagekit_build_id": manifest.build_id,
        "imagekit_builder": f"{manifest.builder} {manifest.builder_version}",
        "imagekit_sha256": manifest.image.sha256,
        # What openstacksdk and the openstack client set on their uploads, so that they
        # (and tools built on them) recognise the image's content as theirs.
        "owner_specified.openstack.md5": md5,
        "owner_specified.openstack.sha256": manifest.image.sha256,
        "owner_specified.openstack.object": f"images/{name}",
    }
    if manifest.sbom_sha256:  # sbom.cdx.json beside the image: what a member can ask for
        attributes["imagekit_sbom_sha256"] = manifest.sbom_sha256
    if run_id:  # an upload its run did not finish is found and deleted by this
        attributes["imagekit_run"] = run_id
    if forced:
        attributes["imagekit_warning"] = "published with --force: no passing test recorded"
    return attributes
