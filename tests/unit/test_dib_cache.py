"""DIB's shared cache: a debootstrap tarball cut short by an interrupted build is never used."""

import gzip
from pathlib import Path

from imagekit.builders.dib import check_debootstrap_cache


def test_a_truncated_tarball_is_removed_and_a_good_one_kept(tmp_path: Path) -> None:
    good = tmp_path / "debootstrap-debian-bookworm-amd64.tar.gz"
    good.write_bytes(gzip.compress(b"x" * 100_000))
    cut = tmp_path / "debootstrap-debian-trixie-amd64.tar.gz"
    cut.write_bytes(gzip.compress(bytes(range(256)) * 400)[:500])  # killed while writing

    assert check_debootstrap_cache(tmp_path) == [f"removed the truncated debootstrap cache {cut}"]
    assert good.exists() and not cut.exists()
    stamp = tmp_path / f"{good.name}.ok"
    assert stamp.read_text() == f"{good.stat().st_size} {good.stat().st_mtime_ns}\n"


def test_a_tarball_rewritten_after_its_check_is_checked_again(tmp_path: Path) -> None:
    tarball = tmp_path / "debootstrap-debian-bookworm-amd64.tar.gz"
    tarball.write_bytes(gzip.compress(b"x" * 100_000))
    assert check_debootstrap_cache(tmp_path) == []
    # A later build started rewriting it in place and was killed.
    tarball.write_bytes(gzip.compress(b"y" * 100_000)[:40])
    assert check_debootstrap_cache(tmp_path) == [
        f"removed the truncated debootstrap cache {tarball}"
    ]
    assert not tarball.exists()
