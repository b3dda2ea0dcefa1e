import json
from pathlib import Path

from imagekit.manifest import Manifest, Source, latest_build, new_build_id, read_dpkg_manifest


def _manifest(role: str, build_id: str, status: str) -> Manifest:
    return Manifest.model_validate(
        {
            "role": role,
            "build_id": build_id,
            "status": status,
            "created": "2026-11-24T00:00:00Z",
            "builder_version": "3.43.0",
            "source": Source(commit=None, dirty=False),
            "distribution": "debian",
            "release": "bookworm",
            "architecture": "amd64",
            "elements": ["debian-minimal", "vm", f"imagekit-{role}"],
            "admin_user": "admin",
            "ssh_key_fingerprints": [],
        }
    )


def test_latest_build_skips_failed_and_unfinished(tmp_path: Path) -> None:
    for build_id, status in [
        ("20260101T000000Z", "built"),
        ("20260102T000000Z", "failed"),
        ("20260103T000000Z", "building"),
    ]:
        build_dir = tmp_path / "web" / build_id
        build_dir.mkdir(parents=True)
        _manifest("web", build_id, status).write(build_dir)
    assert latest_build(tmp_path, "web") == tmp_path / "web" / "20260101T000000Z"
    assert latest_build(tmp_path, "db") is None


def test_build_ids_sort_and_never_collide(tmp_path: Path) -> None:
    first = new_build_id(tmp_path)
    (tmp_path / first).mkdir()
    second = new_build_id(tmp_path)
    assert second != first and second >= first


def test_dpkg_manifest_keeps_installed_packages_only(tmp_path: Path) -> None:
    path = tmp_path / "dpkg"
    path.write_text(
        json.dumps(
            {
                "packages": [
                    {"package": "nginx-light", "arch": "amd64", "version": "1.22", "status": "ii "},
                    {
                        "package": "linux-image-amd64",
                        "arch": "amd64",
                        "version": "6.1",
                        "status": "rc ",
                    },
                ]
            }
        )
    )
    assert [p.name for p in read_dpkg_manifest(path)] == ["nginx-light"]
