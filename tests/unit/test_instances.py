"""Instance plumbing that needs no VM: accelerator choice, seed, keys, cleanup."""

import json
import os
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml

from imagekit.host import kvm_usable
from imagekit.instances import SshAddress, qemu, throwaway
from imagekit.instances.access import cloud_init_errors, make_key_pair
from imagekit.instances.qemu import _with_key
from imagekit.instances.seed import write_nocloud_seed
from imagekit.manifest import image_info
from imagekit.sshkeys import parse_public_keys


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return path


@pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs an openable /dev/kvm"
)
def test_kvm_needs_more_than_an_openable_dev_kvm(tmp_path: Path) -> None:
    modules = tmp_path / "module"
    modules.mkdir()
    assert kvm_usable(_cpuinfo(tmp_path, "vmx"), modules)
    assert not kvm_usable(_cpuinfo(tmp_path, "hypervisor"), modules), "no vmx/svm flag"
    (modules / "kvm_pvm").mkdir()
    assert not kvm_usable(_cpuinfo(tmp_path, "svm"), modules), "nested kvm_pvm"


def test_no_kvm_without_dev_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda *args: False)
    assert not kvm_usable(_cpuinfo(tmp_path, "vmx"), tmp_path)


def test_nocloud_seed_is_a_cidata_volume(tmp_path: Path) -> None:
    seed = tmp_path / "seed.iso"
    write_nocloud_seed(seed, "#cloud-config\n{}\n", "instance-id: i-1\n")
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, text in (
            ("user-data", "#cloud-config\n{}\n"),
            ("meta-data", "instance-id: i-1\n"),
        ):
            with iso.open_file_from_iso(rr_path=f"/{name}") as f:
                assert f.read().decode() == text
    finally:
        iso.close()


def test_fresh_key_pair_per_run(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    private_a, public_a = make_key_pair(tmp_path / "a", "run-a")
    _, public_b = make_key_pair(tmp_path / "b", "run-b")
    assert public_a != public_b
    assert (private_a.stat().st_mode & 0o777) == 0o600
    assert "OPENSSH PRIVATE KEY" in private_a.read_text()
    assert parse_public_keys(public_a)[0].comment == "run-a"


def test_run_key_is_added_to_user_data() -> None:
    merged = _with_key("#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAA old]\n", "new-key")
    assert merged.startswith("#cloud-config\n")
    assert yaml.safe_load(merged)["ssh_authorized_keys"] == ["ssh-ed25519 AAAA old", "new-key"]


class _FakeInstance:
    accelerator = "tcg"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.stopped = 0

    def start(self) -> SshAddress:
        if self.fail:
            raise TimeoutError("no SSH")
        return SshAddress("127.0.0.1", 2222, "admin", "/k")

    def describe(self) -> str:
        return "fake"

    def stop(self) -> None:
        self.stopped += 1


@pytest.mark.parametrize("error", [RuntimeError("suite crashed"), KeyboardInterrupt()])
def test_throwaway_always_stops(error: BaseException) -> None:
    instance = _FakeInstance()
    with pytest.raises(type(error)), throwaway(instance):
        raise error
    assert instance.stopped == 1


def test_throwaway_stops_when_boot_fails() -> None:
    instance = _FakeInstance(fail=True)
    with pytest.raises(TimeoutError), throwaway(instance):
        pass
    assert instance.stopped == 1


def test_keep_leaves_it_running() -> None:
    instance = _FakeInstance()
    with throwaway(instance, keep=True):
        pass
    assert instance.stopped == 0


def test_a_proxy_command_reaches_addresses_the_builder_cannot_route_to() -> None:
    address = SshAddress("203.0.113.5", 22, "admin", "/k", "ip netns exec ns nc %h %p")
    assert "-o ProxyCommand='ip netns exec ns nc %h %p' admin@203.0.113.5" in address.command
    assert "ProxyCommand" not in SshAddress("127.0.0.1", 2222, "admin", "/k").command


def test_a_throwaway_disk_is_bigger_than_its_image(tmp_path: Path) -> None:
    """As a flavor's disk is: the image's growpart has something to grow (the common suite
    checks that the root filesystem fills the disk)."""
    image, overlay = tmp_path / "image.qcow2", tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    qemu.make_overlay(image, overlay)
    info = image_info(overlay)
    assert info["virtual-size"] == (1 << 30) + qemu.DISK_HEADROOM
    assert info["backing-filename"] == str(image)


def test_cloud_init_errors_come_from_its_result_one_line_each() -> None:
    done = '{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/sr0]", "errors": []}}\n'
    assert cloud_init_errors(done) == []
    failed = {
        "v1": {
            "datasource": None,
            "errors": ["('scripts_user', RuntimeError('Runparts: 1 failures\nin 1 attempted'))"],
        }
    }
    assert cloud_init_errors(json.dumps(failed)) == [
        "('scripts_user', RuntimeError('Runparts: 1 failures in 1 attempted'))"
    ]
    # A result cut short or not cloud-init's is an error, not a pass.
    assert cloud_init_errors('{"v1": {"datasource"')[0].startswith("unreadable")
    assert cloud_init_errors("")[0].startswith("unreadable")
    assert cloud_init_errors("[]")[0].startswith("unreadable")
