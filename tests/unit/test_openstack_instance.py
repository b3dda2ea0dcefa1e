"""The OpenStack backend against a fake cloud at the HTTP boundary (no Nova runs here)."""

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
import requests
import requests_mock

from imagekit import runs, verify
from imagekit.builders import packer
from imagekit.cli import main
from imagekit.clouds import run_description
from imagekit.config import Config, load_config
from imagekit.errors import ImagekitError
from imagekit.instances import SshAddress, factories, throwaway
from imagekit.instances import openstack as backend
from imagekit.instances.openstack import OpenStackInstance, ServerSettings
from imagekit.instances.qemu import QemuInstance
from imagekit.manifest import Manifest, Publication, SuiteResult
from tests.unit.fakecloud import AUTH, NOVA, FakeCloud
from tests.unit.manifests import make_manifest

SETTINGS = ServerSettings("m1.small", "private", "public", ["default"])


@pytest.fixture
def mocker() -> Iterator[requests_mock.Mocker]:
    # Case-sensitive: keypair names (with our run id) keep their capitals in paths.
    with requests_mock.Mocker(case_sensitive=True) as m:
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


def test_a_private_network_gives_the_server_a_second_nic_with_its_private_address(
    mocker: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = FakeCloud(mocker)
    monkeypatch.setattr(backend, "wait_until_ready", ready([]))
    settings = ServerSettings("m1.small", "private", "public", private_network="site-private")
    instance = OpenStackInstance(
        connect(), "imagekit-web-1", "admin", "it-web", settings, private_address="10.12.0.11"
    )
    with throwaway(instance):
        ((port_id, port),) = cloud.ports.items()
        assert port["network_id"] == "net-site"
        assert port["fixed_ips"] == [{"ip_address": "10.12.0.11"}]
        assert port["name"] == instance.name
        (server,) = cloud.server_requests
        assert server["networks"] == [{"uuid": "net-private"}, {"port": port_id}]
        (ip,) = cloud.floating_ips.values()
        assert ip["port_id"] == "port-1", "the floating IP is on the first network's port"
    assert cloud.ports == {} and cloud.servers == {} and cloud.floating_ips == {}
    assert f"port {port_id}" in cloud.deleted


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


CLOUDS_YAML = f"""clouds:
  fake:
    region_name: RegionOne
    auth:
      auth_url: {AUTH}
      username: builder
      password: secret
      project_name: images
      user_domain_name: Default
      project_domain_name: Default
"""
BUILD_ID = "20261125T040000Z"


@pytest.fixture
def config(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Config]:
    """A config with test servers on the cloud 'fake', and one built web image."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS_YAML)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    config = load_config(
        write_config(
            "ssh_keys: [{key}]\n"
            "openstack: {flavor: m1.small, network: private, floating_ip_network: public,\n"
            "  private_network: site-private}\n"
            "publish: {name_format: 'golden-{role}-{build_id}'}\n"
        )
    )
    build_dir = config.output_dir / "web" / BUILD_ID
    build_dir.mkdir(parents=True)
    built = _manifest().model_copy(update={"build_id": BUILD_ID})
    built.write(build_dir)
    runs.start(config.cache_dir)  # as the CLI does: resources are tagged with its id
    yield config
    runs.end()


def _manifest() -> Manifest:
    return make_manifest(build_id="x")


def run_test_on_cloud(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """`imagekit test --cloud fake web` above the HTTP boundary, the suite stood in for."""
    monkeypatch.setattr(backend, "wait_until_ready", ready([]))
    monkeypatch.setattr(
        verify, "run_suite", lambda *args, **kw: SuiteResult(when="now", passed=True, tests=1)
    )
    target = verify.find_target(config, "web", None, None)
    assert verify.test_image(config, target, factories.openstack_instances(config, "fake")).passed


@pytest.mark.parametrize("published", [True, False], ids=["recorded-id", "publish-name"])
def test_the_server_boots_the_published_image_with_the_rendered_user_data(
    config: Config,
    mocker: requests_mock.Mocker,
    monkeypatch: pytest.MonkeyPatch,
    published: bool,
) -> None:
    name = f"golden-web-{BUILD_ID}"  # publish.name_format
    images = [
        {"id": "img-default-name", "name": f"imagekit-web-{BUILD_ID}"},
        {"id": "img-by-name", "name": name},
        {"id": "img-published", "name": "renamed-since"},
    ]
    cloud = FakeCloud(mocker, images=images)
    build_dir = config.output_dir / "web" / BUILD_ID
    if published:
        manifest = Manifest.read(build_dir)
        manifest.publications = [
            Publication(cloud="other", image_id="img-by-name", name=name, when="t"),
            Publication(cloud="fake", image_id="img-published", name=name, when="t"),
        ]
        manifest.write(build_dir)

    run_test_on_cloud(config, monkeypatch)

    (server,) = cloud.server_requests
    assert server["imageRef"] == ("img-published" if published else "img-by-name")
    user_data = base64.b64decode(server["user_data"]).decode()
    assert user_data == factories.instance_user_data(config, "web", private_nic_by_cloud=True)
    assert "web1" in user_data, "the role's example values, as the local VM gets them"
    # The private address comes from the cloud (a port with the example's address) ...
    assert "ip addr replace" not in user_data
    assert [p["fixed_ips"] for p in cloud.port_requests] == [[{"ip_address": "10.12.0.11"}]]
    # ... and the rest is what a local VM boots with.
    target = verify.find_target(config, "web", None, None)
    local = factories.qemu_instances(config)(target, config.output_dir / "console.log")
    assert isinstance(local, QemuInstance) and "ip addr replace 10.12.0.11/16" in local.user_data
    assert set(user_data.splitlines()) < set(local.user_data.splitlines())
    run = runs.current()
    assert run is not None and server["metadata"]["imagekit_run"] == run.id
    assert run.id in server["name"] and run.id in server["key_name"]
    assert cloud.servers == {} and cloud.keypairs == {} and cloud.floating_ips == {}


def test_no_private_network_is_one_line(
    config: Config, write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config("ssh_keys: [{key}]\nopenstack: {flavor: m1.small, network: private}\n")
    assert main(["--config", str(path), "test", "web", "--cloud", "fake"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "openstack.private_network missing" in err[0], err


def test_test_prints_json_for_programs(
    config: Config,
    mocker: requests_mock.Mocker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    FakeCloud(mocker, images=[{"id": "img-2", "name": f"golden-web-{BUILD_ID}"}])
    monkeypatch.setattr(backend, "wait_until_ready", ready([]))
    monkeypatch.setattr(
        verify, "run_suite", lambda *a, **kw: SuiteResult(when="now", passed=True, tests=7)
    )
    argv = ["--config", str(config.source), "test", "web", "--cloud", "fake", "-f", "json"]
    assert main(argv) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert (document["role"], document["build_id"], document["passed"]) == ("web", BUILD_ID, True)
    assert document["tests"] == 7 and document["backend"] == "OpenStackInstance"
    recorded = Manifest.read(config.output_dir / "web" / BUILD_ID).tests[-1]
    assert recorded.backend == document["backend"] and recorded.tests == document["tests"]


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            {"status_code": 401, "json": {"error": {"code": 401, "message": "bad password"}}},
            "cloud 'fake': authentication failed: refused the credentials",
        ),
        (
            {"exc": requests.exceptions.ConnectionError("Connection refused")},
            "cloud 'fake': authentication failed: unreachable",
        ),
    ],
    ids=["wrong-password", "keystone-unreachable"],
)
def test_keystone_failures_are_one_line_naming_the_cloud(
    config: Config,
    mocker: requests_mock.Mocker,
    capsys: pytest.CaptureFixture[str],
    failure: dict[str, Any],
    message: str,
) -> None:
    FakeCloud(mocker)
    mocker.post(f"{AUTH}/auth/tokens", **failure)
    assert main(["--config", str(config.source), "test", "web", "--cloud", "fake"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_a_nova_error_is_one_line_and_cleans_up(
    config: Config,
    mocker: requests_mock.Mocker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = FakeCloud(mocker, images=[{"id": "img-2", "name": f"golden-web-{BUILD_ID}"}])
    mocker.post(f"{NOVA}/servers", status_code=503, json={"message": "nova is down"})
    monkeypatch.setattr(verify, "run_suite", lambda *a, **kw: pytest.fail("no server, no suite"))
    assert main(["--config", str(config.source), "test", "web", "--cloud", "fake"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("imagekit: error: cloud 'fake': the test server failed: ")
    assert "503" in err[-1]
    assert cloud.keypairs == {}, "the keypair made before the failure was deleted"


def test_instances_log_in_as_the_user_the_build_baked(config: Config, tmp_path: Path) -> None:
    """The config's admin user changed since the build: the build's own is the one that
    exists in the image (a bare --image has only the config's to go by)."""
    build_dir = config.output_dir / "web" / BUILD_ID
    Manifest.update(build_dir, lambda m: setattr(m, "admin_user", "builtwith"))
    assert config.admin_user != "builtwith"
    target = verify.find_target(config, "web", None, None)
    vm = factories.qemu_instances(config)(target, tmp_path / "console.log")
    assert isinstance(vm, QemuInstance) and vm.user == "builtwith"
    bare = factories.Target("web", target.image, None)
    assert factories.login_user(config, bare) == config.admin_user


def test_packer_on_the_cloud_gets_a_floating_ip_tagged_with_the_run(
    config: Config, mocker: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packer deletes only a floating IP it made itself, and would not tag it: imagekit
    makes it (found again by the run's id if both die), hands Packer its id, and deletes
    it whatever happened (here: Packer fails)."""
    cloud = FakeCloud(mocker)
    handed: dict[str, Any] = {}

    def fake_packer(cmd: list[str], *args: Any, **kwargs: Any) -> None:
        var_file = next(a.removeprefix("-var-file=") for a in cmd if a.startswith("-var-file="))
        handed.update(json.loads(Path(var_file).read_text()))
        assert list(cloud.floating_ips) == ["fip-1"], "made before Packer starts"
        raise ImagekitError("packer build failed")

    monkeypatch.setattr(packer, "upload_base", lambda config, conn, cloud: "img-1")
    monkeypatch.setattr(packer, "run_logged", fake_packer)
    with pytest.raises(ImagekitError, match="build of 'web' failed"):
        packer.build_on_cloud(config, "web", "fake")
    run = runs.current()
    assert run is not None
    assert handed["floating_ip"] == "fip-1" and handed["floating_ip_network"] == ""
    assert handed["instance_metadata"]["imagekit_run"] == run.id
    assert [r for r in cloud.created if r.startswith("floating_ip")] == ["floating_ip fip-1"]
    assert cloud.floating_ips == {} and "floating_ip fip-1" in cloud.deleted
    assert cloud.ip_requests == [
        {"floating_network_id": "net-public", "description": run_description(run.id)}
    ]
