"""What imagekit hands to Packer, for both sources; the templates share the DIB elements."""

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.builders import packer
from imagekit.config import load_config
from imagekit.errors import UserError
from imagekit.roles import ELEMENTS_DIR, ROLES

WriteConfig = Callable[[str], Path]


def test_element_packages_follow_package_installs_yaml() -> None:
    assert packer.element_packages("web", "amd64") == ["nginx-light", "php-fpm", "php-mysql"]
    assert packer.element_packages("dns", "amd64")[:2] == ["unbound", "dns-root-data"]
    # The base element's cloud kernel is for amd64 only.
    assert "linux-image-cloud-amd64" not in packer.element_packages("base", "arm64")


def test_qemu_variables(write_config: WriteConfig, tmp_path: Path) -> None:
    config = load_config(
        write_config("ssh_keys: [{key}]\npackages: [curl]\nroles: {web: {packages: [php-gd]}}\n")
    )
    base, key = tmp_path / "base.qcow2", tmp_path / "id_ed25519"
    variables = packer.variables(config, "web", base, tmp_path, key)
    assert variables["role"] == "web"
    assert variables["elements_dir"] == str(ELEMENTS_DIR)
    assert variables["packages"] == ["nginx-light", "php-fpm", "php-mysql", "curl", "php-gd"]
    assert variables["base_image"] == str(base)
    assert variables["ssh_private_key_file"] == str(key)
    assert variables["seed_dir"] == str(tmp_path / "seed")
    assert variables["output_directory"] == str(tmp_path / "output")
    assert variables["accelerator"] in ("kvm", "tcg")
    assert variables["admin_user"] == "admin"
    # The build VM installs from the build mirrors; the image keeps the public archive.
    assert (variables["build_apt_main"], variables["build_apt_security"]) == (
        config.resolved_mirrors()
    )
    assert variables["image_apt_main"] == "http://deb.debian.org/debian"
    assert variables["image_apt_security"] == "http://security.debian.org/debian-security"
    declared = (packer.PACKER_DIR / "variables.pkr.hcl").read_text()
    for name in variables:
        assert f'variable "{name}"' in declared, name


def test_openstack_variables(write_config: WriteConfig) -> None:
    config = load_config(
        write_config(
            "ssh_keys: [{key}]\n"
            "openstack: {flavor: m1.small, network: private, floating_ip_network: public, "
            "security_groups: [ssh]}\n"
            "publish: {members: [alpha]}\n"
        )
    )
    variables = packer.openstack_variables(config, "db", "debian-12")
    assert variables["source_image_name"] == "debian-12"
    assert variables["flavor"] == "m1.small"
    assert variables["networks"] == ["private"]
    assert variables["floating_ip_network"] == "public"
    assert variables["security_groups"] == ["ssh"]
    assert variables["image_members"] == ["alpha"]
    assert variables["image_tags"] == ["imagekit", "imagekit-role-db"]
    assert variables["packages"] == ["mariadb-server"]


def test_templates_run_the_elements_not_a_copy() -> None:
    template = (packer.PACKER_DIR / "build.pkr.hcl").read_text()
    assert "${var.elements_dir}/imagekit-${var.role}" in template
    provision = (packer.PACKER_DIR / "provision.sh").read_text()
    for role in ROLES:  # no role's package or step is written in packer/
        for name in packer.element_packages(role, "amd64"):
            assert name not in template + provision, name


def test_packer_reads_the_same_clouds_yaml_entry_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Application credentials and a CA file are not lost on the way (no OS_* copies of
    single auth fields), and no secret is in Packer's environment."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  prod:\n    region_name: RegionTwo\n    cacert: /etc/ssl/our-ca.pem\n"
        "    auth_type: v3applicationcredential\n    auth:\n"
        "      auth_url: https://keystone.example:5000/v3\n"
        "      application_credential_id: abc\n      application_credential_secret: s3cret\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    env = packer.openstack_environment("prod")
    assert env == {"OS_CLOUD": "prod", "OS_CLIENT_CONFIG_FILE": str(clouds)}
    with pytest.raises(UserError, match="--cloud nope"):
        packer.openstack_environment("nope")


def test_packer_keeps_its_temporary_files_in_the_build_work_dir(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """Packer 1.6.6 leaves its cd_files staging dir in TMPDIR: under `work`, it goes with it."""
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    work = tmp_path / "work"
    env = packer.environment(config, work, {"PATH": "/usr/bin", "TMPDIR": "/tmp"})
    assert env["TMPDIR"] == str(work / "tmp") and (work / "tmp").is_dir()
    assert env["PATH"] == "/usr/bin"
    assert env["PACKER_CACHE_DIR"] == str(config.cache_dir / "packer")
    assert env["CHECKPOINT_DISABLE"] == "1"
