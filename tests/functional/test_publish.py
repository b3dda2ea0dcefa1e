"""`imagekit publish` against a real Keystone + Glance on 127.0.0.1 (the dev cloud)."""

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions as os_exceptions

from imagekit.clouds import glance
from imagekit.config import Config, PublishSettings, SigningSettings
from imagekit.devcloud import DevCloud
from imagekit.errors import ImagekitError
from imagekit.manifest import Manifest
from imagekit.publishing import rotation, sharing, signing, upload
from imagekit.publishing.publish import publish
from tests.signingkeys import make_signing_pair

Built = Callable[[str], Path]


pytestmark = pytest.mark.usefixtures("clouds_yaml")


def with_publish(config: Config, **settings: Any) -> Config:
    return config.model_copy(update={"publish": PublishSettings(**settings)})


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_publish_share_accept_and_download(
    devcloud: DevCloud, config: Config, tested_web: Path
) -> None:
    cfg = with_publish(
        config,
        name_format="pub-{role}-{build_id}",
        identity_cloud="devcloud-admin",
        members=["alpha"],
    )
    result = publish(cfg, "web", "devcloud", build_id=tested_web.name)
    assert result.uploaded and result.image_id
    alpha, beta = devcloud.connect("devcloud-alpha"), devcloud.connect("devcloud-beta")
    assert list(result.members.values()) == ["pending"]
    assert list(result.members) == [alpha.current_project_id]

    builder = glance(devcloud.connect("devcloud"))
    image = builder.get_image(result.image_id)
    assert image.visibility == "shared" and image.status == "active"
    record = builder.get(f"/images/{image.id}").json()  # every property, as Glance has it
    assert record["imagekit_role"] == "web"
    assert record["imagekit_build_id"] == tested_web.name
    assert record["os_distro"] == "debian" and record["os_version"] == "12"
    assert record["hw_disk_bus"] == "virtio" and record["os_admin_user"] == config.admin_user
    assert record["min_disk"] >= 1 and record["architecture"] == "x86_64"
    assert set(record["tags"]) == {"imagekit", "imagekit-role-web"}
    # The SDK's conventions: Glance's own md5 of what it stored matches ours.
    assert record["owner_specified.openstack.md5"] == record["checksum"]
    assert record["owner_specified.openstack.sha256"] == record["imagekit_sha256"]
    assert record["owner_specified.openstack.object"] == f"images/{image.name}"
    sbom = (tested_web / "sbom.cdx.json").read_bytes()
    assert record["imagekit_sbom_sha256"] == hashlib.sha256(sbom).hexdigest()
    assert Manifest.read(tested_web).publications[-1].image_id == image.id

    # Until it accepts, the member project does not see the image in its list.
    assert image.id not in {i.id for i in glance(alpha).images()}
    assert sharing.accept(alpha, image.id) == (image.id, "accepted")
    assert image.id in {i.id for i in glance(alpha).images()}
    downloaded = hashlib.sha512()
    for chunk in glance(alpha).download_image(image.id, stream=True).iter_content(1 << 20):
        downloaded.update(chunk)
    assert downloaded.hexdigest() == sha512(tested_web / "web.qcow2") == image.hash_value

    # The member checks what it got: the bytes, and who built it from which commit.
    checked = run(config, "verify", image.name, "--cloud", "devcloud-alpha", "-f", "json")
    assert checked.returncode == 0, checked.stderr
    found = json.loads(checked.stdout)
    assert found["ok"] and found["image_id"] == image.id
    assert (found["build_id"], found["source"]) == (tested_web.name, record["imagekit_source"])
    assert found["sbom_sha256"] == record["imagekit_sbom_sha256"]
    assert f"[verify {image.name} " in checked.stderr and "] downloading" in checked.stderr

    with pytest.raises(os_exceptions.NotFoundException):
        glance(beta).get_image(image.id)
    assert image.id not in {i.id for i in glance(beta).images()}

    again = publish(cfg, "web", "devcloud", build_id=tested_web.name)
    assert not again.uploaded and again.image_id == image.id, "a second publish is a no-op"


def test_rotation_keeps_the_newest_and_hides_the_rest(
    devcloud: DevCloud, config: Config, tested_web: Path
) -> None:
    """Four published builds of the role, keep 2: the two oldest are hidden."""
    cfg = with_publish(config, name_format="rot-{role}-{build_id}", keep=2)
    # Three more builds of the same image, made by copying the build; named as a second
    # build in the same second would be (a build id, never a path).
    copies = [tested_web.parent / f"{tested_web.name}-{n}" for n in (1, 2, 3)]
    for copy in copies:
        shutil.copytree(tested_web, copy, dirs_exist_ok=True)
        manifest = Manifest.read(copy)
        manifest.build_id = copy.name
        manifest.write(copy)
    for build in [tested_web, *copies]:
        assert publish(cfg, "web", "devcloud", build_id=build.name).image_id
    # Every image of the role in the project counts, whoever published it: the newest two
    # (by build id) stay visible, all older ones are hidden (none is old enough to delete).
    images = rotation.role_images(devcloud.connect("devcloud"), "web")
    assert len(images) >= 4
    assert [i.is_hidden for i in images[:2]] == [False, False]
    assert all(i.is_hidden for i in images[2:])
    for copy in copies:
        shutil.rmtree(copy)


def test_interrupted_upload_leaves_no_image(
    devcloud: DevCloud, config: Config, tested_web: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_publish(config, name_format="cut-{role}-{build_id}")
    original = upload.HashingReader.read

    def cut_half_way(self: upload.HashingReader, size: int = -1) -> bytes:
        if self.size > len(self) // 2:  # as Ctrl-C would, half way
            raise KeyboardInterrupt
        return original(self, size)

    monkeypatch.setattr(upload.HashingReader, "read", cut_half_way)
    with pytest.raises(KeyboardInterrupt):
        publish(cfg, "web", "devcloud")
    builder = glance(devcloud.connect("devcloud"))
    assert [i.name for i in builder.images() if i.name.startswith("cut-")] == []


def test_a_wrong_checksum_is_caught_and_the_image_deleted(
    devcloud: DevCloud, config: Config, tested_web: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_publish(config, name_format="bad-{role}-{build_id}")
    original = upload.HashingReader.hashes

    def wrong(self: upload.HashingReader) -> upload.Hashes:
        hashes = original(self)
        hashes.sha512 = "0" * 128
        return hashes

    monkeypatch.setattr(upload.HashingReader, "hashes", wrong)
    with pytest.raises(ImagekitError, match="checksum mismatch"):
        publish(cfg, "web", "devcloud")
    builder = glance(devcloud.connect("devcloud"))
    assert [i.name for i in builder.images() if i.name.startswith("bad-")] == []


def run(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(config.source), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "web", "--cloud", "nope"], "--cloud nope:"),
        (
            ["publish", "web", "--cloud", "devcloud", "--share", "nosuchproject"],
            "project 'nosuchproject'",
        ),
        (
            ["publish", "db", "--cloud", "devcloud", "--build", "20000101T000000Z"],
            "no finished build",
        ),
        (["accept", "imagekit-web-x", "--cloud", "devcloud-beta"], "image 'imagekit-web-x'"),
    ],
)
def test_bad_input_is_one_line_and_uploads_nothing(
    devcloud: DevCloud, config: Config, tested_web: Path, args: list[str], message: str
) -> None:
    before = {i.id for i in glance(devcloud.connect("devcloud")).images()}
    result = run(config, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {i.id for i in glance(devcloud.connect("devcloud")).images()} == before


def test_verify_catches_an_image_that_is_not_what_was_built(
    devcloud: DevCloud, config: Config, tested_web: Path, tmp_path: Path
) -> None:
    """An image whose bytes differ from the build's record (tampered, or a look-alike)."""
    fake = tmp_path / "fake.qcow2"
    fake.write_bytes(b"not the image" * 1000)
    conn = devcloud.connect("devcloud")
    real_sha256 = Manifest.read(tested_web).image.sha256  # type: ignore[union-attr]
    attributes = {
        "name": "lookalike-web",
        "disk_format": "raw",
        "container_format": "bare",
        "imagekit_sha256": real_sha256,  # the record of the real build, other bytes
    }
    fake_sha256 = hashlib.sha256(fake.read_bytes()).hexdigest()
    image, _ = upload.create_and_upload(conn, fake, attributes, fake_sha256)
    try:
        result = run(config, "verify", "lookalike-web", "--cloud", "devcloud")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "sha256 vs the build's record:      MISMATCH" in result.stdout
        assert "NOT the image imagekit published" in result.stdout
        missing = run(config, "verify", "no-such-image", "--cloud", "devcloud")
        assert missing.returncode == 2 and "no active image 'no-such-image'" in missing.stderr
    finally:
        glance(conn).delete_image(image["id"])


def test_images_lists_the_role(devcloud: DevCloud, config: Config, tested_web: Path) -> None:
    result = run(config, "images", "web", "--cloud", "devcloud")
    assert result.returncode == 0, result.stderr
    assert tested_web.name in result.stdout and "<- current" in result.stdout


def test_an_untested_build_is_refused_unless_forced(
    make_config: Callable[..., Path], tested_web: Path, devcloud: DevCloud
) -> None:
    path = make_config("publish: {name_format: 'untested-{role}-{build_id}'}\n")
    copy = path.parent / "images" / "web" / tested_web.name
    shutil.copytree(tested_web, copy)
    manifest = Manifest.read(copy)
    manifest.tests = []
    manifest.write(copy)
    cmd = [sys.executable, "-m", "imagekit", "--config", str(path), "publish", "web"]
    refused = subprocess.run([*cmd, "--cloud", "devcloud"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "no tested build of 'web'" in refused.stderr
    forced = subprocess.run(
        [*cmd, "--cloud", "devcloud", "--force", "-f", "json"], capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    assert "warning: publishing untested build" in forced.stderr
    image_id = Manifest.read(copy).publications[-1].image_id
    # For programs: one JSON document on stdout, what the manifest recorded.
    (document,) = json.loads(forced.stdout)
    assert document["image_id"] == image_id and document["uploaded"] is True
    assert (document["role"], document["build_id"], document["cloud"]) == (
        "web",
        tested_web.name,
        "devcloud",
    )
    record = glance(devcloud.connect("devcloud")).get(f"/images/{image_id}").json()
    assert "no passing test recorded" in record["imagekit_warning"]


def test_a_signed_image_is_verified_by_glance_and_by_a_member(
    devcloud: DevCloud, config: Config, tested_web: Path, tmp_path: Path
) -> None:
    """Glance checks the signature as the data arrives (a wrong signature or tampered
    bytes are refused by Glance itself, nothing is left); `imagekit verify` checks it
    again, for the owner from the key manager, for a member with the certificate it was
    given."""
    key, cert = make_signing_pair(tmp_path)
    _, stranger = make_signing_pair(tmp_path, "stranger")
    signing_settings = SigningSettings.model_validate({"key": str(key), "certificate": str(cert)})
    cfg = with_publish(
        config,
        name_format="signed-{role}-{build_id}",
        identity_cloud="devcloud-admin",
        members=["alpha"],
        signing=signing_settings,
    )
    conn = devcloud.connect("devcloud")
    result = publish(cfg, "web", "devcloud", build_id=tested_web.name)
    try:
        assert result.uploaded and result.image_id
        record = glance(conn).get(f"/images/{result.image_id}").json()
        assert record["status"] == "active" and record["img_signature_key_type"] == "RSA-PSS"
        glance_log = (devcloud.logs / "glance.log").read_text()
        assert f"Successfully verified signature for image {result.image_id}" in glance_log

        owner = run(config, "verify", result.image_id, "--cloud", "devcloud", "-f", "json")
        assert owner.returncode == 0, owner.stderr
        assert json.loads(owner.stdout)["signature_valid"] is True

        alpha = devcloud.connect("devcloud-alpha")
        sharing.accept(alpha, result.image_id)
        member = run(config, "verify", result.image_id, "--cloud", "devcloud-alpha", "-f", "json")
        found = json.loads(member.stdout)
        assert member.returncode == 0 and found["signature_valid"] is None, member.stderr
        assert "give --certificate" in found["signature"]
        given = run(
            config, "verify", result.image_id, "--cloud", "devcloud-alpha",
            "--certificate", str(cert),
        )  # fmt: skip
        assert given.returncode == 0 and "signature: valid, signed by" in given.stdout
        wrong = run(
            config, "verify", result.image_id, "--cloud", "devcloud-alpha",
            "--certificate", str(stranger),
        )  # fmt: skip
        assert wrong.returncode == 1 and "signature: INVALID" in wrong.stdout

        # A signature of other bytes: Glance itself refuses the data; nothing is left.
        attributes = {
            "name": "badsig-web",
            "disk_format": "qcow2",
            "container_format": "bare",
            **{k: record[k] for k in record if k.startswith("img_signature")},
        }
        signer = signing.load_signer(signing_settings)
        attributes["img_signature"] = signer.sign(hashlib.sha256(b"other bytes").digest())
        image = tested_web / "web.qcow2"
        sha256 = Manifest.read(tested_web).image.sha256  # type: ignore[union-attr]
        with pytest.raises(os_exceptions.BadRequestException, match="Signature verification"):
            upload.create_and_upload(conn, image, attributes, sha256)
        # A tampered image: the real signature, other bytes.
        tampered = tmp_path / "tampered.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tampered), "64M"])
        attributes["img_signature"] = record["img_signature"]
        tampered_sha256 = hashlib.sha256(tampered.read_bytes()).hexdigest()
        with pytest.raises(os_exceptions.BadRequestException, match="Signature verification"):
            upload.create_and_upload(conn, tampered, attributes, tampered_sha256)
        assert [i.name for i in glance(conn).images() if i.name == "badsig-web"] == []
    finally:
        if result.image_id:
            glance(conn).delete_image(result.image_id, ignore_missing=True)
