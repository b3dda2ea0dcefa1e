"""The CLI's contract: one line and exit status 2 for bad input, --help everywhere."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagekit import cli, doctor
from imagekit.cli import main
from imagekit.publishing import rotation, sharing

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
