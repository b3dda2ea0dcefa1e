"""The shared base layer: keyed by every input, built once, never half there."""

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.builders import layer
from imagekit.config import Config, load_config
from imagekit.errors import UserError
from imagekit.locking import Lock
from imagekit.store import Build

RELEASE_SUITES = ("bookworm", "bookworm-updates")


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A file:// mirror with the three InRelease files a bookworm build reads."""
    root = tmp_path / "mirror"
    for suite in (*RELEASE_SUITES, "bookworm-security"):
        (root / "dists" / suite).mkdir(parents=True)
        (root / "dists" / suite / "InRelease").write_text(f"Suite: {suite}\nDate: day 1\n")
    return root


@pytest.fixture
def config(write_config: Callable[[str], Path], mirror: Path, tmp_path: Path) -> Config:
    return load_config(
        write_config(
            "ssh_keys: [{key}]\npackages: [curl]\n"
            f"mirrors: {{main: 'file://{mirror}', security: 'file://{mirror}'}}\n"
            f"cache_dir: {tmp_path / 'cache'}\noutput_dir: {tmp_path / 'images'}\n"
        )
    )


class FakeBase:
    """A base build: what crosses into layer.ensure is the tar path it must fill."""

    def __init__(self, config: Config, fail: bool = False) -> None:
        self.config, self.fail = config, fail
        self.asked: list[Path] = []

    def __call__(self, tar: Path) -> Path:
        self.asked.append(tar)
        tar.write_bytes(b"half a layer")
        if self.fail:
            raise KeyboardInterrupt
        build = Build("base", self.config.output_dir / "base" / f"2026000{len(self.asked)}")
        build.dir.mkdir(parents=True)
        build.image.write_bytes(b"qcow2")
        return build.dir


def test_built_once_then_found(config: Config) -> None:
    base = FakeBase(config)
    first = layer.ensure(config, base)
    assert layer.ensure(config, base) == first
    assert len(base.asked) == 1
    assert base.asked[0] == layer.layers_dir(config) / f"{first.record.key}.tar.part"
    assert first.tar == layer.layers_dir(config) / f"{first.record.key}.tar"
    assert first.tar.read_bytes() == b"half a layer" and not base.asked[0].exists()
    assert first.base.image.is_file()
    assert first.record.inputs["packages"] == "curl"


def test_a_new_package_index_means_a_new_base(config: Config, mirror: Path) -> None:
    base = FakeBase(config)
    first = layer.ensure(config, base)
    (mirror / "dists" / "bookworm-security" / "InRelease").write_text("Date: day 2\n")
    second = layer.ensure(config, base)
    assert second.record.key != first.record.key
    changed = {k for k in first.record.inputs if first.record.inputs[k] != second.record.inputs[k]}
    assert changed == {"index bookworm-security"}
    assert len(base.asked) == 2


def test_config_that_reaches_the_base_is_in_the_key(config: Config) -> None:
    same = layer.key_of(layer.inputs(config))
    assert layer.key_of(layer.inputs(config)) == same
    more = config.model_copy(update={"packages": ["curl", "less"]})
    assert layer.key_of(layer.inputs(more)) != same
    # A role's own packages are not the base's: they do not make a new base.
    roles = config.model_copy(update={"roles": {}})
    assert layer.key_of(layer.inputs(roles)) == same


def test_an_interrupted_base_build_leaves_no_layer(config: Config) -> None:
    with pytest.raises(KeyboardInterrupt):
        layer.ensure(config, FakeBase(config, fail=True))
    assert [p.name for p in layer.layers_dir(config).iterdir()] == [".lock"]
    # A .part that a killed build left is removed by the next one.
    stale = layer.layers_dir(config) / "0123456789abcdef.tar.part"
    stale.write_bytes(b"")
    layer.ensure(config, FakeBase(config))
    assert not stale.exists()


def test_a_layer_whose_base_image_is_gone_is_built_again(config: Config) -> None:
    base = FakeBase(config)
    first = layer.ensure(config, base)
    first.base.image.unlink()
    assert layer.ensure(config, base).base.image.is_file()
    assert len(base.asked) == 2


def test_an_unreachable_index_is_one_clear_error(config: Config, mirror: Path) -> None:
    (mirror / "dists" / "bookworm-updates" / "InRelease").unlink()
    with pytest.raises(UserError, match=r"cannot read the package index file://.*updates"):
        layer.ensure(config, FakeBase(config))


def test_old_layers_are_pruned(config: Config, mirror: Path) -> None:
    base = FakeBase(config)
    for day in range(layer.KEEP + 2):
        (mirror / "dists" / "bookworm" / "InRelease").write_text(f"Date: day {day}\n")
        layer.ensure(config, base)
    assert len(list(layer.layers_dir(config).glob("*.tar"))) == layer.KEEP
    assert len(list(layer.layers_dir(config).glob("*.json"))) == layer.KEEP


def test_cleanup_removes_what_a_killed_base_build_left(config: Config) -> None:
    folder = layer.layers_dir(config)
    folder.mkdir(parents=True)
    part = folder / "0123456789abcdef.tar.part"
    part.write_bytes(b"")
    with Lock(folder / ".lock", "a base build"):  # one is running: its .part is in use
        assert layer.remove_partial(config) == [] and part.exists()
    assert layer.remove_partial(config) == [f"removed the half-written layer {part}"]
    assert not part.exists()
