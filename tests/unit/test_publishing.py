"""Publishing logic that needs no cloud: Glance attributes, rotation plans, error classes."""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions

from imagekit import runs
from imagekit.config import load_config
from imagekit.manifest import ImageFile, Manifest, Source
from imagekit.publishing import upload
from imagekit.publishing.attributes import image_attributes
from imagekit.publishing.rotation import plan
from imagekit.publishing.upload import is_transient
from tests.unit.manifests import make_manifest

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def _manifest() -> Manifest:
    return make_manifest(
        build_id="20261124T133811Z",
        created="2026-11-24T13:38:11Z",
        source=Source(commit="abc123", dirty=True),
        image=ImageFile(
            file="web.qcow2",
            format="qcow2",
            size_bytes=190 << 20,
            virtual_size_bytes=1305280512,
            sha256="ab" * 32,
        ),
    )


def test_conventional_properties(write_config: Callable[[str], Path]) -> None:
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    attributes = image_attributes(config, _manifest(), forced=False, md5="cd" * 16)
    assert attributes["name"] == "imagekit-web-20261124T133811Z"
    # As openstacksdk's own uploads carry them.
    assert attributes["owner_specified.openstack.md5"] == "cd" * 16
    assert attributes["owner_specified.openstack.sha256"] == "ab" * 32
    assert attributes["owner_specified.openstack.object"] == "images/imagekit-web-20261124T133811Z"
    assert (attributes["disk_format"], attributes["container_format"]) == ("qcow2", "bare")
    assert attributes["os_distro"] == "debian" and attributes["os_version"] == "12"
    assert attributes["architecture"] == "x86_64"
    assert attributes["hw_disk_bus"] == attributes["hw_vif_model"] == "virtio"
    assert attributes["min_disk"] == 2 and attributes["min_ram"] == 512
    assert attributes["os_admin_user"] == "admin"
    assert attributes["image_build_date"] == "2026-11-24T13:38:11Z"
    assert attributes["imagekit_source"] == "abc123-dirty"
    assert attributes["imagekit_role"] == "web"
    assert attributes["imagekit_build_id"] == "20261124T133811Z"
    assert attributes["tags"] == ["imagekit", "imagekit-role-web"]
    assert attributes["visibility"] == "private"
    assert "imagekit_warning" not in attributes
    assert "imagekit_warning" in image_attributes(config, _manifest(), forced=True, md5="")
    assert "imagekit_sbom_sha256" not in attributes  # a build from before SBOMs
    with_sbom = _manifest().model_copy(update={"sbom_sha256": "ef" * 32})
    assert image_attributes(config, with_sbom, False, "")["imagekit_sbom_sha256"] == "ef" * 32


def test_name_format_is_validated(write_config: Callable[[str], Path]) -> None:
    from imagekit.errors import UserError

    with pytest.raises(UserError, match=r"publish\.name_format"):
        load_config(
            write_config(
                "ssh_keys: [{key}]\npublish: {name_format: 'golden-{flavour}-{build_id}'}\n"
            )
        )


def _image(n: int, days_old: int, hidden: bool = False) -> SimpleNamespace:
    created = datetime.fromtimestamp(NOW.timestamp() - days_old * 86400, UTC)
    return SimpleNamespace(
        id=f"img{n}", created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ"), is_hidden=hidden
    )


def test_rotation_keeps_newest_hides_older_deletes_old() -> None:
    images = [_image(5, 0), _image(4, 1), _image(3, 2), _image(2, 10), _image(1, 40, hidden=True)]
    result = plan(images, current="img5", keep=3, delete_after_days=30, now=NOW)
    assert result.keep == ["img5", "img4", "img3"]
    assert result.hide == ["img2"]
    assert result.delete == ["img1"]


def test_rotation_shows_a_hidden_image_that_is_among_the_newest_again() -> None:
    images = [_image(2, 0), _image(1, 5, hidden=True)]
    assert plan(images, current="img2", keep=2, delete_after_days=30, now=NOW).unhide == ["img1"]


def test_rotation_never_deletes_the_current_image() -> None:
    images = [_image(2, 0), _image(1, 90)]
    result = plan(images, current="img1", keep=1, delete_after_days=30, now=NOW)
    assert "img1" in result.keep and result.delete == []


def _http(status: int) -> Exception:
    return os_exceptions.HttpException(message="x", http_status=status)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status: int) -> None:
    assert is_transient(_http(status))


@pytest.mark.parametrize("status", [401, 403, 404, 409, 413, 415])
def test_client_errors_are_not(status: int) -> None:
    assert not is_transient(_http(status))


def test_reset_connections_are_retried() -> None:
    assert is_transient(ks_exceptions.ConnectFailure("reset"))
    assert is_transient(ConnectionResetError())


def test_a_cut_uploads_image_is_deleted_even_if_glance_refuses_at_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Glance on SQLite answered a DELETE right after a cut upload with a 500 (database
    locked) while it was still failing the upload: the half image must still go."""

    class Images:
        api_version = "2"

        def __init__(self, refusals: int) -> None:
            self.refusals = refusals
            self.calls: list[tuple[str, bool]] = []

        def delete_image(self, image_id: str, ignore_missing: bool) -> None:
            self.calls.append((image_id, ignore_missing))
            if len(self.calls) <= self.refusals:
                raise os_exceptions.HttpException(message="database is locked", http_status=500)

    monkeypatch.setattr("imagekit.publishing.upload.time.sleep", lambda seconds: None)
    images = Images(refusals=2)
    upload.delete_quietly(SimpleNamespace(image=images), "img-1")  # type: ignore[arg-type]
    assert images.calls == [("img-1", True)] * 3
    run = runs.start(tmp_path)
    assert not run.unfinished
    stubborn = Images(refusals=99)  # gives up quietly after its attempts (cleanup finishes)
    upload.delete_quietly(SimpleNamespace(image=stubborn), "img-2", 4)  # type: ignore[arg-type]
    assert stubborn.calls == [("img-2", True)] * 4
    assert run.unfinished, "the run's record stays for `imagekit cleanup`"
    runs.end()
