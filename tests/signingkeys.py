"""Throwaway signing keys and self-signed certificates for the tests."""

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def make_signing_pair(
    directory: Path, name: str = "signer", curve: str | None = None, expired: bool = False
) -> tuple[Path, Path]:
    """(key, certificate) PEM files: RSA 2048, or an EC key on curve (secp384r1, ...)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if curve is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(getattr(ec, curve.upper())())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"imagekit test {name}")])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=60 if expired else 0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file
