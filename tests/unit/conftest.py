import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ed25519 key pair made with ssh-keygen; returns the .pub path."""
    directory = tmp_path_factory.mktemp("keys")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f", directory / "id"],
        check=True,
    )
    return directory / "id.pub"


@pytest.fixture
def write_config(tmp_path: Path, public_key: Path) -> Callable[[str], Path]:
    """Write an imagekit.yaml; "{key}" in the text becomes the public key's path."""

    def write(text: str) -> Path:
        path = tmp_path / "imagekit.yaml"
        path.write_text(text.replace("{key}", str(public_key)))
        return path

    return write
