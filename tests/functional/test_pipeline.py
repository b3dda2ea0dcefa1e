"""The nightly pipeline, for real: every role built, tested, published and shared.

Runs first in the session (see conftest): its builds are the ones later tests reuse.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.clouds import glance
from imagekit.config import Config
from imagekit.devcloud import DevCloud
from imagekit.locking import Lock
from imagekit.manifest import Manifest
from imagekit.publishing import sharing
from imagekit.roles import ROLES
from imagekit.store import Store
from tests.functional.test_site import SITE_CHECKS, nothing_left

pytestmark = pytest.mark.usefixtures("clouds_yaml")


def pipeline(
    config_path: Path, *args: str, timeout: float = 2400
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(config_path), "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary(output_dir: Path) -> dict[str, Any]:
    """The newest run's JSON summary."""
    newest = sorted((output_dir / "pipeline").glob("*.json"))[-1]
    data: dict[str, Any] = json.loads(newest.read_text())
    return data


def test_all_roles_built_tested_published_and_shared(config: Config, devcloud: DevCloud) -> None:
    def built_now(role: str) -> Path:
        found = Store(config.output_dir).newest(role)
        assert found is not None
        return found.dir

    config_path = config.source.with_name("pipeline.yaml")
    config_path.write_text(
        config.source.read_text() + "publish: {identity_cloud: devcloud-admin, members: [alpha]}\n"
    )
    had_builds = {role for role in ROLES if Store(config.output_dir).newest(role) is not None}
    result = pipeline(config_path, "--cloud", "devcloud")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    for role in ROLES:
        assert f"[{role}] build passed" in result.stderr
    # The whole example site was booted from this run's builds and passed, before any upload.
    assert "[site] test passed" in result.stderr
    assert result.stderr.index("[site] test passed") < result.stderr.index("publish started")
    site_runs = {Manifest.read(b).site_tests[-1].run_id for b in map(built_now, ROLES)}
    assert len(site_runs) == 1
    record = Manifest.read(built_now("web")).site_tests[-1]
    assert record.passed and record.tests == SITE_CHECKS and record.failures == 0
    assert set(record.instances) == {"lb1", "web1", "web2", "dns1", "db1"}
    nothing_left()
    data = summary(config.output_dir)
    assert [r["role"] for r in data["roles"]] == list(ROLES)
    assert all(r["passed"] for r in data["roles"])
    # The morning report: each role against the build it replaces (if it had one).
    for row in data["roles"]:
        if row["role"] in had_builds:
            assert row["changes"]["new_build"] == row["build_id"], row
            assert row["changes"]["summary"] in result.stdout
            print(row["changes"]["summary"])

    alpha = devcloud.connect("devcloud-alpha")
    for role in ROLES:
        build = Store(config.output_dir).newest(role)
        assert build is not None
        build_dir = build.dir
        manifest = Manifest.read(build_dir)
        assert manifest.tested and manifest.tests[-1].tests >= 10
        # Each stage is the imagekit command itself: what `imagekit test ROLE` prints and writes.
        said = (config.output_dir / "pipeline" / data["run_id"] / f"{role}-test.log").read_text()
        assert re.search(rf"^{role}: PASSED (\d+)/\1 checks .*report: ", said, re.M), said
        assert manifest.tests[-1].accelerator in ("kvm", "tcg")
        assert "testcase" in (build_dir / "test-report.xml").read_text()
        (publication,) = manifest.publications
        image_id, status = sharing.accept(alpha, publication.image_id)
        assert status == "accepted"
        digest = hashlib.sha512()
        for chunk in glance(alpha).download_image(image_id, stream=True).iter_content(1 << 20):
            digest.update(chunk)
        assert digest.hexdigest() == glance(alpha).get_image(image_id).hash_value
        assert (build_dir / f"{role}.qcow2").stat().st_size == glance(alpha).get_image(
            image_id
        ).size


def test_a_second_pipeline_is_refused_while_one_runs(config: Config) -> None:
    with Lock(config.output_dir / ".pipeline.lock", f"a pipeline on {config.output_dir}"):
        result = pipeline(config.source, "--cloud", "devcloud", timeout=120)
    assert result.returncode == 3
    assert f"a pipeline on {config.output_dir} is already running (pid" in result.stderr


def test_resume_after_a_failed_stage(config: Config) -> None:
    """A cloud typo costs seconds (checked first); db's build, never published to
    devcloud-admin, is published there by the next run without a rebuild, and said so."""
    before = {r: [b.id for b in Store(config.output_dir).builds(r)] for r in ROLES}
    runs_before = sorted((config.output_dir / "pipeline").glob("*.json"))
    failed = pipeline(config.source, "db", "--cloud", "no-such-cloud", timeout=120)
    assert failed.returncode == 2
    assert "--cloud no-such-cloud:" in failed.stderr
    assert sorted((config.output_dir / "pipeline").glob("*.json")) == runs_before, "no run"

    resumed = pipeline(config.source, "db", "--cloud", "devcloud-admin", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (role,) = summary(config.output_dir)["roles"]
    stages = {s["name"]: s["result"] for s in role["stages"]}
    assert stages == {"build": "skipped", "test": "skipped", "site": "skipped", "publish": "passed"}
    assert role["resumed"] and "(resumed: no new build)" in resumed.stdout
    assert f"finished build {role['build_id']} of an earlier run" in resumed.stderr
    assert {r: [b.id for b in Store(config.output_dir).builds(r)] for r in ROLES} == before


def test_a_role_failing_its_suite_is_not_published(
    config: Config, make_config: Callable[..., Path], devcloud: DevCloud
) -> None:
    """dns's suite fails (the real suite, in a VM): its build recorded a package that the
    image lacks (the suite checks what the build recorded). web passed its own (its record
    is kept: the pipeline resumes it at the site test), but the site cannot be tested
    without a tested dns build, so web is not published either: only a passing site test
    publishes."""
    path = make_config()
    for role in ROLES:  # lb and db: tested builds the site could use
        newest = Store(config.output_dir).newest(role, tested=True)
        assert newest is not None
        copy = path.parent / "images" / role / newest.id
        shutil.copytree(newest.dir, copy)
        manifest = Manifest.read(copy)
        manifest.site_tests, manifest.publications = [], []
        if role == "dns":
            manifest.tests = []
            manifest.requested_packages = [*manifest.requested_packages, "no-such-package"]
        manifest.write(copy)
    result = pipeline(path, "web", "dns", "--cloud", "devcloud", timeout=1200)
    assert result.returncode == 1
    assert "pipeline failed for: web, dns" in result.stderr
    output_dir = path.parent / "images"
    roles = {
        r["role"]: {s["name"]: s["result"] for s in r["stages"]}
        for r in summary(output_dir)["roles"]
    }
    assert roles["dns"] == {
        "build": "skipped", "test": "failed", "site": "not run", "publish": "not run"
    }  # fmt: skip
    assert roles["web"] == {
        "build": "skipped", "test": "skipped", "site": "failed", "publish": "not run"
    }  # fmt: skip
    assert (
        "no tested build of 'dns'"
        in (output_dir / "pipeline")
        .joinpath(summary(output_dir)["run_id"], "site-test.log")
        .read_text()
    )
    dns = Store(output_dir).builds("dns")[-1].manifest()
    assert dns.publications == [] and not dns.tested
    # The real suite failed the one check the image cannot pass (and only it).
    said = (output_dir / "pipeline" / summary(output_dir)["run_id"] / "dns-test.log").read_text()
    assert re.search(r"^dns: FAILED (\d+)/(\d+) checks", said, re.M), said
    assert "test_shared_packages_are_installed" in said and "no-such-package" in said, said


def test_dry_run_changes_nothing(config: Config) -> None:
    result = pipeline(config.source, "--cloud", "devcloud", "--dry-run", timeout=120)
    assert result.returncode == 0
    assert "web:" in result.stdout and "rotate: keep the newest" in result.stdout
