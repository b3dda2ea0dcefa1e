"""The CLI's contract: one line and exit status 2 for bad input, --help everywhere."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from imagekit import cli, doctor, host
from imagekit.builders import dib
from imagekit.changes import Changes
from imagekit.cli import main
from imagekit.config import Config
from imagekit.doctor import Check
from imagekit.errors import ImagekitError
from imagekit.manifest import ImageFile, SiteTestRecord, SuiteResult
from imagekit.pipeline import RoleRun, Stage
from imagekit.publishing import rotation, sharing
from imagekit.publishing.provenance import Provenance
from imagekit.publishing.publish import PublishResult
from imagekit.roles import CHECKOUT
from imagekit.store import BuildSummary
from tests.unit.manifests import make_manifest

WriteConfig = Callable[[str], Path]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("args", [[], ["build"], ["test"], ["doctor"]])
def test_help_on_every_command(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: imagekit")


def test_version_and_exit_statuses() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == "imagekit 0.1.0"
    statuses = run("--help").stdout.split("exit status:")[1]
    assert [line.split()[0] for line in statuses.strip().splitlines()] == [
        "0",
        "1",
        "2",
        "3",
        "130",
    ]


def test_shell_completion_and_a_reader_that_goes_away() -> None:
    script = run("--print-completion", "bash").stdout
    assert "imagekit" in script and "publish" in script and "--os-cloud" in script
    piped = subprocess.run(
        f"{sys.executable} -m imagekit --print-completion bash | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stdout.startswith("#") and piped.stderr == ""


def test_os_cloud_is_the_openstack_clients_name_for_cloud(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}]\n")
    for option in ("--cloud", "--os-cloud"):
        result = run("--config", str(path), "images", "web", option, "no-such-cloud")
        _assert_one_line_exit_2(result, "--cloud no-such-cloud:")


def _assert_one_line_exit_2(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert text in lines[0]


def test_unknown_role() -> None:
    _assert_one_line_exit_2(run("build", "mail"), "unknown role 'mail'")


def test_unknown_command() -> None:
    _assert_one_line_exit_2(run("frobnicate"), "invalid choice")


def test_malformed_yaml(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}\n")
    _assert_one_line_exit_2(run("--config", str(path), "build", "web"), "malformed YAML")


def test_missing_key_file(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [nowhere.pub]\n")
    _assert_one_line_exit_2(run("--config", str(path), "build", "web"), "key file not found")


def test_private_key_as_public(write_config: WriteConfig, public_key: Path) -> None:
    path = write_config(f"ssh_keys: [{public_key.with_suffix('')}]\n")
    _assert_one_line_exit_2(run("--config", str(path), "build", "web"), "private key")


def test_unknown_key(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}]\nrelase: bookworm\n")
    _assert_one_line_exit_2(run("--config", str(path), "build", "all"), "relase: unknown key")


def test_main_is_callable_from_python(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "nope"]) == 2
    assert "unknown role 'nope'" in capsys.readouterr().err


def test_test_without_a_build(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}]\n")
    _assert_one_line_exit_2(run("--config", str(path), "test", "db"), "no finished build of 'db'")


def test_test_unknown_cloud(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(
        "ssh_keys: [{key}]\n"
        "openstack: {flavor: m1.small, network: private, private_network: site}\n"
    )
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  prod:\n    auth: {auth_url: 'http://127.0.0.1:5000/v3'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(path), "test", "web", "--cloud", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)},
    )
    _assert_one_line_exit_2(result, "--cloud nope:")


def test_test_cloud_needs_openstack_settings(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}]\n")
    result = run("--config", str(path), "test", "web", "--cloud", "prod")
    _assert_one_line_exit_2(result, "openstack: section missing")


def test_userdata_misspelt_variable() -> None:
    result = run("userdata", "web", "--set", "hostname=web1", "--set", "servername=x")
    _assert_one_line_exit_2(result, "unknown variable 'servername'")


def test_userdata_to_a_private_file_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "db.yaml"
    examples = Path(__file__).parents[2] / "cloud-init" / "examples"
    result = run("userdata", "db", "--values", str(examples / "db.yaml"), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "db_password" in result.stderr
    assert "example-only" not in result.stderr, "the secret itself is never logged"
    assert out.read_text().startswith("#cloud-config\n")
    assert out.stat().st_mode & 0o777 == 0o600


def test_userdata_list_documents_variables() -> None:
    result = run("userdata", "lb", "--list")
    assert result.returncode == 0
    assert "web_backends" in result.stdout and "(required)" in result.stdout


def test_doctor_and_images_speak_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    """-f json and -c, as on the other reporting commands: one document on stdout."""
    monkeypatch.setattr(
        doctor, "checks", lambda path: [doctor.Check("ok", "qemu-img", "/usr/bin/qemu-img")]
    )
    assert main(["doctor", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"status": "ok", "name": "qemu-img", "detail": "/usr/bin/qemu-img"}
    ]
    assert main(["doctor", "-f", "value", "-c", "name"]) == 0
    assert capsys.readouterr().out == "qemu-img\n"

    image = SimpleNamespace(
        id="i2", properties={"imagekit_build_id": "20261201T020000Z"}, created_at="2026-12-01",
        status="active", visibility="shared", is_hidden=False,
    )  # fmt: skip
    monkeypatch.setattr(cli, "connect", lambda cloud: "conn")
    monkeypatch.setattr(rotation, "role_images", lambda conn, role: [image])
    monkeypatch.setattr(sharing, "member_status", lambda conn, i: {"p-alpha": "accepted"})
    config = write_config("ssh_keys: ['{key}']\n")
    assert main(["--config", str(config), "images", "web", "--cloud", "prod", "-f", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["build"] == "20261201T020000Z" and row["current"] is True
    assert row["members"] == {"p-alpha": "accepted"} and row["id"] == "i2"


def test_test_cpus_is_a_whole_number_from_one() -> None:
    _assert_one_line_exit_2(run("test", "web", "--cpus", "0"), "--cpus: expected a whole number")


def test_build_speaks_json(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    """What each build recorded, one element per role built; a failed role is said on
    stderr, left out of the document, and the exit status says so."""

    def fake_build(config: Config, role: str) -> Path:
        if role == "dns":
            raise ImagekitError("build of 'dns' failed; log: /x/build.log")
        build_dir = config.output_dir / role / "20261202T010000Z"
        build_dir.mkdir(parents=True, exist_ok=True)
        image = ImageFile(
            file=f"{role}.qcow2", format="qcow2", size_bytes=3 << 20,
            virtual_size_bytes=2 << 30, sha256="ab" * 32,
        )  # fmt: skip
        make_manifest(role=role, build_id=build_dir.name, image=image, duration_s=99.5).write(
            build_dir
        )
        return build_dir

    monkeypatch.setattr(dib, "build", fake_build)
    monkeypatch.setattr(host, "ensure_requirements", lambda needs, install: [])
    monkeypatch.setattr(cli, "_begin", lambda config, cloud=None: None)
    path = write_config(
        f"ssh_keys: ['{{key}}']\noutput_dir: {tmp_path / 'out'}\ncache_dir: {tmp_path / 'c'}\n"
    )
    assert main(["--config", str(path), "build", "web", "dns", "lb", "-f", "json"]) == 1
    captured = capsys.readouterr()
    web, lb = json.loads(captured.out)
    assert web["role"] == "web" and lb["role"] == "lb"
    assert web["build_id"] == "20261202T010000Z" and web["status"] == "built"
    assert web["image"] == str(tmp_path / "out/web/20261202T010000Z/web.qcow2")
    assert web["sha256"] == "ab" * 32 and web["size_bytes"] == 3 << 20
    assert web["duration_s"] == 99.5 and web["tested"] is False
    assert "build of 'dns' failed" in captured.err and "1 of 3 builds failed" in captured.err
    # The table: the image paths alone, one per line.
    assert main(["--config", str(path), "build", "lb"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'out/lb/20261202T010000Z/lb.qcow2'}\n"


def _documented_fields() -> dict[str, list[str]]:
    """The README's table of each command's -f json fields."""
    readme = (CHECKOUT / "README.md").read_text()
    table = readme[readme.index("| command | one element per | fields |") :].split("\n\n")[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {row[0].strip("| `"): re.findall(r"`(\w+)`", row[2]) for row in rows}


def test_the_readme_names_every_field_of_every_json_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documented = _documented_fields()

    def fields(cls: Any) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    assert documented["test"] == ["role", "build_id", *SuiteResult.model_fields]
    assert documented["publish"] == ["cloud", "dry_run", *fields(PublishResult)]
    assert documented["builds"] == fields(BuildSummary)
    assert documented["build"] == [*fields(BuildSummary), "image", "sha256", "duration_s"]
    assert documented["site test"] == [*SiteTestRecord.model_fields, "checks"]
    assert documented["diff"] == [*fields(Changes), "summary"]
    assert documented["verify"] == [*fields(Provenance), "ok"]
    assert documented["doctor"] == fields(Check)
    image = SimpleNamespace(
        properties={}, created_at="t", status="active", visibility="private",
        is_hidden=False, id="i",
    )  # fmt: skip
    monkeypatch.setattr(rotation, "role_images", lambda conn, role: [image])
    assert documented["images"] == list(cli._image_rows(SimpleNamespace(), "web")[0])  # type: ignore[arg-type]
    role_run = fields(RoleRun)
    at = role_run.index("stages") + 1
    nested = [*role_run[:at], *fields(Stage), *role_run[at:], "passed"]
    assert documented["pipeline"] == ["run_id", "cloud", "roles", *nested]
