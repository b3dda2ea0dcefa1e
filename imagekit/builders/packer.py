"""Build a role's image with Packer on top of imagekit's DIB-built base image:
in a local qemu VM, or on a cloud (the openstack source: a server booted from
the base image uploaded to Glance, snapshotted, and brought back as the build).

The role's install steps are its DIB element's own files (packer/provision.sh
runs them in the build VM): one source of truth for both build paths.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import openstack.config
from openstack.connection import Connection
from openstack.exceptions import ConfigException

from imagekit import runs
from imagekit.builders import compress, dib, run_build, run_logged
from imagekit.clouds import (
    CLOUD_ERRORS,
    INTERMEDIATE,
    TOOL_TAG,
    cloud_errors,
    connect,
    glance,
    run_description,
)
from imagekit.config import Config
from imagekit.errors import ImagekitError, UserError
from imagekit.host import Requirement, kvm_usable, vm_cpus
from imagekit.instances.access import make_key_pair
from imagekit.instances.socks import socks_for_proxy_command
from imagekit.manifest import Manifest, Package, read_package_list
from imagekit.progress import Progress
from imagekit.publishing.attributes import image_attributes, image_name
from imagekit.publishing.publish import existing_image
from imagekit.publishing.upload import CHUNK, create_and_upload, file_md5, transfer
from imagekit.roles import CHECKOUT, ELEMENTS_DIR, role_element
from imagekit.store import Build
from imagekit.yamlfile import load_yaml

PACKER_DIR = CHECKOUT / "packer"
PACKER_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("packer", "packer", "builds images with Packer (--with packer)"),
    Requirement("xorriso", "xorriso", "makes the Packer build VM's NoCloud seed"),
    Requirement("qemu-system-x86_64", "qemu-system-x86", "runs the Packer build VM"),
)
# Packer's key in the build VM; provision.sh removes it from the image.
BUILD_KEY_COMMENT = "imagekit-packer-build"
_STEP = re.compile(r"==> (?:qemu|openstack)\.role: (.+)")


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
    """The image of today's base layer (the DIB build of imagekit-base that saved it)."""
    return dib.base_layer(config).base.image


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
        "cpus": vm_cpus(),
    }


def environment(config: Config, work: Path, base: Mapping[str, str]) -> dict[str, str]:
    """Packer's environment: `base`, the shared plugin/ISO cache, no update check, and its
    temporary files in the build's work dir, which goes with the build (Packer 1.6.6 leaves
    its cd_files staging directory, packer_to_cdrom*, behind in TMPDIR)."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "PACKER_CACHE_DIR": str(config.cache_dir / "packer"),
        "CHECKPOINT_DISABLE": "1",  # no update check to the vendor's servers
        "TMPDIR": str(tmp),
    }


def openstack_environment(cloud: str) -> dict[str, str]:
    """How Packer's openstack source finds the cloud: the same clouds.yaml entry (and
    secure.yaml) that openstacksdk found, read by Packer itself, so that application
    credentials, domains, CA and TLS settings all reach it, and no secret is copied."""
    config = openstack.config.OpenStackConfig()
    try:
        config.get_one(cloud=cloud)
    except ConfigException as err:
        raise UserError(f"--cloud {cloud}: {str(err).splitlines()[0]}") from None
    if not config.config_filename:
        raise UserError(f"--cloud {cloud}: Packer needs the cloud in a clouds.yaml file")
    env = {"OS_CLOUD": cloud, "OS_CLIENT_CONFIG_FILE": str(config.config_filename)}
    if config.secure_config_filename:
        env["OS_CLIENT_SECURE_FILE"] = str(config.secure_config_filename)
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
            env = environment(config, work, os.environ)
            run_logged(
                [
                    *("packer", "build", "-color=false", "-only=qemu.role"),
                    *(f"-var-file={var_file}", str(PACKER_DIR)),
                ],
                env,
                log,
                lambda line: _show(line, progress),
                # Packer stops its VM and removes its output on SIGINT.
                signal.SIGINT,
                owned=(str(var_file), work),
                cwd=work,  # packer_cache/ and crash logs stay out of the checkout
            )
            progress.update("compressing")
            compress(config, work / "output" / f"{role}.qcow2", Build(role, build_dir).image)
            return read_package_list(work / "packages.tsv")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    builder = ("packer", packer_version())
    return run_build(config, role, builder, [role_element(role)], produce, progress)


def _show(line: str, progress: Progress) -> None:
    if match := _STEP.search(line):
        progress.update(match.group(1)[:70])


def upload_base(config: Config, conn: Connection, cloud: str) -> str:
    """The DIB base image in the cloud's Glance (uploaded once, found again by content)."""
    build_dir = base_image(config).parent
    manifest = Manifest.read(build_dir)
    assert manifest.image is not None
    name = image_name(config, manifest)
    found = existing_image(conn, name, manifest.image.sha256)
    if found is not None:
        return str(found.id)
    run = runs.current()
    if run is not None:
        run.note_cloud(cloud, "images")
    image_file = build_dir / manifest.image.file
    attributes = image_attributes(
        config, manifest, False, file_md5(image_file), run.id if run else None
    )
    stored, _ = create_and_upload(conn, image_file, attributes, manifest.image.sha256)
    return str(stored["id"])


def build_on_cloud(config: Config, role: str, cloud: str, progress: Progress | None = None) -> Path:
    """Build one role on the cloud with Packer's openstack source; the same build layout
    and manifest as every build (the snapshot is downloaded, then deleted from Glance)."""
    settings = config.openstack
    if settings is None:
        raise UserError(f"{config.source}: openstack: section missing (needed for --cloud)")
    conn = connect(cloud, authenticate=True)
    with cloud_errors(cloud, "uploading the base image"):
        source_image = upload_base(config, conn, cloud)
        network = conn.network.find_network(settings.network, ignore_missing=False).id
    build_main, build_security = config.resolved_mirrors()

    def produce(build_dir: Path, log: Path, progress: Progress) -> list[Package]:
        work = config.cache_dir / "tmp" / f"packer-{role}-{build_dir.name}"
        work.mkdir(parents=True)
        run = runs.current()
        run_id = run.id if run else build_dir.name
        if run is not None:  # the build server, its floating IP and the snapshot, if we die
            run.note_cloud(cloud, "servers")
            run.note_cloud(cloud, "images")
        snapshot = f"imagekit-{role}-packer-{build_dir.name}"
        floating_ip = None
        try:
            if settings.floating_ip_network:
                # Ours, not Packer's: tagged with the run, so that it is found again even
                # if both of us die (Packer only deletes what it made itself).
                with cloud_errors(cloud, "creating the build server's floating IP"):
                    ip_network = conn.network.find_network(
                        settings.floating_ip_network, ignore_missing=False
                    )
                    floating_ip = conn.network.create_ip(
                        floating_network_id=ip_network.id, description=run_description(run_id)
                    )
            key_file, public_key = make_key_pair(work, BUILD_KEY_COMMENT)
            (work / "user-data").write_text(
                f"#cloud-config\nssh_authorized_keys:\n  - {public_key}\n"
            )
            var_file = work / "variables.json"
            variables = {
                **openstack_variables(config, role, ""),
                "source_image": source_image,
                "networks": [network],
                "build_apt_main": build_main,
                "build_apt_security": build_security,
                "apt_proxy": settings.apt_proxy or "",
                "ssh_private_key_file": str(key_file),
                "user_data_file": str(work / "user-data"),
                "packages_file": str(work / "packages.tsv"),
                # An intermediate: no role tag (rotation never sees it), shared only once
                # published; tagged with the run, so that the next run deletes a half one.
                "image_name": snapshot,
                "image_members": [],
                "image_tags": [TOOL_TAG],
                "metadata": {
                    "imagekit_builder": "packer",
                    "imagekit_run": run_id,
                    INTERMEDIATE: "packer snapshot",
                },
                "instance_name": f"imagekit-packer-{role}-{run_id}",
                "instance_metadata": {"imagekit": "throwaway", "imagekit_run": run_id},
            }
            if floating_ip is not None:
                variables |= {"floating_ip": floating_ip.id, "floating_ip_network": ""}
            env = environment(
                config,
                work,
                {k: v for k, v in os.environ.items() if not k.startswith("OS_")},
            ) | openstack_environment(cloud)
            with contextlib.ExitStack() as stack:
                if settings.ssh_proxy_command:
                    port = stack.enter_context(socks_for_proxy_command(settings.ssh_proxy_command))
                    variables |= {"ssh_proxy_host": "127.0.0.1", "ssh_proxy_port": port}
                var_file.write_text(json.dumps(variables, indent=2))
                run_logged(
                    [
                        *("packer", "build", "-color=false", "-only=openstack.role"),
                        *(f"-var-file={var_file}", str(PACKER_DIR)),
                    ],
                    env,
                    log,
                    lambda line: _show(line, progress),
                    signal.SIGINT,  # Packer deletes its server and keypair
                    owned=(str(var_file), work),
                    cwd=work,
                )
            progress.update("downloading the snapshot")
            with cloud_errors(cloud, "downloading the build's snapshot"):
                _download(conn, snapshot, work / "snapshot", progress)
            progress.update("compressing")
            compress(config, work / "snapshot", Build(role, build_dir).image)
            return read_package_list(work / "packages.tsv")
        finally:
            with contextlib.suppress(*CLOUD_ERRORS):
                for image in glance(conn).images(name=snapshot, owner=conn.current_project_id):
                    glance(conn).delete_image(image, ignore_missing=True)
            if floating_ip is not None:
                with contextlib.suppress(*CLOUD_ERRORS):
                    conn.network.delete_ip(floating_ip, ignore_missing=True)
            shutil.rmtree(work, ignore_errors=True)

    builder = ("packer", packer_version())
    return run_build(config, role, builder, [role_element(role)], produce, progress)


def _download(conn: Connection, name: str, path: Path, progress: Progress) -> None:
    images = list(glance(conn).images(name=name, owner=conn.current_project_id))
    if len(images) != 1 or images[0].status != "active":
        raise ImagekitError(f"Packer's snapshot {name} is not in Glance (or not active)")
    response = glance(conn).download_image(images[0], stream=True)
    done, started = 0, time.monotonic()
    with path.open("wb") as out:
        for chunk in response.iter_content(CHUNK):
            out.write(chunk)
            done += len(chunk)
            progress.update(
                "downloading the snapshot", transfer(done, images[0].size or done, started)
            )
