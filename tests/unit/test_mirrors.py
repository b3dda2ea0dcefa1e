from pathlib import Path

import pytest

from imagekit.errors import UserError
from imagekit.mirrors import host_debian_mirrors

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _host(tmp_path: Path, codename: str = "bookworm") -> tuple[Path, Path]:
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    os_release = tmp_path / "os-release"
    os_release.write_text(f'NAME="Debian"\nVERSION_CODENAME={codename}\n')
    return tmp_path / "apt", os_release


def test_deb822_sources(tmp_path: Path) -> None:
    apt, os_release = _host(tmp_path)
    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    (apt / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: stable\n"
    )
    assert host_debian_mirrors(apt, os_release) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    apt, os_release = _host(tmp_path)
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n"
        "deb http://m.example/debian-security bookworm-security main\n"
    )
    assert host_debian_mirrors(apt, os_release) == (
        "http://m.example/debian",
        "http://m.example/debian-security",
    )


def test_not_found_on_other_hosts(tmp_path: Path) -> None:
    apt, os_release = _host(tmp_path, codename="noble")
    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert host_debian_mirrors(apt, os_release) == (None, None)


@pytest.mark.parametrize(
    "uri", ["http://m.example/debian;reboot", "http://m.example/$(id)", "cdrom:[Debian]/"]
)
def test_host_mirror_with_shell_characters_is_refused(tmp_path: Path, uri: str) -> None:
    apt, os_release = _host(tmp_path)
    (apt / "sources.list").write_text(f"deb {uri} bookworm main\n")
    with pytest.raises(UserError) as refused:
        host_debian_mirrors(apt, os_release)
    assert str(refused.value).startswith(f"{apt / 'sources.list'}: mirror ")
    assert "\n" not in str(refused.value)
