"""`imagekit doctor`: each check once, and the free space a pipeline needs."""

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit import doctor, host


def test_each_tool_is_checked_once() -> None:
    commands = [r.command for r in doctor.ALL_REQUIREMENTS]
    assert len(commands) == len(set(commands))


def test_free_space_below_what_a_pipeline_needs_is_an_error(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        "ssh_keys: [{key}]\nmirrors: {main: 'http://m/debian', security: 'http://m/s'}\n"
    )
    monkeypatch.setattr(host, "free_gib", lambda directory: 3.0)
    disks = {c.name: c for c in doctor.checks(path) if c.name.startswith("disk ")}
    assert disks["disk output_dir"].status == "ok"  # needs 2 GiB
    assert disks["disk cache_dir"].status == "error"  # needs 4 GiB
    assert "3.0 GiB free" in disks["disk cache_dir"].detail


def test_free_space_of_a_directory_not_made_yet(tmp_path: Path) -> None:
    assert host.free_gib(tmp_path / "not" / "yet") == host.free_gib(tmp_path) > 0


def test_each_cloud_is_tried_and_a_dead_one_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = host.free_ports(1)[0]  # nothing listens there
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  gone:\n    auth:\n"
        f"      auth_url: http://127.0.0.1:{port}/v3\n"
        "      username: u\n      password: s3cret-pw\n      project_name: x\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    found = {c.name: c for c in doctor.cloud_checks(timeout=5)}
    assert found["clouds.yaml"].status == "ok"
    assert found["cloud gone"].status == "warning"
    assert found["cloud gone"].detail.startswith("unreachable: ")
    assert "s3cret-pw" not in found["cloud gone"].detail
