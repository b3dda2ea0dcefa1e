"""A manifest for unit tests: what a build records, with only the fields a test cares about."""

from typing import Any

from imagekit.manifest import Manifest, Source

DEFAULTS: dict[str, Any] = {
    "role": "web",
    "build_id": "20261125T040000Z",
    "status": "built",
    "created": "2026-11-25T04:00:00Z",
    "builder_version": "3.43.0",
    "source": Source(commit=None, dirty=False),
    "distribution": "debian",
    "release": "bookworm",
    "architecture": "amd64",
    "elements": [],
    "admin_user": "admin",
    "ssh_key_fingerprints": [],
}


def make_manifest(**fields: Any) -> Manifest:
    return Manifest.model_validate({**DEFAULTS, **fields})
