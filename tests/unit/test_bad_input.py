"""Every class of bad input: exit status 2, one line naming what and where, nothing created."""

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.cli import main
from imagekit.manifest import MANIFEST, ImageFile, SuiteResult
from imagekit.roles import CHECKOUT
from tests.signingkeys import make_signing_pair
from tests.unit.manifests import make_manifest

WriteConfig = Callable[[str], Path]
EXAMPLES = CHECKOUT / "cloud-init" / "examples"
BUILD_ID = "20260101T000000Z"


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], lines[0]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def config(write_config: WriteConfig) -> Path:
    return write_config("ssh_keys: [{key}]\n")


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("ssh_keys: [{key}]\nrelease: bookworm\nrelease: trixie\n", ":3:", "key 'release'"),
        (
            "ssh_keys: [{key}]\nmirrors:\n  main: http://a/d\n  main: http://b/d\n",
            ":4:",
            "key 'main'",
        ),
    ],
)
def test_config_duplicate_keys(
    capsys: pytest.CaptureFixture[str],
    write_config: WriteConfig,
    text: str,
    where: str,
    problem: str,
) -> None:
    path = write_config(text)
    before = _tree(path.parent)
    _refused(capsys, ["--config", str(path), "build", "web"], f"{path}{where}", problem)
    assert _tree(path.parent) == before


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "not a UTF-8 text file"),
        (b"ssh_keys: []\n\x00\x01", "binary"),
    ],
)
def test_binary_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes, problem: str
) -> None:
    path = tmp_path / "imagekit.yaml"
    path.write_bytes(data)
    _refused(capsys, ["--config", str(path), "build", "web"], str(path), problem)
    assert _tree(tmp_path) == {path}


@pytest.mark.parametrize("key", ["cache_dir", "output_dir"])
@pytest.mark.parametrize("command", [["cleanup"], ["build", "web"], ["builds"]])
def test_a_config_directory_that_is_a_file(
    capsys: pytest.CaptureFixture[str], write_config: WriteConfig, key: str, command: list[str]
) -> None:
    path = write_config(f"ssh_keys: [{{key}}]\n{key}: not-a-dir/sub\n")
    (path.parent / "not-a-dir").write_text("a file\n")
    before = _tree(path.parent)
    argv = ["--config", str(path), *command]
    _refused(capsys, argv, str(path), key, f"{path.parent / 'not-a-dir'} is not a directory")
    assert _tree(path.parent) == before


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"hostname: web1\nhostname: web2\n", "duplicate key 'hostname'"),
        (b"hostname: web1\n\xff\xfe\n", "not a UTF-8 text file"),
    ],
)
def test_bad_values_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes, problem: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_bytes(data)
    output = tmp_path / "out.yaml"
    argv = ["userdata", "web", "--values", str(EXAMPLES / "web.yaml"), "--values", str(values)]
    _refused(capsys, [*argv, "--output", str(output)], str(values), problem)
    assert not output.exists()


def test_duplicate_key_in_a_set_value(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["userdata", "dns", "--set", "records={a: 10.12.0.1, a: 10.12.0.2}"]
    _refused(capsys, argv, "--set records", "duplicate key 'a'")


@pytest.mark.parametrize("content", [None, b"", b"not an image at all", b"QFI"])
@pytest.mark.parametrize("option", ["--image", "--base"])
def test_image_that_is_not_a_qcow2(
    capsys: pytest.CaptureFixture[str], config: Path, content: bytes | None, option: str
) -> None:
    image = config.parent / "x.qcow2"
    if content is not None:
        image.write_bytes(content)
    before = _tree(config.parent)
    command = ["test", "web"] if option == "--image" else ["build", "web", "--with", "packer"]
    _refused(capsys, ["--config", str(config), *command, option, str(image)], option, str(image))
    assert _tree(config.parent) == before, "no key, seed, VM directory or build made"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cloud", "prod"], "--cloud goes with --with packer"),
        (["--with", "packer", "--cloud", "prod", "--base", "BASE"], "--base goes with a local"),
    ],
)
def test_cloud_builds_are_packer_builds_without_a_local_base(
    capsys: pytest.CaptureFixture[str], config: Path, options: list[str], message: str
) -> None:
    base = config.parent / "base.qcow2"
    base.write_bytes(b"QFI\xfb" + bytes(100))
    before = _tree(config.parent)
    argv = ["--config", str(config), "build", "web"]
    _refused(capsys, [*argv, *[str(base) if o == "BASE" else o for o in options]], message)
    assert _tree(config.parent) == before


def test_apt_proxy_is_a_plain_url(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    config.write_text(
        config.read_text()
        + "openstack: {flavor: f, network: n, apt_proxy: 'http://x:3142/;reboot'}\n"
    )
    _refused(capsys, ["--config", str(config), "build", "web"], "openstack.apt_proxy")


@pytest.mark.parametrize("build_id", ["../lb/20260101T000000Z", "/tmp", "20260101T000000Z/..", ""])
@pytest.mark.parametrize("command", [["test", "web"], ["publish", "web", "--cloud", "nowhere"]])
def test_build_id_with_path_characters(
    capsys: pytest.CaptureFixture[str], config: Path, build_id: str, command: list[str]
) -> None:
    # A real build of another role that a path could reach.
    (config.parent / "images" / "lb" / BUILD_ID).mkdir(parents=True)
    before = _tree(config.parent)
    _refused(capsys, ["--config", str(config), *command, "--build", build_id], "not a build id")
    assert _tree(config.parent) == before


def test_corrupt_manifest_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    build_dir = config.parent / "images" / "web" / BUILD_ID
    build_dir.mkdir(parents=True)
    (build_dir / MANIFEST).write_bytes(b'{"role": "web", "build_id": \xff')
    argv = ["--config", str(config), "test", "web", "--build", BUILD_ID]
    _refused(capsys, argv, str(build_dir / MANIFEST), "corrupt manifest")
    # `builds` lists the others and names the corrupt one on stderr.
    assert main(["--config", str(config), "builds"]) == 0
    out, err = capsys.readouterr()
    assert BUILD_ID not in out
    assert err.startswith("imagekit: warning: ") and str(build_dir / MANIFEST) in err


def _userdata(output: Path) -> list[str]:
    return ["userdata", "db", "--values", str(EXAMPLES / "db.yaml"), "--output", str(output)]


def test_userdata_output_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _refused(capsys, _userdata(tmp_path), str(tmp_path), "not a regular file")
    assert list(tmp_path.iterdir()) == []


def test_userdata_output_in_a_missing_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _refused(capsys, _userdata(tmp_path / "no" / "u.yaml"), str(tmp_path / "no"), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_userdata_output_symlink_is_never_followed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("someone else's\n")
    victim.chmod(0o644)
    link = tmp_path / "u.yaml"
    link.symlink_to(victim)
    _refused(capsys, _userdata(link), str(link), "symlink")
    assert victim.read_text() == "someone else's\n"
    assert victim.stat().st_mode & 0o777 == 0o644, "what is not ours is never chmod-ed"
    assert link.is_symlink() and set(tmp_path.iterdir()) == {victim, link}


def test_userdata_output_replaces_a_file_with_a_private_one(tmp_path: Path) -> None:
    output = tmp_path / "u.yaml"
    output.write_text("old\n")
    output.chmod(0o644)
    assert main(_userdata(output)) == 0
    assert output.read_text().startswith("#cloud-config\n")
    assert output.stat().st_mode & 0o777 == 0o600
    assert set(tmp_path.iterdir()) == {output}, "no temp file left"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["userdata", "lb", "--list", "--set", "hostname=x"], "--list"),
        (["userdata", "lb", "--list", "--values", str(EXAMPLES / "lb.yaml")], "--list"),
        (["publish", "web", "--cloud", "c", "--share", ""], "--share"),
        (["publish", "web", "--cloud", "c", "--share", " alpha"], "--share"),
        (["devcloud", "down", "--as", "devcloud-alpha"], "--as"),
        (["devcloud", "up", "--as", "devcloud"], "--as"),
        (["devcloud", "down", "--compute"], "--compute"),
        (["devcloud", "env", "--compute"], "--compute"),
        (["devcloud", "ssh"], "SERVER"),
        (["devcloud", "up", "web-1"], "SERVER"),
        (["devcloud", "down", "--login", "admin"], "SERVER"),
        (["devcloud", "ssh", "--login", "admin"], "SERVER"),
        (["test", "web", "--cloud", "c", "--image", "web.qcow2"], "--image"),
    ],
)
def test_options_that_do_not_go_together(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    _refused(capsys, argv, problem)


@pytest.mark.parametrize(
    ("mirrors", "key"),
    [
        ("main: 'http://m.example/debian;touch /tmp/x'", "mirrors.main"),
        ("security: 'http://m.example/$(id)'", "mirrors.security"),
        ("main: 'http://m.example/debian bookworm'", "mirrors.main"),
        ("main: 'ftp://m.example/debian'", "mirrors.main"),
        ("image_main: 'file:///srv/mirror/debian'", "mirrors.image_main"),
        ("image_security: 'https://user:secret@m.example/debian-security'", "credentials"),
    ],
)
def test_bad_mirror_urls(
    capsys: pytest.CaptureFixture[str], write_config: WriteConfig, mirrors: str, key: str
) -> None:
    path = write_config(f"ssh_keys: [{{key}}]\nmirrors:\n  {mirrors}\n")
    before = _tree(path.parent)
    _refused(capsys, ["--config", str(path), "build", "web"], str(path), key)
    assert _tree(path.parent) == before


@pytest.mark.parametrize("problem", ["mismatch", "expired", "missing"])
def test_bad_signing_files_stop_publish_before_any_cloud(
    capsys: pytest.CaptureFixture[str], write_config: WriteConfig, tmp_path: Path, problem: str
) -> None:
    key, _ = make_signing_pair(tmp_path, "mine")
    _, other = make_signing_pair(tmp_path, "other")
    _, expired = make_signing_pair(tmp_path, "old", expired=True)
    certificate = {"mismatch": other, "expired": expired, "missing": tmp_path / "nope.pem"}
    path = write_config(
        f"ssh_keys: [{{key}}]\npublish: {{signing: {{key: {key}, certificate: "
        f"{certificate[problem]}}}}}\n"
    )
    build_dir = path.parent / "images" / "web" / BUILD_ID
    build_dir.mkdir(parents=True)
    image = ImageFile(
        file="web.qcow2", format="qcow2", size_bytes=1, virtual_size_bytes=1, sha256="0"
    )
    tested = SuiteResult(when="t", passed=True, tests=1)
    make_manifest(build_id=BUILD_ID, image=image, tests=[tested]).write(build_dir)
    expected = {"mismatch": "not the certificate of", "expired": "valid only from",
                "missing": "no such file"}[problem]  # fmt: skip
    # An unknown cloud would be exit 2 too, but later: the signing files come first.
    argv = ["--config", str(path), "publish", "web", "--cloud", "nowhere-cloud"]
    _refused(capsys, argv, expected)
