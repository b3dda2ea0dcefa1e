"""`site test --cloud`: what the site asks of Neutron and Nova (a fake cloud at the HTTP
boundary); the real thing runs in tests/functional/test_devcloud_compute.py."""

import base64
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests_mock

from imagekit import clouds
from imagekit.config import OpenStackSettings
from imagekit.site.cloud import CloudSite
from imagekit.site.model import DEFAULT_SITE, load_site
from tests.unit.fakecloud import FakeCloud
from tests.unit.test_openstack_instance import connect

SETTINGS = OpenStackSettings(
    flavor="m1.small",
    network="private",
    floating_ip_network="public",
    security_groups=["default"],
)


@pytest.fixture
def mocker() -> Iterator[requests_mock.Mocker]:
    with requests_mock.Mocker(case_sensitive=True) as m:
        yield m


def test_the_site_is_wired_as_operators_do_it(mocker: requests_mock.Mocker, tmp_path: Path) -> None:
    cloud = FakeCloud(mocker)
    site = load_site(DEFAULT_SITE)
    made = CloudSite(connect(), "prod", SETTINGS, "R1")
    made.create_network(site)
    tag = "imagekit run R1"
    (network, subnet) = cloud.made
    # Port security off on the private network: the lb routes and NATs for the others.
    assert network == ("network", {"name": "imagekit-site-R1", "description": tag,
                                   "port_security_enabled": False})  # fmt: skip
    assert subnet[1]["cidr"] == "10.12.0.0/16"
    assert subnet[1]["gateway_ip"] == "10.12.0.1", "the lb's port is the gateway"
    assert subnet[1]["enable_dhcp"] is False
    assert subnet[1]["dns_nameservers"] == ["10.12.0.53"]
    assert subnet[1]["description"] == tag
    addresses = [p["fixed_ips"][0]["ip_address"] for p in cloud.port_requests]
    assert addresses == [str(i.address) for i in site.instances]
    assert {p["description"] for p in cloud.port_requests} == {tag}

    made.create_keypair("ssh-ed25519 AAAA run")
    lb = made.boot(site.lb, "imagekit-web-1", "#cloud-config\nhostname: lb1\n", tmp_path)
    web = site.of_role("web")[0]
    made.boot(web, "imagekit-web-1", "#cloud-config\nhostname: web1\n", tmp_path)
    lb_body, web_body = cloud.server_requests
    ports = {p["name"].removeprefix("imagekit-site-R1-"): pid for pid, p in cloud.ports.items()}
    public = cloud.ports[ports["lb1-public"]]
    # The lb: the public side first (ens3), a port with the security groups; Nova applies
    # none itself (it refuses to where a NIC's network has port security off).
    assert public["network_id"] == "net-private" and public["security_groups"] == ["sg-1"]
    assert public["description"] == tag
    assert lb_body["networks"] == [{"port": ports["lb1-public"]}, {"port": ports["lb1"]}]
    assert web_body["networks"] == [{"port": ports["web1"]}]
    assert "security_groups" not in lb_body and "security_groups" not in web_body
    for body, name in ((lb_body, "lb1"), (web_body, "web1")):
        assert body["config_drive"] is True
        assert body["metadata"] == {"imagekit": "site", "imagekit_run": "R1"}
        assert body["name"] == f"imagekit-site-R1-{name}"
        assert body["key_name"] == "imagekit-site-R1"
        assert base64.b64decode(body["user_data"]).decode() == f"#cloud-config\nhostname: {name}\n"

    made.wait_active([lb], timeout=10)
    (ip,) = cloud.ip_requests
    assert ip == {
        "floating_network_id": "net-public",
        "port_id": ports["lb1-public"],
        "description": tag,
    }
    assert made.public_address == "127.0.0.1"


def test_a_site_runs_networks_are_deleted_with_its_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deleted: list[str] = []
    queries: list[dict[str, object]] = []

    def listing(kind: str, items: list[SimpleNamespace]) -> object:
        def answer(**query: object) -> list[SimpleNamespace]:
            queries.append({"kind": kind, **query})
            return items

        return answer

    network = SimpleNamespace(
        ips=listing("ips", []),
        ports=listing("ports", [SimpleNamespace(id="p1")]),
        networks=listing("networks", [SimpleNamespace(id="n1", name="imagekit-site-R1")]),
        delete_port=lambda port, ignore_missing: deleted.append(f"port {port.id}"),
        delete_network=lambda net, ignore_missing: deleted.append(f"network {net.id}"),
    )
    compute = SimpleNamespace(servers=listing("servers", []), keypairs=listing("keypairs", []))
    monkeypatch.setattr(
        clouds, "connect", lambda cloud: SimpleNamespace(network=network, compute=compute)
    )
    done = clouds.delete_run_leftovers("prod", "R1", ["servers"])
    assert deleted == ["port p1", "network n1"], "ports first: a network with ports stays"
    assert {"kind": "networks", "description": "imagekit run R1"} in queries
    assert done[-1] == "deleted network imagekit-site-R1 in 'prod'"
