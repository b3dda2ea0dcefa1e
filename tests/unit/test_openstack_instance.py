"""The OpenStack backend against a fake cloud at the HTTP boundary (no Nova runs here)."""

import base64
from collections.abc import Iterator
from typing import Any

import openstack
import pytest
import requests_mock

from imagekit.errors import ImagekitError
from imagekit.instances import SshAddress, throwaway
from imagekit.instances import openstack as backend
from imagekit.instances.openstack import OpenStackInstance, ServerSettings
from tests.unit.fakecloud import AUTH, FakeCloud

SETTINGS = ServerSettings("m1.small", "private", "public", ["default"])


@pytest.fixture
def mocker() -> Iterator[requests_mock.Mocker]:
    with requests_mock.Mocker() as m:
        yield m


def connect() -> Any:
    return openstack.connect(
        auth_url=AUTH,
        username="builder",
        password="secret",
        project_name="images",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )


def ready(seen: list[SshAddress]) -> Any:
    """Stands in for SSH + cloud-init, the one part above HTTP that needs a real server."""

    def wait(address: SshAddress, *args: Any) -> dict[str, float]:
        seen.append(address)
        return {"boot_to_ssh_s": 1.0, "cloud_init_done_s": 2.0}

    return wait


def test_boots_a_server_and_deletes_everything(
    mocker: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = FakeCloud(mocker)
    seen: list[SshAddress] = []
    monkeypatch.setattr(backend, "wait_until_ready", ready(seen))
    instance = OpenStackInstance(
        connect(),
        "imagekit-web-1",
        "admin",
        "it-web",
        SETTINGS,
        user_data="#cloud-config\nhostname: web1\n",
    )
    with throwaway(instance) as address:
        (server,) = cloud.servers.values()
        (keypair,) = cloud.keypairs.values()
        assert server["imageRef"] == "img-1" and server["flavorRef"] == "f1"
        assert server["networks"] == [{"uuid": "net-private"}]
        assert server["key_name"] == keypair["name"]
        assert keypair["public_key"].startswith("ssh-ed25519 ")
        assert base64.b64decode(server["user_data"]).decode().startswith("#cloud-config\n")
        assert server["security_groups"] == [{"name": "default"}]
        (ip,) = cloud.floating_ips.values()
        assert ip["floating_network_id"] == "net-public" and ip["port_id"] == "port-1"
        assert address.host == "127.0.0.1", "the floating IP is used"
    assert seen == [address]
    assert instance.timings == {"boot_to_ssh_s": 1.0, "cloud_init_done_s": 2.0}
    assert cloud.servers == {} and cloud.keypairs == {} and cloud.floating_ips == {}
    assert sorted(d.split()[0] for d in cloud.deleted) == ["floating_ip", "keypair", "server"]


def test_server_in_error_is_reported_and_cleaned_up(
    mocker: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = FakeCloud(mocker, server_status="ERROR")
    monkeypatch.setattr(backend, "wait_until_ready", ready([]))
    instance = OpenStackInstance(connect(), "imagekit-web-1", "admin", "it-web", SETTINGS)
    with pytest.raises(openstack.exceptions.ResourceFailure), throwaway(instance):
        pass
    assert cloud.servers == {} and cloud.keypairs == {}
    assert len(cloud.created) == 2  # keypair and server, both deleted


def test_a_failed_wait_still_deletes_server_keypair_and_ip(
    mocker: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = FakeCloud(mocker)

    def never_ready(*args: Any) -> dict[str, float]:
        raise ImagekitError("SSH did not answer within 900s")

    monkeypatch.setattr(backend, "wait_until_ready", never_ready)
    instance = OpenStackInstance(connect(), "imagekit-web-1", "admin", "it-web", SETTINGS)
    with pytest.raises(ImagekitError, match="SSH did not answer"), throwaway(instance):
        pass
    assert cloud.servers == {} and cloud.keypairs == {} and cloud.floating_ips == {}
    assert len(cloud.deleted) == 3
