"""Element assembly: DIB house style, and the disk-image-create call a build makes."""

import os
import shutil
import subprocess
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


def test_every_role_has_an_element_on_the_base_layer() -> None:
    for role in ROLES:
        element = ELEMENTS_DIR / role_element(role)
        assert "imagekit-layer" in (element / "element-deps").read_text().split()
        assert (element / "package-installs.yaml").is_file()


def test_the_base_and_every_image_are_finished_alike() -> None:
    """imagekit-finish (package list, apt sources, clean-up) runs on the base image and on
    every role image; the base's own phases run once, into the layer."""
    for element in ("imagekit-base", "imagekit-layer"):
        assert "imagekit-finish" in (ELEMENTS_DIR / element / "element-deps").read_text().split()
    assert not list((ELEMENTS_DIR / "imagekit-base").glob("finalise.d/*"))


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda p: p.name)
def test_element_house_style(element: Path) -> None:
    assert (element / "README.rst").is_file()
    assert (element / "element-deps").is_file()


@pytest.mark.parametrize(
    "script", SCRIPTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
)
def test_phase_scripts(script: Path) -> None:
    assert script.name[:2].isdigit(), "phase scripts are numbered"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -eux -o pipefail" in lines


def test_the_configured_compression_reaches_qemu_img(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = load_config(write_config("ssh_keys: [{key}]\nimage_compression: zstd\n"))
    cmd = dib.command(config, "web", tmp_path)
    assert cmd[cmd.index("--qemu-img-options") + 1] == "compression_type=zstd"


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
    assert cmd[:6] == ["disk-image-create", "-n", "-a", "amd64", "-t", "qcow2"]
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "db")
    assert cmd[cmd.index("--qemu-img-options") + 1] == "compression_type=zlib"  # the default
    # The shared packages are in the base layer; a role build adds only its own.
    assert cmd[cmd.index("-p") + 1] == "mariadb-backup"
    assert cmd[-2:] == ["vm", "imagekit-db"]
    base = dib.command(config, dib.BASE, tmp_path)
    assert base[base.index("-p") + 1] == "curl"
    assert base[-3:] == ["debian-minimal", "vm", "imagekit-base"]
    assert "-p" not in dib.command(config, "web", tmp_path)

    env = dib.environment(config, tmp_path / "tmp")
    assert env["DIB_DISTRIBUTION_MIRROR"] == "http://m.test/debian"
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://m.test/debian-security"
    assert env["DIB_IMAGEKIT_AUTHORIZED_KEYS"] == config.public_keys[0].line
    assert env["ELEMENTS_PATH"] == str(ELEMENTS_DIR)
    assert env["DIB_IMAGE_CACHE"] == str(config.cache_dir / "dib")
    assert env["TMPDIR"] == str(tmp_path / "tmp")
    # The image keeps the public archive as its apt sources, not the build mirrors.
    assert env["DIB_IMAGEKIT_APT_MAIN"] == "http://deb.debian.org/debian"
    assert env["DIB_IMAGEKIT_APT_SECURITY"] == "http://security.debian.org/debian-security"


def test_image_apt_sources_replace_the_build_mirrors(tmp_path: Path) -> None:
    """The finalise script, run for real on a private copy of /etc/apt (a mount namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    etc_apt = tmp_path / "apt"
    (etc_apt / "sources.list.d").mkdir(parents=True)
    (etc_apt / "sources.list.d" / "default.list").write_text("deb file:///srv/m bookworm main\n")
    (etc_apt / "sources.list.d" / "vendor.list").write_text("deb http://v.test/apt stable main\n")
    script = ELEMENTS_DIR / "imagekit-finish" / "finalise.d" / "90-imagekit-apt-sources"
    env = {
        "PATH": os.environ["PATH"],
        "DIB_RELEASE": "bookworm",
        "DIB_IMAGEKIT_APT_MAIN": "http://deb.debian.org/debian",
        "DIB_IMAGEKIT_APT_SECURITY": "https://sec.test/debian-security",
    }
    subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount --bind "$0" /etc/apt && exec "$1"',
            etc_apt,
            script,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert (etc_apt / "sources.list").read_text() == (
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm-updates main\n"
        "deb https://sec.test/debian-security bookworm-security main\n"
    )
    assert sorted(p.name for p in (etc_apt / "sources.list.d").iterdir()) == ["vendor.list"]


def test_imagekit_installed_names_only_installed_packages() -> None:
    """imagekit-base's bin/imagekit-installed, run against this host's dpkg database."""
    if not shutil.which("dpkg-query"):
        pytest.skip("needs dpkg")
    helper = ELEMENTS_DIR / "imagekit-base" / "bin" / "imagekit-installed"

    def installed(*names: str) -> list[str]:
        out = subprocess.run([helper, *names], capture_output=True, text=True, check=True).stdout
        return out.split()

    assert installed("dpkg", "no-such-package-here") == ["dpkg"]
    assert installed("no-such-package-here") == []
    assert "dpkg" in installed("dpk*")


def test_imagekit_sysprep_removes_what_a_booted_build_vm_left(tmp_path: Path) -> None:
    """imagekit-finish's bin/imagekit-sysprep, on a tree laid out like a Packer build VM's
    root at its shutdown: its run's files go, the image's own stay."""
    run_files = [
        "var/lib/systemd/random-seed",
        "var/log/journal/8b587e883fbc4c36a05aba695d7ad2b3/system.journal",
        "var/lib/systemd/timers/stamp-phpsessionclean.timer",
        "var/lib/systemd/timesync/clock",
        "var/lib/dhcp/dhclient.ens3.leases",
        "etc/udev/rules.d/70-persistent-net.rules",
        "etc/network/interfaces.d/50-cloud-init",
        "etc/sudoers.d/90-cloud-init-users",
        "home/admin/.sudo_as_admin_successful",
    ]
    kept = ["etc/udev/rules.d/80-local.rules", "etc/sudoers.d/README", "home/admin/.profile"]
    for name in run_files + kept + ["var/log/wtmp", "var/log/btmp", "var/log/lastlog"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("from the build VM\n")
    (tmp_path / "etc/hostname").write_text("packer-web\n")
    (tmp_path / "etc/hosts").write_text("127.0.1.1 packer-web packer-web\n127.0.0.1 localhost\n")
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n')

    script = ELEMENTS_DIR / "imagekit-finish" / "bin" / "imagekit-sysprep"
    subprocess.run([script, str(tmp_path)], capture_output=True, check=True)

    assert [n for n in run_files if (tmp_path / n).exists()] == []
    assert (tmp_path / "var/log/journal").is_dir(), "journald's persistent storage stays on"
    assert all((tmp_path / n).is_file() for n in kept)
    assert all((tmp_path / "var/log" / n).stat().st_size == 0 for n in ("wtmp", "btmp", "lastlog"))
    assert (tmp_path / "etc/hostname").read_text() == "debian\n"
    hosts = (tmp_path / "etc/hosts").read_text()
    assert "packer" not in hosts and "127.0.0.1\tlocalhost" in hosts
