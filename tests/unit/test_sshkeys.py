from pathlib import Path

import pytest

from imagekit.sshkeys import parse_public_keys


def test_parses_real_key_and_fingerprint_matches_ssh_keygen(public_key: Path) -> None:
    import subprocess

    (key,) = parse_public_keys(public_key.read_text())
    assert key.type == "ssh-ed25519"
    assert key.comment == "ops@test"
    expected = subprocess.run(
        ["ssh-keygen", "-lf", public_key], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert key.fingerprint == expected


def test_several_keys_comments_and_blank_lines(public_key: Path) -> None:
    line = public_key.read_text().strip()
    assert len(parse_public_keys(f"# team\n{line}\n\n{line}\n")) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n", "private key"),
        ("", "no public key"),
        ("ssh-dss AAAAB3NzaC1kc3M= x", "unknown type"),
        ("ssh-ed25519", "key data missing"),
        ("ssh-ed25519 not*base64", "not base64"),
        # A valid blob of another type under the wrong name.
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "match"),
    ],
)
def test_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_public_keys(text)
