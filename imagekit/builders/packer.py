"""Build a role's image with Packer (qemu source) on top of a DIB-built base image.

The role's install steps are its DIB element's own files (packer/provision.sh
runs them in the build VM): one source of truth for both build paths.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import openstack.config
from openstack.exceptions import ConfigException

from imagekit.builders import dib, run_build, run_logged
from imagekit.config import Config
from imagekit.errors import UserError
from imagekit.host import Requirement, kvm_usable
from imagekit.instances.access import make_key_pair
from imagekit.manifest import Package, latest_build
from imagekit.progress import Progress
from imagekit.roles import CHECKOUT, ELEMENTS_DIR, role_element
from imagekit.yamlfile import load_yaml

PACKER_DIR = CHECKOUT / "packer"
PACKER_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("packer", "packer", "builds images with Packer (--with packer)"),
    Requirement("xorriso", "xorriso", "makes the Packer build VM's NoCloud seed"),
    Requirement("qemu-system-x86_64", "qemu-system-x86", "runs the Packer build VM"),
)
# Packer's key in the build VM; provision.sh removes it from the image.
BUILD_KEY_COMMENT = "imagekit-packer-build"
_STEP = re.compile(r"==> qemu\.role: (.+)")


def element_packages(role: str, architecture: str) -> list[str]:
    """The packages of the role element's package-installs.yaml for this architecture."""
    data = load_yaml(ELEMENTS_DIR / role_element(role) / "package-installs.yaml", "element")
    packages = []
    for name, params in (data or {}).items():
        params = params or {}
        if "arch" in params and architecture not in str(params["arch"]).replace(" ", "").split(","):
            continue
        if params.get("uninstall"):
            continue
        packages.append(name)
    return packages


def _packages(config: Config, role: str) -> list[str]:
    return list(
        dict.fromkeys([*element_packages(role, config.architecture), *config.role_packages(role)])
    )


def packer_version() -> str:
    result = subprocess.run(["packer", "version"], capture_output=True, text=True, check=True)
    return result.stdout.split()[1].lstrip("v")


def base_image(config: Config) -> Path:
    """The newest DIB build of the base element alone, built now if there is none."""
    build_dir = latest_build(config.output_dir, "base") or dib.build(config, "base")
    return build_dir / "base.qcow2"


def variables(
    config: Config, role: str, base: Path, work: Path, key_file: Path
) -> dict[str, object]:
    """What imagekit hands to Packer's qemu source (a -var-file)."""
    build_main, build_security = config.resolved_mirrors()
    return {
        "role": role,
        "elements_dir": str(ELEMENTS_DIR),
        "packages": _packages(config, role),
        "admin_user": config.admin_user,
        # The build VM installs from the build mirrors (as DIB does); the image keeps its own.
        "build_apt_main": build_main,
        "build_apt_security": build_security,
        "image_apt_main": config.mirrors.image_main,
        "image_apt_security": config.mirrors.image_security,
        "ssh_private_key_file": str(key_file),
        "base_image": str(base),
        "seed_dir": str(work / "seed"),
        "output_directory": str(work / "output"),
        "packages_file": str(work / "packages.tsv"),
        "accelerator": "kvm" if kvm_usable() else "tcg",
    }


def openstack_environment(cloud: str) -> dict[str, str]:
    """The clouds.yaml entry as the OS_* variables Packer's openstack source reads."""
    try:
        region = openstack.config.OpenStackConfig().get_one(cloud=cloud)
    except ConfigException as err:
        raise UserError(f"--cloud {cloud}: {str(err).splitlines()[0]}") from None
    auth = region.config.get("auth", {})
    names = {
        "auth_url": "OS_AUTH_URL",
        "username": "OS_USERNAME",
        "password": "OS_PASSWORD",
        "project_name": "OS_PROJECT_NAME",
        "project_id": "OS_PROJECT_ID",
        "user_domain_name": "OS_USER_DOMAIN_NAME",
        "project_domain_name": "OS_PROJECT_DOMAIN_NAME",
    }
    env = {variable: str(auth[key]) for key, variable in names.items() if auth.get(key)}
    if region.region_name:
        env["OS_REGION_NAME"] = region.region_name
    return env


def openstack_variables(config: Config, role: str, source_image: str) -> dict[str, object]:
    """What imagekit hands to Packer's openstack source: an instance-based build on the cloud."""
    if config.openstack is None:
        raise UserError(f"{config.source}: openstack: section missing (needed for the cloud build)")
    return {
        "role": role,
        "elements_dir": str(ELEMENTS_DIR),
        "packages": _packages(config, role),
        "admin_user": config.admin_user,
        "image_apt_main": config.mirrors.image_main,
        "image_apt_security": config.mirrors.image_security,
        "source_image_name": source_image,
        "flavor": config.openstack.flavor,
        "networks": [config.openstack.network],
        "floating_ip_network": config.openstack.floating_ip_network or "",
        "security_groups": config.openstack.security_groups,
        "image_name": f"imagekit-{role}-packer",
        "image_visibility": "private",
        "image_members": config.publish.members,
        "image_tags": ["imagekit", f"imagekit-role-{role}"],
        "metadata": {"imagekit_role": role, "imagekit_builder": "packer"},
    }


def build(
    config: Config, role: str, base: Path | None = None, progress: Progress | None = None
) -> Path:
    """Build one role with Packer; the same build layout and manifest as the DIB path."""
    base = (base or base_image(config)).resolve()

    def produce(build_dir: Path, log: Path, progress: Progress) -> list[Package]:
        work = config.cache_dir / "tmp" / f"packer-{role}-{build_dir.name}"
        (work / "seed").mkdir(parents=True)
        try:
            key_file, public_key = make_key_pair(work, BUILD_KEY_COMMENT)
            (work / "seed" / "user-data").write_text(
                f"#cloud-config\nssh_authorized_keys:\n  - {public_key}\n"
            )
            (work / "seed" / "meta-data").write_text(
                f"instance-id: {uuid.uuid4()}\nlocal-hostname: packer-{role}\n"
            )
            var_file = work / "variables.json"
            var_file.write_text(json.dumps(variables(config, role, base, work, key_file), indent=2))
            env = {
                **os.environ,
                "PACKER_CACHE_DIR": str(config.cache_dir / "packer"),
                "CHECKPOINT_DISABLE": "1",  # no update check to the vendor's servers
            }
            run_logged(
                ["packer", "build", "-only=qemu.role", f"-var-file={var_file}", str(PACKER_DIR)],
                env,
                log,
                lambda line: _show(line, progress),
                # Packer stops its VM and removes its output on SIGINT.
                signal.SIGINT,
                owned=(str(var_file), work),
                cwd=work,  # packer_cache/ and crash logs stay out of the checkout
            )
            shutil.move(work / "output" / f"{role}.qcow2", build_dir / f"{role}.qcow2")
            return [
                Package(name=name, version=version, arch=arch)
                for name, version, arch in (
                    line.split("\t") for line in (work / "packages.tsv").read_text().splitlines()
                )
            ]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    builder = ("packer", packer_version())
    return run_build(config, role, builder, [role_element(role)], produce, progress)


def _show(line: str, progress: Progress) -> None:
    if match := _STEP.search(line):
        progress.update(match.group(1)[:70])
