"""Upload one image file to Glance, hashing it on the way, and verify what Glance stored."""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from imagekit import runs
from imagekit.clouds import glance
from imagekit.errors import ImagekitError
from imagekit.progress import Progress

CHUNK = 4 << 20
RETRIES = 3
# Errors worth another try; 401/403/409/413/415 and other 4xx are permanent.
TRANSIENT = (ks_exceptions.ConnectFailure, ks_exceptions.ConnectionError, ConnectionError)


@dataclass
class Hashes:
    sha256: str
    sha512: str
    size: int


class HashingReader:
    """A file for the upload that hashes the very bytes it hands out.

    It has a length, so that the upload carries Content-Length rather than
    chunked encoding (which uwsgi-served Glance rejects).
    """

    def __init__(self, path: Path, progress: Progress | None = None) -> None:
        self._file = path.open("rb")
        self._length = path.stat().st_size
        self.sha256 = hashlib.sha256()
        self.sha512 = hashlib.sha512()
        self.size = 0
        self._progress = progress
        self._started = time.monotonic()

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size if size and size > 0 else CHUNK)
        self.sha256.update(chunk)
        self.sha512.update(chunk)
        self.size += len(chunk)
        if self._progress is not None:
            self._progress.update("uploading", transfer(self.size, self._length, self._started))
        return chunk

    def close(self) -> None:
        self._file.close()

    def hashes(self) -> Hashes:
        return Hashes(self.sha256.hexdigest(), self.sha512.hexdigest(), self.size)


def transfer(done: int, total: int, started: float) -> str:
    """'93/184 MiB, 41.2 MiB/s, 2s left': a transfer's progress line."""
    seconds = max(time.monotonic() - started, 1e-3)
    rate = done / seconds
    left = f"{(total - done) / rate:.0f}s left" if rate > 0 else "?"
    return f"{done >> 20}/{total >> 20} MiB, {rate / (1 << 20):.1f} MiB/s, {left}"


def file_md5(path: Path) -> str:
    """The md5 the SDK's uploads record (a convention, not a security check)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _ok(response: Any) -> Any:
    """Raise the SDK's HttpException (with status_code) for an HTTP error."""
    os_exceptions.raise_from_response(response)
    return response


def _status(err: Exception) -> int | None:
    return getattr(err, "http_status", None) or getattr(err, "status_code", None)


def is_transient(err: Exception) -> bool:
    status = _status(err)
    return isinstance(err, TRANSIENT) or (status is not None and status >= 500)


def create_and_upload(
    conn: Connection,
    path: Path,
    attributes: dict[str, Any],
    expected_sha256: str,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], Hashes]:
    """POST the image record, PUT its data; transient errors retried with backoff.

    Whatever goes wrong (an error, a mismatch, Ctrl-C), the half-made image is
    deleted before the exception leaves.
    """
    for attempt in range(1, RETRIES + 1):
        image_id = None
        try:
            image = _ok(conn.image.post("/images", json=attributes)).json()
            image_id = image["id"]
            reader = HashingReader(path, progress)
            try:
                _ok(
                    conn.image.put(
                        f"/images/{image_id}/file",
                        data=reader,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                )
            finally:
                reader.close()
            hashes = reader.hashes()
            stored = wait_active(conn, image_id)
            verify(stored, hashes, expected_sha256)
            return stored, hashes
        except BaseException as err:
            if image_id is not None:
                delete_quietly(conn, image_id)
            if isinstance(err, Exception) and is_transient(err) and attempt < RETRIES:
                time.sleep(2**attempt)
                continue
            raise
    raise AssertionError("unreachable")


def wait_active(conn: Connection, image_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        image: dict[str, Any] = _ok(conn.image.get(f"/images/{image_id}")).json()
        if image["status"] == "active":
            return image
        if image["status"] in ("killed", "deleted", "deactivated"):
            raise ImagekitError(f"Glance left image {image_id} {image['status']}")
        if time.monotonic() > deadline:
            raise ImagekitError(f"image {image_id} still {image['status']} after {timeout:.0f}s")
        time.sleep(1)


def verify(image: dict[str, Any], hashes: Hashes, expected_sha256: str) -> None:
    """What Glance stored is what we sent, and what we sent is what was built."""
    if hashes.sha256 != expected_sha256:
        raise ImagekitError(
            "the image file changed since it was built (sha256 differs from the manifest)"
        )
    if image.get("os_hash_algo") != "sha512" or image.get("os_hash_value") != hashes.sha512:
        raise ImagekitError(
            f"checksum mismatch: Glance stored {image.get('os_hash_algo')} "
            f"{str(image.get('os_hash_value'))[:16]}..., we sent sha512 {hashes.sha512[:16]}..."
        )
    if image.get("size") != hashes.size:
        raise ImagekitError(
            f"size mismatch: Glance stored {image.get('size')}, we sent {hashes.size}"
        )


def delete_quietly(conn: Connection, image_id: str, attempts: int = 5) -> None:
    """Delete a half-made image, retrying: right after a cut upload Glance may still be
    failing that upload and refuse the delete for a moment (a 409, or a 500 from a locked
    database). If it still refuses, the image's run id lets `imagekit cleanup` finish."""
    for attempt in range(attempts):
        try:
            glance(conn).delete_image(image_id, ignore_missing=True)
            return
        except (os_exceptions.SDKException, *TRANSIENT):
            if attempt + 1 < attempts:
                time.sleep(0.5 * 2**attempt)
    runs.leave_for_cleanup()
