"""The build store: the one place that finds builds, and what a build's files are called."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imagekit.cli import main
from imagekit.config import Config, load_config
from imagekit.errors import UserError
from imagekit.manifest import MANIFEST, Manifest, Publication, SiteTestRecord, SuiteResult
from imagekit.store import Build, Store
from tests.unit.manifests import make_manifest

WriteConfig = Callable[[str], Path]


def _add(root: Path, role: str, build_id: str, status: str = "built", **records: object) -> Build:
    build = Build(role, root / role / build_id)
    build.dir.mkdir(parents=True)
    manifest = make_manifest(role=role, build_id=build_id, status=status)
    manifest.write(build.dir)
    for name, value in records.items():

        def append(manifest: Manifest, name: str = name, value: object = value) -> None:
            getattr(manifest, name).append(value)

        build.update(append)
    return build


def _passed() -> SuiteResult:
    return SuiteResult(when="t", passed=True, tests=3)


def test_a_build_owns_its_file_names(tmp_path: Path) -> None:
    build = Build("web", tmp_path / "web" / "20260101T000000Z")
    assert build.id == "20260101T000000Z"
    assert build.image.name == "web.qcow2" and build.checksum_file.name == "web.qcow2.sha256"
    assert build.log.name == "build.log" and build.manifest_file.name == MANIFEST
    assert build.report().name == "test-report.xml"
    assert build.console_log("site").name == "site-console.log"


def test_newest_skips_failed_unfinished_and_untested(tmp_path: Path) -> None:
    tested = _add(tmp_path, "web", "20260101T000000Z", tests=_passed())
    built = _add(tmp_path, "web", "20260102T000000Z")
    _add(tmp_path, "web", "20260103T000000Z", status="failed")
    _add(tmp_path, "web", "20260104T000000Z", status="building")
    store = Store(tmp_path)
    assert store.newest("web") == built
    assert store.newest("web", tested=True) == tested
    assert store.newest("web", site_tested=True) is None
    assert store.newest("db") is None
    assert store.builds("web")[0].id == "20260101T000000Z", "oldest first"


def test_newest_site_tested(tmp_path: Path) -> None:
    record = SiteTestRecord(site="site.yaml", run_id="r", when="t", passed=True, tests=13)
    site = _add(tmp_path, "web", "20260101T000000Z", tests=_passed(), site_tests=record)
    _add(tmp_path, "web", "20260102T000000Z", tests=_passed())
    assert Store(tmp_path).newest("web", tested=True, site_tested=True) == site


def test_newest_published_to_a_cloud_and_older_than(tmp_path: Path) -> None:
    uploaded = Publication(cloud="prod", image_id="i1", name="n", when="t")
    old = _add(tmp_path, "web", "20260101T000000Z", publications=uploaded)
    new = _add(tmp_path, "web", "20260102T000000Z")
    store = Store(tmp_path)
    assert store.newest("web", published_to="prod") == old
    assert store.newest("web", published_to="test") is None
    assert store.newest("web") == new
    assert store.newest("web", before=new.id) == old
    assert store.newest("web", before=old.id) is None


def test_a_corrupt_build_is_never_newest_and_blocks_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _add(tmp_path, "web", "20260101T000000Z")
    corrupt = _add(tmp_path, "web", "20260102T000000Z")
    corrupt.manifest_file.write_text(corrupt.manifest_file.read_text()[:40])  # a full disk
    assert Store(tmp_path).newest("web") == good
    assert Store(tmp_path).newest("web", tested=False) == good
    # Not silently: said once, on stderr, naming the file.
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"imagekit: warning: {corrupt.manifest_file}: corrupt manifest")
    assert warning.endswith("; skipped")
    with pytest.raises(UserError) as error:
        Manifest.read(corrupt.dir)
    assert str(error.value).startswith(f"{corrupt.manifest_file}: corrupt manifest")
    assert "\n" not in str(error.value)


def test_get_names_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    _add(tmp_path, "web", "20260101T000000Z")
    _add(tmp_path, "web", "20260102T000000Z", status="failed")
    store = Store(tmp_path)
    assert store.get("web", "20260101T000000Z").id == "20260101T000000Z"
    for build_id, message in [
        ("20260103T000000Z", "no finished build of 'web'"),
        ("20260102T000000Z", "that build of 'web' did not finish"),
        ("../db/20260101T000000Z", "not a build id"),
    ]:
        with pytest.raises(UserError, match=message):
            store.get("web", build_id)
    with pytest.raises(UserError, match=r"^--build web=20260103T000000Z: "):
        store.get("web", "20260103T000000Z", "--build web=")


def test_newest_or_fail_says_how_to_make_one(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(UserError, match=r"no finished build of 'web'.*imagekit build web"):
        store.newest_or_fail("web")
    _add(tmp_path, "web", "20260101T000000Z")
    with pytest.raises(UserError, match=r"no tested build of 'web'.*imagekit test web"):
        store.newest_or_fail("web", tested=True)


@pytest.fixture
def two_builds(tmp_path: Path, write_config: WriteConfig) -> Config:
    """A tested web build and a failed db build, in a config's output directory."""
    config = load_config(write_config(f"ssh_keys: [{{key}}]\noutput_dir: {tmp_path / 'out'}\n"))
    _add(config.output_dir, "web", "20260101T000000Z", tests=_passed())
    _add(config.output_dir, "db", "20260102T000000Z", status="failed")
    return config


def test_imagekit_builds_lists_what_the_manifests_record(
    two_builds: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_builds
    assert main(["--config", str(config.source), "builds", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["role"], r["build_id"], r["status"], r["tested"]) for r in rows] == [
        ("web", "20260101T000000Z", "built", True),
        ("db", "20260102T000000Z", "failed", False),
    ]
    assert main(["--config", str(config.source), "builds", "web"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["role", "build", "status"]
    assert table[1].split()[:3] == ["web", "20260101T000000Z", "built"] and len(table) == 2


def test_builds_speak_the_openstack_clients_formats_and_columns(
    two_builds: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_builds
    base = ["--config", str(config.source), "builds"]
    assert main([*base, "-f", "value", "-c", "role", "-c", "status"]) == 0
    assert capsys.readouterr().out == "web built\ndb failed\n"
    assert main([*base, "-f", "yaml", "-c", "build_id"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == [
        {"build_id": "20260101T000000Z"},
        {"build_id": "20260102T000000Z"},
    ]
    assert main([*base, "-f", "json", "-c", "nosuch"]) == 2
    assert "-c nosuch: no such column (choose from role, build_id" in capsys.readouterr().err
