from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import DEFAULT_CONFIG, find_config, load_config
from imagekit.errors import UserError

WriteConfig = Callable[[str], Path]


def test_shipped_example_config_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config.release == "bookworm"
    assert config.public_keys, "the example bakes at least one key"


def test_defaults_and_relative_paths(write_config: WriteConfig) -> None:
    path = write_config("ssh_keys: [{key}]\noutput_dir: out\n")
    config = load_config(path)
    assert config.distribution == "debian"
    assert config.admin_user == "admin"
    assert config.output_dir == path.parent / "out"
    assert config.cache_dir == path.parent / "cache"


def test_role_packages_merge_shared_first_without_repeats(write_config: WriteConfig) -> None:
    config = load_config(
        write_config(
            "ssh_keys: [{key}]\npackages: [curl, less]\n"
            "roles:\n  web:\n    packages: [less, php-mysql]\n"
        )
    )
    assert config.role_packages("web") == ["curl", "less", "php-mysql"]
    assert config.role_packages("db") == ["curl", "less"]


def test_inline_and_file_keys(write_config: WriteConfig, public_key: Path) -> None:
    inline = public_key.read_text().strip()
    config = load_config(write_config(f"ssh_keys:\n  - {{key}}\n  - '{inline}'\n"))
    assert len(config.public_keys) == 2
    assert config.public_keys[0].line == inline


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh_keys: [{key}]\ncolour: blue\n", "imagekit.yaml: colour: unknown key"),
        ("ssh_keys: [{key}]\nroles:\n  mail: {}\n", "roles.mail"),
        ("ssh_keys: [{key}]\nroles:\n  web:\n    pkgs: []\n", "roles.web.pkgs: unknown key"),
        ("ssh_keys: [{key}]\npackages: ['Bad Name']\n", "packages[0]"),
        ("ssh_keys: [{key}]\nadmin_user: root\n", "admin_user: the admin user may not be root"),
        ("ssh_keys: [{key}]\ndistribution: fedora\n", "distribution"),
        ("ssh_keys: [{key}]\nimage_compression: xz\n", "image_compression: Input should be 'zlib'"),
        ("release: bookworm\n", "ssh_keys: required key is missing"),
        ("ssh_keys: [missing.pub]\n", "ssh_keys[0]: key file not found"),
        ("ssh_keys: ['ssh-ed25519 AAAA!!!']\n", "ssh_keys[0]: inline key: line 1: key data"),
        ("- just\n- a list\n", "must be a mapping"),
        ("ssh_keys: [{key}\nrelease: x\n", "imagekit.yaml:2:"),
    ],
)
def test_bad_config_is_one_line_naming_the_place(
    write_config: WriteConfig, text: str, expected: str
) -> None:
    with pytest.raises(UserError) as caught:
        load_config(write_config(text))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_private_key_is_refused(write_config: WriteConfig, public_key: Path) -> None:
    private = public_key.with_suffix("")
    with pytest.raises(UserError, match="private key; give the public half"):
        load_config(write_config(f"ssh_keys: [{private}]\n"))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_mirrors_from_config_win_over_host(write_config: WriteConfig) -> None:
    config = load_config(
        write_config(
            "ssh_keys: [{key}]\nmirrors:\n  main: http://mirror.test/debian\n"
            "  security: http://mirror.test/debian-security\n"
        )
    )
    assert config.resolved_mirrors() == (
        "http://mirror.test/debian",
        "http://mirror.test/debian-security",
    )


def test_config_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    """--config, else $IMAGEKIT_CONFIG, else ./imagekit.yaml, else the checkout's."""
    monkeypatch.delenv("IMAGEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config() == DEFAULT_CONFIG
    here = write_config("ssh_keys: [{key}]\nadmin_user: here\n")  # tmp_path/imagekit.yaml
    assert here == tmp_path / "imagekit.yaml"
    assert load_config().admin_user == "here"
    named = tmp_path / "named.yaml"
    named.write_text(here.read_text().replace("here", "named"))
    monkeypatch.setenv("IMAGEKIT_CONFIG", str(named))
    assert load_config().admin_user == "named"
    assert find_config(DEFAULT_CONFIG) == DEFAULT_CONFIG, "--config wins"
