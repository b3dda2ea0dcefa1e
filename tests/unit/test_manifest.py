import json
import multiprocessing
import os
from pathlib import Path

import pytest

from imagekit.errors import UserError
from imagekit.manifest import (
    MANIFEST,
    Manifest,
    SuiteResult,
    latest_build,
    new_build_id,
    read_dpkg_manifest,
)
from tests.unit.manifests import make_manifest


def _manifest(role: str, build_id: str, status: str) -> Manifest:
    return make_manifest(
        role=role,
        build_id=build_id,
        status=status,
        elements=["debian-minimal", "vm", f"imagekit-{role}"],
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


def test_a_corrupt_build_is_never_latest_and_blocks_nothing(tmp_path: Path) -> None:
    for build_id in ("20260101T000000Z", "20260102T000000Z"):
        (tmp_path / "web" / build_id).mkdir(parents=True)
        _manifest("web", build_id, "built").write(tmp_path / "web" / build_id)
    newest = tmp_path / "web" / "20260102T000000Z" / MANIFEST
    newest.write_text(newest.read_text()[:40])  # cut short, as by a full disk
    assert latest_build(tmp_path, "web") == tmp_path / "web" / "20260101T000000Z"
    with pytest.raises(UserError) as corrupt:
        Manifest.read(newest.parent)
    assert str(corrupt.value).startswith(f"{newest}: corrupt manifest")
    assert "\n" not in str(corrupt.value)


def _append_tests(build_dir: Path, count: int) -> None:
    for n in range(count):

        def add(manifest: Manifest, n: int = n) -> None:
            manifest.tests.append(SuiteResult(when=f"{os.getpid()}-{n}", passed=True))

        Manifest.update(build_dir, add)


def test_concurrent_updates_lose_no_record(tmp_path: Path) -> None:
    build_dir = tmp_path / "web" / "20260101T000000Z"
    build_dir.mkdir(parents=True)
    _manifest("web", build_dir.name, "built").write(build_dir)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_tests, args=(build_dir, 50)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    whens = [test.when for test in Manifest.read(build_dir).tests]
    assert len(whens) == len(set(whens)) == 100
    assert {p.name for p in build_dir.iterdir()} == {MANIFEST, MANIFEST + ".lock"}, "no temp file"
