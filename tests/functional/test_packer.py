"""`imagekit build web --with packer` for real (qemu, TCG here), and the openstack source."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from imagekit.builders import packer
from imagekit.config import Config, OpenStackSettings
from imagekit.devcloud import DevCloud
from imagekit.manifest import Manifest
from tests.functional.imagefs import apt_source_uris, mounted_root


# A base build and a TCG VM that installs the web role: 13-16 min, a quarter of the CI
# budget. The DIB path runs the same element scripts in every CI run. Run it with:
# tox -e functional -- -m extended tests/functional/test_packer.py
@pytest.mark.extended
def test_web_built_with_packer_in_a_local_vm(config: Config, tmp_path: Path) -> None:
    """The image, as built and before any boot (the same provision.sh makes the image
    that passes the web suite on a cloud: test_devcloud_compute)."""
    build_dir = packer.build(config, "web")
    manifest = Manifest.read(build_dir)
    assert manifest.status == "built" and manifest.builder == "packer"
    assert manifest.image is not None and manifest.image.format == "qcow2"
    assert (build_dir / "web.qcow2.sha256").read_text().startswith(manifest.image.sha256)
    assert {"nginx-light", "php-fpm"} <= {p.name for p in manifest.packages}
    assert manifest.image.virtual_size_bytes < 4 * 2**30, "not grown to Packer's 40G default"

    with mounted_root(build_dir / "web.qcow2", tmp_path) as root:
        keys = (root / "home/admin/.ssh/authorized_keys").read_text().strip()
        assert keys == config.public_keys[0].line, "the build VM's key is gone"
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert (root / "etc/machine-id").read_text() == ""
        assert not (root / "var/lib/cloud/instances").exists()
        assert not (root / "root/.ssh/authorized_keys").exists(), "the build VM's key for root"
        # What the build VM's run wrote, some of it as it shut down (imagekit-sysprep).
        assert not (root / "var/lib/systemd/random-seed").exists()
        assert not list((root / "var/log/journal").iterdir()), "named by its machine id"
        assert not list((root / "var/lib/systemd/timers").glob("stamp-*"))
        assert not list((root / "var/lib/dhcp").glob("*.leases"))
        assert not (root / "etc/udev/rules.d/70-persistent-net.rules").exists()
        assert (root / "var/log/wtmp").stat().st_size == 0
        assert (root / "etc/hostname").read_text() == "debian\n"
        assert "packer" not in (root / "etc/hosts").read_text()
        assert apt_source_uris(root) == {
            config.mirrors.image_main,
            config.mirrors.image_security,
        }


def test_openstack_source_validates_against_the_dev_cloud(
    config: Config, devcloud: DevCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packer's validate logs in to Keystone: right credentials pass, wrong ones fail."""
    devcloud.up()
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(devcloud.clouds_yaml))
    settings = OpenStackSettings(flavor="m1.small", network="private")
    cfg = config.model_copy(update={"openstack": settings})
    var_file = tmp_path / "openstack.json"
    var_file.write_text(json.dumps(packer.openstack_variables(cfg, "web", "debian-12")))
    credentials = packer.openstack_environment("devcloud")

    def validate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "packer",
                "validate",
                "-only=openstack.role",
                f"-var-file={var_file}",
                str(packer.PACKER_DIR),
            ],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1", **env},
            timeout=120,
        )

    assert set(credentials) == {"OS_CLOUD", "OS_CLIENT_CONFIG_FILE"}, "no secret in the env"
    result = validate(credentials)
    assert result.returncode == 0, result.stdout + result.stderr
    # Packer reads the entry itself: a clouds.yaml with a wrong password is refused.
    clouds = yaml.safe_load(devcloud.clouds_yaml.read_text())
    clouds["clouds"]["devcloud"]["auth"]["password"] = "wrong"
    wrong = tmp_path / "clouds.yaml"
    wrong.write_text(yaml.safe_dump(clouds))
    refused = validate({**credentials, "OS_CLIENT_CONFIG_FILE": str(wrong)})
    assert refused.returncode != 0 and "Authentication failed" in refused.stdout + refused.stderr
