import json
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit import changes
from imagekit.cli import main
from imagekit.config import load_config
from imagekit.manifest import ImageFile, Manifest, Package, Publication
from imagekit.pipeline import replaced_changes
from imagekit.store import Store
from tests.unit.manifests import make_manifest

WriteConfig = Callable[[str], Path]


def pkg(name: str, version: str, suite: str = "bookworm") -> Package:
    return Package(name=name, version=version, arch="amd64", source=name, suite=suite)


def manifest(build_id: str, packages: list[Package], size: int) -> Manifest:
    image = ImageFile(
        file="web.qcow2", format="qcow2", size_bytes=size, virtual_size_bytes=size, sha256="0" * 64
    )
    return make_manifest(build_id=build_id, packages=packages, image=image)


OLD = manifest(
    "20261129T020000Z",
    [
        pkg("openssl", "3.0.15-1~deb12u1"),
        pkg("libc6", "2.36-9+deb12u9"),
        pkg("nginx-light", "1.22.1-9"),
        pkg("tzdata", "2025a-0+deb12u1"),
        pkg("gone", "1.0"),
        pkg("epoch", "1:2.0"),
    ],
    100 << 20,
)
NEW = manifest(
    "20261130T020000Z",
    [
        pkg("openssl", "3.0.17-1~deb12u2", "bookworm-security"),
        pkg("libc6", "2.36-9+deb12u10", "bookworm-security"),
        pkg("nginx-light", "1.22.1-9"),
        pkg("tzdata", "2025b-0+deb12u1", "bookworm-updates"),
        pkg("fresh", "2.0"),
        pkg("epoch", "3.0"),
    ],
    98 << 20,
)


def test_upgrades_security_and_debian_version_order() -> None:
    found = changes.compare(OLD, NEW)
    assert found.added == ["fresh 2.0"] and found.removed == ["gone 1.0"]
    assert [(c.name, c.upgrade, c.security) for c in found.changed] == [
        ("epoch", False, False),  # 3.0 < 1:2.0: the epoch wins
        ("libc6", True, True),  # deb12u10 > deb12u9
        ("openssl", True, True),
        ("tzdata", True, False),
    ]
    assert found.size_change_bytes == -(2 << 20)
    assert found.summary() == (
        "web: 3 packages upgraded, 2 of them security (libc6 2.36-9+deb12u10, "
        "openssl 3.0.17-1~deb12u2); 1 downgraded; 1 added; 1 removed"
    )
    text = changes.table(found)
    assert "  ~ openssl 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2 (upgraded)  [security]" in text
    assert text.endswith("image -2.0 MiB")


def test_imagekit_diff_defaults_to_the_two_newest_builds(
    tmp_path: Path, write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(write_config(f"ssh_keys: [{{key}}]\noutput_dir: {tmp_path / 'out'}\n"))
    for built in (OLD, NEW):
        build_dir = config.output_dir / "web" / built.build_id
        build_dir.mkdir(parents=True)
        built.write(build_dir)
    assert main(["--config", str(config.source), "diff", "web", "-f", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["old_build"], data["new_build"]) == (OLD.build_id, NEW.build_id)
    assert data["summary"].startswith("web: 3 packages upgraded, 2 of them security")
    assert main(["--config", str(config.source), "diff", "web", OLD.build_id]) == 0
    assert "1 downgraded" in capsys.readouterr().out
    assert main(["--config", str(config.source), "diff", "web", NEW.build_id]) == 2
    assert "the same build" in capsys.readouterr().err
    assert main(["--config", str(config.source), "diff", "web", "../lb/x"]) == 2
    assert "imagekit: error: OLD '../lb/x': not a build id" in capsys.readouterr().err


def test_the_pipeline_compares_with_the_build_published_before(tmp_path: Path) -> None:
    """The morning report: the new build against what the cloud had, not an unpublished
    build in between; a failed new build has nothing to report."""
    published = Publication(cloud="c", image_id="i", name="n", when="w")
    builds = [
        (OLD.model_copy(update={"publications": [published]}), "20261129T020000Z"),
        (OLD.model_copy(update={"packages": NEW.packages}), "20261129T120000Z"),
        (NEW, "20261130T020000Z"),
        (NEW.model_copy(update={"status": "failed"}), "20261130T030000Z"),
    ]
    for built, build_id in builds:
        build_dir = tmp_path / "web" / build_id
        build_dir.mkdir(parents=True)
        built.model_copy(update={"build_id": build_id}).write(build_dir)
    store = Store(tmp_path)
    found = replaced_changes(store, "web", "20261130T020000Z", "c")
    assert found is not None and found.old_build == "20261129T020000Z"
    assert found.summary().startswith("web: 3 packages upgraded, 2 of them security")
    assert replaced_changes(store, "web", "20261130T020000Z", "other") is not None
    assert replaced_changes(store, "web", "20261130T030000Z", "c") is None
    assert replaced_changes(store, "web", "20261129T020000Z", "c") is None  # the first
