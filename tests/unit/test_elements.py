"""Element assembly: DIB house style, and the disk-image-create call a build makes."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.builders import dib
from imagekit.config import load_config
from imagekit.errors import UserError
from imagekit.roles import ELEMENTS_DIR, ROLES, resolve_roles, role_element

ELEMENTS = sorted(p for p in ELEMENTS_DIR.iterdir() if p.is_dir())
SCRIPTS = sorted(
    s
    for e in ELEMENTS
    for phase in e.glob("*.d")
    if phase.name != "environment.d"
    for s in phase.iterdir()
)


def test_every_role_has_an_element_on_the_base() -> None:
    for role in ROLES:
        element = ELEMENTS_DIR / role_element(role)
        assert "imagekit-base" in (element / "element-deps").read_text().split()
        assert (element / "package-installs.yaml").is_file()


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda p: p.name)
def test_element_house_style(element: Path) -> None:
    assert (element / "README.rst").is_file()
    assert (element / "element-deps").is_file()
    assert (element / "package-installs.yaml").is_file()


@pytest.mark.parametrize(
    "script", SCRIPTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
)
def test_phase_scripts(script: Path) -> None:
    assert script.name[:2].isdigit(), "phase scripts are numbered"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -eux -o pipefail" in lines


def test_resolve_roles() -> None:
    assert resolve_roles(["all"]) == list(ROLES)
    assert resolve_roles(["web", "lb", "web"]) == ["web", "lb"]
    with pytest.raises(UserError):
        resolve_roles([])


def test_disk_image_create_call(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    config = load_config(
        write_config(
            "ssh_keys: [{key}]\npackages: [curl]\nroles:\n  db: {packages: [mariadb-backup]}\n"
            "mirrors: {main: 'http://m.test/debian', security: 'http://m.test/debian-security'}\n"
        )
    )
    cmd = dib.command(config, "db", tmp_path)
    assert cmd[:5] == ["disk-image-create", "-a", "amd64", "-t", "qcow2"]
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "db")
    assert cmd[cmd.index("-p") + 1] == "curl,mariadb-backup"
    assert cmd[-3:] == ["debian-minimal", "vm", "imagekit-db"]

    env = dib.environment(config, tmp_path / "tmp")
    assert env["DIB_DISTRIBUTION_MIRROR"] == "http://m.test/debian"
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://m.test/debian-security"
    assert env["DIB_IMAGEKIT_AUTHORIZED_KEYS"] == config.public_keys[0].line
    assert env["ELEMENTS_PATH"] == str(ELEMENTS_DIR)
    assert env["DIB_IMAGE_CACHE"] == str(config.cache_dir / "dib")
    assert env["TMPDIR"] == str(tmp_path / "tmp")
