"""SSH public keys to bake into images: parsed, checked, never private."""

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: bytes
    comment: str

    @property
    def line(self) -> str:
        text = f"{self.type} {base64.b64encode(self.blob).decode()}"
        return f"{text} {self.comment}" if self.comment else text

    @property
    def fingerprint(self) -> str:
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"


def parse_public_keys(text: str) -> list[PublicKey]:
    """Parse one or more OpenSSH public key lines; ValueError says what is wrong."""
    if "PRIVATE KEY" in text:
        raise ValueError("this is a private key; give the public half (the .pub file)")
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_parse_line(line, number))
    if not keys:
        raise ValueError("no public key found")
    return keys


def _parse_line(line: str, number: int) -> PublicKey:
    fields = line.split(None, 2)
    where = f"line {number}"
    if fields[0] not in KEY_TYPES:
        raise ValueError(f"{where}: not an OpenSSH public key (unknown type '{fields[0][:30]}')")
    if len(fields) < 2:
        raise ValueError(f"{where}: key data missing")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise ValueError(f"{where}: key data is not base64") from None
    # The blob starts with its own key type, length-prefixed: a cheap integrity check.
    if len(blob) < 4:
        raise ValueError(f"{where}: key data is truncated")
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length].decode(errors="replace") != fields[0]:
        raise ValueError(f"{where}: key data does not match its type '{fields[0]}'")
    return PublicKey(fields[0], blob, fields[2] if len(fields) > 2 else "")
