import json
import multiprocessing
import os
from pathlib import Path

from imagekit.manifest import (
    MANIFEST,
    Manifest,
    SuiteResult,
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
