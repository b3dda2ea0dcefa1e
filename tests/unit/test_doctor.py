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
