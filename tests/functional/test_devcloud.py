"""The dev cloud: a real Keystone + Glance on loopback, shared between projects."""

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from openstack.connection import Connection
from openstack.exceptions import NotFoundException
from openstack.image.v2._proxy import Proxy as ImageProxy

from imagekit.devcloud import DevCloud
from tests.functional.conftest import DEVCLOUD_STATE

STATE_DIR = DEVCLOUD_STATE
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cloud() -> Iterator[DevCloud]:
    devcloud = DevCloud(STATE_DIR)
    try:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("install (skipped when done)", devcloud.install),
            ("cold setup", lambda: devcloud.up(fresh=True)),
            ("down", devcloud.down),
            ("warm up()", devcloud.up),
        ]
        for step, action in steps:
            start = time.monotonic()
            action()
            TIMINGS[step] = time.monotonic() - start
        yield devcloud
    finally:
        devcloud.down()


def our_uwsgi_processes() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"uwsgi") and str(STATE_DIR).encode() in b" ".join(args):
            pids.append(int(cmdline.parent.name))
    return pids


def glance(conn: Connection) -> ImageProxy:
    assert isinstance(conn.image, ImageProxy)  # image_api_version 2 in clouds.yaml
    return conn.image


def test_start_times(cloud: DevCloud, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\ndev cloud: " + ", ".join(f"{step} {secs:.1f} s" for step, secs in TIMINGS.items()))
    assert our_uwsgi_processes()


def test_image_shared_with_one_project(cloud: DevCloud, tmp_path: Path) -> None:
    image_file = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image_file), "64M"], check=True)
    sha512 = hashlib.sha512(image_file.read_bytes()).hexdigest()
    connections = [cloud.connect(name) for name in ("devcloud", "devcloud-alpha", "devcloud-beta")]
    builder, alpha, beta = (glance(conn) for conn in connections)
    try:
        created = builder.create_image(
            "tiny",
            filename=str(image_file),
            disk_format="qcow2",
            container_format="bare",
            wait=True,
            timeout=60,
        )
        image = builder.get_image(created.id)  # create_image returns it as first created
        assert image.status == "active"
        assert image.owner == connections[0].current_project_id
        assert image.id not in [seen.id for seen in alpha.images()]

        builder.update_image(image, visibility="shared")
        member = builder.add_member(image, member_id=connections[1].current_project_id)
        assert member.status == "pending"
        alpha.update_member(member, image, status="accepted")
        assert image.id in [seen.id for seen in alpha.images()]

        shared = alpha.get_image(image.id)
        assert (shared.hash_algo, shared.hash_value) == ("sha512", sha512)
        download = tmp_path / "download.qcow2"
        alpha.download_image(shared, output=str(download))
        assert hashlib.sha512(download.read_bytes()).hexdigest() == sha512

        with pytest.raises(NotFoundException):
            beta.get_image(image.id)
        assert image.id not in [seen.id for seen in beta.images()]
    finally:
        for conn in connections:
            conn.close()


def test_chunked_upload(cloud: DevCloud, tmp_path: Path) -> None:
    """Nova uploads a snapshot to Glance in 1 MiB chunks of unknown total size."""
    image_file = tmp_path / "chunked.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image_file), "64M"], check=True)
    data = image_file.read_bytes() + bytes(3 * 1024 * 1024)  # qcow2 allows trailing data
    conn = cloud.connect("devcloud")
    image = glance(conn).create_image(name="chunked", disk_format="qcow2", container_format="bare")
    try:
        endpoint, token = conn.image.get_endpoint(), conn.auth_token
        assert endpoint and token
        endpoint = endpoint.rstrip("/").removesuffix("/v2")
        chunks = (data[at : at + 1024 * 1024] for at in range(0, len(data), 1024 * 1024))
        response = requests.put(
            f"{endpoint}/v2/images/{image.id}/file",
            data=chunks,  # a generator: requests sends Transfer-Encoding: chunked
            headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert response.status_code == 204, response.text
        uploaded = glance(conn).get_image(image.id)
        assert (uploaded.status, uploaded.size) == ("active", len(data))
        assert uploaded.hash_value == hashlib.sha512(data).hexdigest()
    finally:
        glance(conn).delete_image(image.id, ignore_missing=True)
        conn.close()


def test_down_leaves_no_process(cloud: DevCloud) -> None:
    cloud.down()
    assert our_uwsgi_processes() == []
