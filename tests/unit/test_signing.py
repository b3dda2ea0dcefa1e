"""Image signing: what Glance's verifier (cursive) accepts, and every bad key file."""

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from keystoneauth1 import exceptions as ks_exceptions

from imagekit.config import SigningSettings, load_config
from imagekit.errors import ImagekitError, UserError
from imagekit.manifest import ImageFile, sha256_file
from imagekit.publishing import publish as publishing
from imagekit.publishing import signing
from tests.signingkeys import make_signing_pair
from tests.unit.manifests import make_manifest


def settings(key: Path, cert: Path) -> SigningSettings:
    return SigningSettings.model_validate({"key": str(key), "certificate": str(cert)})


@pytest.mark.parametrize("curve", [None, "secp384r1"], ids=["RSA-PSS", "ECC_SECP384R1"])
def test_the_signature_verifies_as_glance_does_over_the_whole_file(
    tmp_path: Path, curve: str | None
) -> None:
    key, cert = make_signing_pair(tmp_path, curve=curve)
    signer = signing.load_signer(settings(key, cert))
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(range(256)) * 9000)
    props = signing.signature_properties(signer, image, "cert-uuid")
    assert props["img_signature_hash_method"] == "SHA-256"
    assert props["img_signature_certificate_uuid"] == "cert-uuid"
    assert props["img_signature_key_type"] == ("RSA-PSS" if curve is None else "ECC_SECP384R1")
    # As cursive verifies: the certificate's key over the raw data, not a digest.
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    raw = base64.b64decode(props["img_signature"])
    if isinstance(public, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        public.verify(raw, image.read_bytes(), pss, hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(raw, image.read_bytes(), ec.ECDSA(hashes.SHA256()))
    # And imagekit verify's own check, on the digest: the file, not a changed one.
    assert "imagekit test signer" in signing.verify_signature(
        cert.read_bytes(), props, bytes.fromhex(sha256_file(image))
    )
    image.write_bytes(image.read_bytes() + b"x")
    with pytest.raises(ImagekitError, match="does not match"):
        signing.verify_signature(cert.read_bytes(), props, bytes.fromhex(sha256_file(image)))


def test_bad_signing_files_are_one_line(tmp_path: Path) -> None:
    key, cert = make_signing_pair(tmp_path, "one")
    other_key, other_cert = make_signing_pair(tmp_path, "two")
    p256_key, p256_cert = make_signing_pair(tmp_path, "p256", curve="secp256r1")
    old_key, old_cert = make_signing_pair(tmp_path, "old", expired=True)
    unreadable = tmp_path / "unreadable.key"
    unreadable.mkdir()  # reading it fails, as for a file without permission
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\n")
    cases = [
        (settings(key, other_cert), "not the certificate of"),
        (settings(garbage, cert), "not a PEM private key"),
        (settings(key, garbage), "not a PEM certificate"),
        (settings(p256_key, p256_cert), "RSA or EC P-384/P-521 keys only"),
        (settings(old_key, old_cert), "valid only from"),
    ]
    for bad, message in cases:
        with pytest.raises(UserError, match=message) as err:
            signing.load_signer(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no such file"):
        settings(tmp_path / "missing.key", cert)
    with pytest.raises(ValueError, match="no such file"):
        settings(unreadable, cert)
    assert other_key.exists()


def test_the_certificate_is_stored_once_and_found_again(tmp_path: Path) -> None:
    key, cert = make_signing_pair(tmp_path)
    signer = signing.load_signer(settings(key, cert))
    stored: list[dict[str, Any]] = []

    def secrets(name: str) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(secret_type="certificate", secret_ref=f"http://km/v1/secrets/{n}")
            for n, s in enumerate(stored)
            if s["name"] == name
        ]

    def create_secret(**body: Any) -> SimpleNamespace:
        stored.append(body)
        return SimpleNamespace(secret_ref=f"http://km/v1/secrets/{len(stored) - 1}")

    conn: Any = SimpleNamespace(
        key_manager=SimpleNamespace(secrets=secrets, create_secret=create_secret)
    )
    assert signing.certificate_uuid(conn, signer) == "0"
    assert signing.certificate_uuid(conn, signer) == "0", "found again, not stored twice"
    (body,) = stored
    assert body["secret_type"] == "certificate"
    assert body["payload_content_type"] == "application/octet-stream"
    assert base64.b64decode(body["payload"]) == cert.read_bytes(), "the PEM, never the key"
    assert b"PRIVATE" not in base64.b64decode(body["payload"])


def build_to_sign(tmp_path: Path, write_config: Any, key: Path, cert: Path) -> tuple[Any, Path]:
    """A config that signs with key/cert, and a (tiny) web build to publish."""
    path = write_config(
        f"ssh_keys: ['{{key}}']\noutput_dir: {tmp_path}/out\n"
        f"publish: {{signing: {{key: {key}, certificate: {cert}}}}}\n"
    )
    config = load_config(path)
    build_dir = config.output_dir / "web" / "20261201T000000Z"
    build_dir.mkdir(parents=True)
    (build_dir / "web.qcow2").write_bytes(b"QFI\xfb" + bytes(4096))
    image = ImageFile(
        file="web.qcow2", format="qcow2", size_bytes=4100, virtual_size_bytes=1 << 30, sha256="0"
    )
    make_manifest(role="web", build_id=build_dir.name, image=image).write(build_dir)
    return config, build_dir


def test_publish_sends_the_signature_with_the_image_record(
    tmp_path: Path, write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What reaches Glance's POST /images: the four properties, before any data."""
    key, cert = make_signing_pair(tmp_path)
    config, build_dir = build_to_sign(tmp_path, write_config, key, cert)
    sent: list[dict[str, Any]] = []

    def create_and_upload(conn: Any, image: Path, attributes: dict[str, Any], *rest: Any) -> Any:
        sent.append(attributes)
        raise ImagekitError("stop here")

    conn = SimpleNamespace(current_project_id="p1")
    monkeypatch.setattr(publishing, "connect", lambda *a, **k: conn)
    monkeypatch.setattr(publishing, "resolve_projects", lambda *a: {})
    monkeypatch.setattr(publishing, "existing_image", lambda *a: None)
    monkeypatch.setattr(publishing, "certificate_uuid", lambda conn, signer: "cert-1")
    monkeypatch.setattr(publishing, "create_and_upload", create_and_upload)
    with pytest.raises(ImagekitError, match="stop here"):
        publishing.publish(config, "web", "prod", build_id=build_dir.name, force=True)
    (attributes,) = sent
    assert attributes["img_signature_certificate_uuid"] == "cert-1"
    assert attributes["img_signature_key_type"] == "RSA-PSS"
    digest = bytes.fromhex(sha256_file(build_dir / "web.qcow2"))
    assert signing.verify_signature(cert.read_bytes(), attributes, digest)


def test_a_cloud_without_a_key_manager_is_one_line_and_nothing_uploaded(
    tmp_path: Path, write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = make_signing_pair(tmp_path)
    config, build_dir = build_to_sign(tmp_path, write_config, key, cert)

    def no_endpoint(**query: Any) -> list[Any]:
        raise ks_exceptions.EndpointNotFound("Could not find requested endpoint: key-manager")

    conn = SimpleNamespace(
        current_project_id="p1", key_manager=SimpleNamespace(secrets=no_endpoint)
    )
    monkeypatch.setattr(publishing, "connect", lambda *a, **k: conn)
    monkeypatch.setattr(publishing, "resolve_projects", lambda *a: {})
    monkeypatch.setattr(publishing, "existing_image", lambda *a: None)
    monkeypatch.setattr(publishing, "create_and_upload", lambda *a: pytest.fail("uploaded"))
    with pytest.raises(ImagekitError) as err:
        publishing.publish(config, "web", "prod", build_id=build_dir.name, force=True)
    assert err.value.exit_status == 1
    assert str(err.value).startswith(
        "cloud 'prod': storing the signing certificate in the key manager failed: "
    )
    assert "key-manager" in str(err.value) and "\n" not in str(err.value)
