"""Signed images: the signature Glance checks on upload, and the certificate in Barbican.

Glance verifies an image whose four `img_signature*` properties are set, against
the certificate that `img_signature_certificate_uuid` names in the key manager,
as it receives the data: a bad signature is refused there (HTTP 400), and Nova
can check it again at boot. The signature is over the image file's bytes, with
SHA-256; RSA keys sign with PSS (MGF1 SHA-256, the longest salt), as Glance's
`cursive` verifies.
"""

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from openstack.connection import Connection

from imagekit.config import SigningSettings
from imagekit.errors import ImagekitError, UserError
from imagekit.manifest import sha256_file

HASH_METHOD = "SHA-256"
# cursive's names for the EC curves it verifies.
EC_KEY_TYPES = {"secp384r1": "ECC_SECP384R1", "secp521r1": "ECC_SECP521R1"}
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
# Any salt length is valid PSS: a signature made elsewhere may use the digest's length.
PSS_ANY_SALT = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def key_type(self) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return "RSA-PSS"
        return EC_KEY_TYPES[self.key.curve.name]

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def sign(self, digest: bytes) -> str:
        """The base64 signature of data whose SHA-256 is digest."""
        prehashed = utils.Prehashed(hashes.SHA256())
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(digest, PSS, prehashed)
        else:
            signature = self.key.sign(digest, ec.ECDSA(prehashed))
        return base64.b64encode(signature).decode()


def load_signer(settings: SigningSettings) -> Signer:
    """The key and its certificate; any problem is one line naming the file."""
    try:
        key = serialization.load_pem_private_key(settings.key.read_bytes(), password=None)
    except OSError as err:
        raise UserError(f"publish.signing.key {settings.key}: {err.strerror}") from None
    except (ValueError, TypeError) as err:
        raise UserError(
            f"publish.signing.key {settings.key}: not a PEM private key without "
            f"a passphrase ({err})"
        ) from None
    try:
        certificate = x509.load_pem_x509_certificate(settings.certificate.read_bytes())
    except OSError as err:
        raise UserError(
            f"publish.signing.certificate {settings.certificate}: {err.strerror}"
        ) from None
    except ValueError as err:
        raise UserError(
            f"publish.signing.certificate {settings.certificate}: not a PEM certificate ({err})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in EC_KEY_TYPES
    ):
        raise UserError(
            f"publish.signing.key {settings.key}: RSA or EC P-384/P-521 keys only "
            "(what Glance verifies)"
        )
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise UserError(
            f"publish.signing.certificate {settings.certificate}: valid only from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d} (Nova refuses to boot what it signs)"
        )
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != certificate.public_key().public_bytes(
        der, public
    ):
        raise UserError(
            f"publish.signing.certificate {settings.certificate}: not the certificate of "
            f"{settings.key}"
        )
    return Signer(key, certificate)


def certificate_uuid(conn: Connection, signer: Signer) -> str:
    """The certificate's id in this project's key manager, stored there once (by its
    fingerprint) and found again by later publications."""
    name = f"imagekit-signing-{signer.fingerprint[:32]}"
    key_manager: Any = conn.key_manager
    for secret in key_manager.secrets(name=name):
        if secret.secret_type == "certificate":
            return str(secret.secret_ref).rsplit("/", 1)[1]
    pem = signer.certificate.public_bytes(serialization.Encoding.PEM)
    secret = key_manager.create_secret(
        name=name,
        secret_type="certificate",
        # PEM, as bytes: what Glance's key manager client loads (text/plain fails there).
        payload=base64.b64encode(pem).decode(),
        payload_content_type="application/octet-stream",
        payload_content_encoding="base64",
    )
    return str(secret.secret_ref).rsplit("/", 1)[1]


def signature_properties(signer: Signer, image: Path, cert_uuid: str) -> dict[str, str]:
    return {
        "img_signature": signer.sign(bytes.fromhex(sha256_file(image))),
        "img_signature_hash_method": HASH_METHOD,
        "img_signature_key_type": signer.key_type,
        "img_signature_certificate_uuid": cert_uuid,
    }


def verify_signature(certificate_pem: bytes, properties: dict[str, Any], digest: bytes) -> str:
    """Check an image's signature (of data whose SHA-256 is digest) against a PEM
    certificate; returns the certificate's subject, raises ImagekitError if it fails."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    if properties.get("img_signature_hash_method") != HASH_METHOD:
        raise ImagekitError(
            f"signature hash method {properties.get('img_signature_hash_method')!r}: "
            f"only {HASH_METHOD} is checked"
        )
    signature = base64.b64decode(str(properties.get("img_signature", "")))
    key = certificate.public_key()
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, PSS_ANY_SALT, prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            raise ImagekitError("the certificate's key is neither RSA nor EC")
    except InvalidSignature:
        raise ImagekitError("the signature does not match the image") from None
    return certificate.subject.rfc4514_string()
