"""Build a role's image with diskimage-builder."""

import os
import re
import shutil
import signal
import sys
from importlib.metadata import version
from pathlib import Path

from imagekit import host
from imagekit.builders import run_build, run_logged
from imagekit.cleanup import sweep
from imagekit.config import Config
from imagekit.manifest import Package, read_dpkg_manifest
from imagekit.progress import Progress
from imagekit.roles import DISTRO_ELEMENTS, ELEMENTS_DIR, role_element

CLOUD_INIT_DATASOURCES = "NoCloud, ConfigDrive, OpenStack"

_HOOK = re.compile(r"dib-run-parts Running \S*/([a-z-]+\.d)/(\S+)")


def elements(config: Config, role: str) -> list[str]:
    return [*DISTRO_ELEMENTS[config.distribution], role_element(role)]


def environment(config: Config, tmp_dir: Path) -> dict[str, str]:
    """The DIB_* settings of a build, from the config alone."""
    main, security = config.resolved_mirrors()
    cache = config.cache_dir / "dib"
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", ""), host.SYSTEM_PATH]
    if not host.has_device_mapper():
        path.insert(0, str(host.SHIM_DIR))
    return {
        **os.environ,
        "PATH": ":".join(path),
        "TMPDIR": str(tmp_dir),
        "ELEMENTS_PATH": str(ELEMENTS_DIR),
        "DIB_RELEASE": config.release,
        "DIB_DISTRIBUTION_MIRROR": main,
        "DIB_DEBIAN_SECURITY_MIRROR": security,
        "DIB_IMAGE_CACHE": str(cache),
        "DIB_DEBOOTSTRAP_CACHE": "1",
        "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE": "1",
        "DIB_CLOUD_INIT_DATASOURCES": CLOUD_INIT_DATASOURCES,
        "DIB_APT_MINIMAL_CREATE_INTERFACES": "0",
        "DIB_IMAGEKIT_APT_MAIN": config.mirrors.image_main,
        "DIB_IMAGEKIT_APT_SECURITY": config.mirrors.image_security,
        "DIB_IMAGEKIT_ADMIN_USER": config.admin_user,
        "DIB_IMAGEKIT_AUTHORIZED_KEYS": "\n".join(key.line for key in config.public_keys),
    }


def command(config: Config, role: str, build_dir: Path) -> list[str]:
    cmd = ["disk-image-create", "-a", config.architecture, "-t", "qcow2"]
    cmd += ["-o", str(build_dir / role)]
    packages = config.role_packages(role)
    if packages:
        cmd += ["-p", ",".join(packages)]
    return cmd + elements(config, role)


def build(config: Config, role: str, progress: Progress | None = None) -> Path:
    """Build one role; returns the build directory (image, sha256, log, manifest)."""

    def produce(build_dir: Path, log: Path, progress: Progress) -> list[Package]:
        tmp_dir = config.cache_dir / "tmp" / f"{role}-{build_dir.name}"
        tmp_dir.mkdir(parents=True)
        try:
            run_logged(
                command(config, role, build_dir),
                environment(config, tmp_dir),
                log,
                lambda line: _show(line, progress),
                # DIB's exit trap unmounts and detaches; sweep() catches the rest.
                signal.SIGTERM,
            )
        finally:
            for action in sweep(tmp_dir):
                progress.update("cleanup", action)
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return read_dpkg_manifest(
            build_dir / f"{role}.d" / "dib-manifests" / f"dib-manifest-dpkg-{role}"
        )

    builder = ("diskimage-builder", version("diskimage-builder"))
    return run_build(config, role, builder, elements(config, role), produce, progress)


def _show(line: str, progress: Progress) -> None:
    if match := _HOOK.search(line):
        progress.update(match.group(1), match.group(2))
    elif "Converting image using qemu-img convert" in line:
        progress.update("qemu-img convert")
