"""The pipeline's plan and pre-flight checks (no builds here)."""

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit import cli, host
from imagekit.config import load_config
from imagekit.devcloud import DevCloud
from imagekit.errors import ImagekitError
from imagekit.manifest import ImageFile, Manifest, Publication, SiteTestRecord, SuiteResult
from imagekit.pipeline import resume_point
from tests.unit.manifests import make_manifest

WriteConfig = Callable[[str], Path]


def built(output_dir: Path, build_id: str, publications: list[Publication]) -> None:
    manifest = make_manifest(
        build_id=build_id,
        image=ImageFile(
            file="web.qcow2", format="qcow2", size_bytes=1, virtual_size_bytes=1, sha256="0"
        ),
        tests=[SuiteResult(when="t", passed=True, tests=12)],
        publications=publications,
    )
    (output_dir / "web" / build_id).mkdir(parents=True)
    manifest.write(output_dir / "web" / build_id)


UPLOADED = Publication(cloud="prod", image_id="i1", name="n", when="t")


@pytest.mark.parametrize(
    ("publication", "plan"),
    [
        (None, ("B1", 2)),  # tested, never published: publish it
        (UPLOADED, ("B1", 2)),  # uploaded, then share was interrupted: finish it
        (UPLOADED.model_copy(update={"shared": "t"}), ("B1", 2)),  # rotate interrupted
        (UPLOADED.model_copy(update={"shared": "t", "rotated": "t"}), (None, 0)),  # done
    ],
    ids=["unpublished", "uploaded", "shared", "complete"],
)
def test_a_publication_is_finished_before_a_new_build(
    write_config: WriteConfig, publication: Publication | None, plan: tuple[str | None, int]
) -> None:
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    built(config.output_dir, "B1", [publication] if publication else [])
    assert resume_point(config, "web", "prod") == plan
    # A complete publication in another cloud does not count for this one.
    assert resume_point(config, "web", "staging") == ("B1", 2)


def test_a_build_that_failed_a_stage_twice_is_replaced_not_retried_forever(
    write_config: WriteConfig,
) -> None:
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    built(config.output_dir, "B1", [])
    failed, passed = SuiteResult(when="t", passed=False), SuiteResult(when="t", passed=True)
    build_dir = config.output_dir / "web" / "B1"

    def tests(records: list[SuiteResult], site: list[SuiteResult]) -> tuple[str | None, int]:
        manifest = Manifest.read(build_dir)
        manifest.tests, manifest.site_tests = (
            records,
            [SiteTestRecord(**r.model_dump(), site="s", run_id="r") for r in site],
        )
        manifest.write(build_dir)
        return resume_point(config, "web", "prod")

    assert tests([], []) == ("B1", 1), "never tested (interrupted): test it"
    assert tests([failed], []) == ("B1", 1), "failed once: one more try"
    assert tests([failed, failed], []) == (None, 0), "failed twice: a new build"
    assert tests([failed, failed, passed], [failed]) == ("B1", 2), "the site once more"
    assert tests([passed], [failed, failed]) == (None, 0)
    assert tests([passed], [failed, passed, failed]) == ("B1", 2)


def imagekit(config: Path, *args: str, clouds: str) -> subprocess.CompletedProcess[str]:
    clouds_yaml = config.with_name("clouds.yaml")
    clouds_yaml.write_text(clouds)
    env = {k: v for k, v in os.environ.items() if k != "OS_CLOUD"}
    return subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)},
    )


UNREACHABLE = """clouds:
  prod:
    auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: p, project_name: x,
           user_domain_name: Default, project_domain_name: Default}
"""


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_the_pipeline_checks_the_cloud_before_any_build(
    write_config: WriteConfig, dry_run: list[str]
) -> None:
    path = write_config("ssh_keys: [{key}]\n")
    result = imagekit(path, "pipeline", "web", "--cloud", "prod", *dry_run, clouds=UNREACHABLE)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("imagekit: error: cloud 'prod': authentication failed: unreachable")
    assert not (path.parent / "images" / "web").exists(), "nothing was built"

    typo = imagekit(path, "pipeline", "web", "--cloud", "prdo", *dry_run, clouds=UNREACHABLE)
    assert typo.returncode == 2 and "--cloud prdo:" in typo.stderr


def test_the_pipeline_checks_the_host_tools_of_every_stage_first(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site stage's `ip` missing is found before the first build."""
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    monkeypatch.setattr(host, "which", lambda command: None if command == "ip" else "/bin/x")
    monkeypatch.setattr(cli, "connect", lambda *args, **kwargs: None)  # the cloud answers
    with pytest.raises(ImagekitError, match=r"missing host packages: iproute2 \(run: imagekit"):
        cli._preflight(config, "prod", install=False)


@pytest.mark.parametrize("command", ["publish", "pipeline"])
def test_no_cloud_is_an_error_never_the_dev_cloud(write_config: WriteConfig, command: str) -> None:
    path = write_config("ssh_keys: [{key}]\n")
    result = imagekit(path, command, "web", clouds="clouds: {}\n")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "no cloud: give --cloud NAME or set OS_CLOUD" in line


def test_the_dev_cloud_is_found_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cloud devcloud` works without `eval $(imagekit devcloud env)`; nothing else does."""
    local = DevCloud(tmp_path / "devcloud")
    local.clouds_yaml.parent.mkdir()
    local.clouds_yaml.write_text("clouds:\n  devcloud:\n    auth: {auth_url: 'http://x/v3'}\n")
    monkeypatch.setattr(cli, "DevCloud", lambda: local)
    # Set, then removed: teardown removes what cli._cloud sets, so later tests do not see it.
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", "")
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE")
    monkeypatch.setenv("HOME", str(tmp_path))  # no user clouds.yaml that names it
    monkeypatch.chdir(tmp_path)
    assert cli._cloud(argparse.Namespace(cloud="prod")) == "prod"
    assert "OS_CLIENT_CONFIG_FILE" not in os.environ, "only a dev cloud's name finds it"
    assert cli._cloud(argparse.Namespace(cloud="devcloud")) == "devcloud"
    assert os.environ["OS_CLIENT_CONFIG_FILE"] == str(local.clouds_yaml)
