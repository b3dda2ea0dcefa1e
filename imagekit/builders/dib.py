"""Build a role's image with diskimage-builder."""

import os
import re
import shutil
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from imagekit import host
from imagekit.builders import compression_option, layer, run_build, run_logged
from imagekit.cleanup import sweep
from imagekit.config import Config
from imagekit.locking import Lock
from imagekit.manifest import BaseLayer, Package, read_package_list
from imagekit.progress import Progress, say
from imagekit.roles import DISTRO_ELEMENTS, ELEMENTS_DIR, role_element

# The shared base: built once per set of inputs (see imagekit.builders.layer).
BASE = layer.BASE

_HOOK = re.compile(r"dib-run-parts Running \S*/([a-z-]+\.d)/(\S+)")


def elements(config: Config, role: str) -> list[str]:
    """The base from the distribution's elements; a role on the base layer (imagekit-layer,
    its element's dependency), both made a VM disk by `vm`."""
    if role == BASE:
        return [*DISTRO_ELEMENTS[config.distribution], role_element(BASE)]
    return ["vm", role_element(role)]


def packages(config: Config, role: str) -> list[str]:
    """The packages given to disk-image-create -p: the shared ones go into the base."""
    if role == BASE:
        return list(config.packages)
    return [p for p in config.role_packages(role) if p not in config.packages]


def environment(config: Config, tmp_dir: Path) -> dict[str, str]:
    """The DIB_* settings of a build, from the config alone."""
    main, security = config.resolved_mirrors()
    cache = dib_cache(config)
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
        "DIB_APT_MINIMAL_CREATE_INTERFACES": "0",
        "DIB_IMAGEKIT_APT_MAIN": config.mirrors.image_main,
        "DIB_IMAGEKIT_APT_SECURITY": config.mirrors.image_security,
        "DIB_IMAGEKIT_ADMIN_USER": config.admin_user,
        "DIB_IMAGEKIT_AUTHORIZED_KEYS": "\n".join(key.line for key in config.public_keys),
    }


def dib_cache(config: Config) -> Path:
    return config.cache_dir / "dib"


def check_debootstrap_cache(cache: Path) -> list[str]:
    """Remove debootstrap tarballs that an interrupted build left half written.

    DIB writes the tarball in place (`tar -zcf`), so a build killed meanwhile
    leaves a truncated one that later builds would unpack. A tarball is
    trusted once `gzip -t` passed; a stamp of its size and mtime saves testing
    it again. Call with the cache lock held.
    """
    removed = []
    for tarball in sorted(cache.glob("debootstrap-*.tar.gz")):
        stamp = tarball.with_name(tarball.name + ".ok")
        stat = tarball.stat()
        mark = f"{stat.st_size} {stat.st_mtime_ns}\n"
        if stamp.is_file() and stamp.read_text() == mark:
            continue
        if subprocess.run(["gzip", "-t", str(tarball)], capture_output=True).returncode == 0:
            stamp.write_text(mark)
        else:
            tarball.unlink()
            stamp.unlink(missing_ok=True)
            removed.append(f"removed the truncated debootstrap cache {tarball}")
    return removed


def command(config: Config, role: str, build_dir: Path) -> list[str]:
    """disk-image-create's arguments for a build of role (or BASE) into build_dir."""
    # -n: without DIB's implicit `base` element, which installs software-properties-common
    # on bookworm (PackageKit, polkit, GLib, ICU: none of it a cloud guest uses); imagekit-base
    # brings what we keep of it (its element deps, the package upgrade).
    cmd = ["disk-image-create", "-n", "-a", config.architecture, "-t", "qcow2"]
    cmd += ["-o", str(build_dir / role), "--qemu-img-options", compression_option(config)]
    if wanted := packages(config, role):
        cmd += ["-p", ",".join(wanted)]
    return cmd + elements(config, role)


def build(config: Config, role: str, progress: Progress | None = None) -> Path:
    """Build one role on the base layer (made first if today's is not there yet); returns
    the build directory (image, sha256, log, manifest)."""
    base = base_layer(config)
    on = BaseLayer(key=base.record.key, build_dir=base.record.base_build)
    env = {
        "DIB_IMAGEKIT_LAYER": str(base.tar),
        # What the role asked for stays, even if a build tool brought it first.
        "DIB_IMAGEKIT_ROLE_PACKAGES": " ".join(config.role_packages(role)),
    }
    return _build(config, role, env, progress, on)


def base_layer(config: Config) -> layer.Layer:
    """Today's base layer: from the cache, or built now (with its base image)."""

    def build_base(tar: Path) -> Path:
        return _build(config, BASE, {"DIB_IMAGEKIT_SAVE_LAYER": str(tar)}, None)

    return layer.ensure(config, build_base)


def _build(
    config: Config,
    role: str,
    extra_env: dict[str, str],
    progress: Progress | None,
    base: BaseLayer | None = None,
) -> Path:
    def produce(build_dir: Path, log: Path, progress: Progress) -> list[Package]:
        tmp_dir = config.cache_dir / "tmp" / f"{role}-{build_dir.name}"
        tmp_dir.mkdir(parents=True)
        cache = dib_cache(config)
        try:
            # DIB's debootstrap tarball and apt cache are shared by every role and
            # written in place: one build at a time uses them.
            with Lock(cache / ".lock", f"another build using {cache}", wait=True):
                for action in check_debootstrap_cache(cache):
                    say(f"imagekit: {action}")
                run_logged(
                    command(config, role, build_dir),
                    {**environment(config, tmp_dir), **extra_env},
                    log,
                    lambda line: _show(line, progress),
                    # DIB's exit trap unmounts and detaches; sweep() catches the rest.
                    signal.SIGTERM,
                    owned=(str(build_dir), tmp_dir),
                )
        finally:
            for action in sweep(tmp_dir):
                progress.update("cleanup", action)
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return read_package_list(
            build_dir / f"{role}.d" / "dib-manifests" / "imagekit-packages.tsv"
        )

    builder = ("diskimage-builder", version("diskimage-builder"))
    return run_build(config, role, builder, elements(config, role), produce, progress, base)


def _show(line: str, progress: Progress) -> None:
    if match := _HOOK.search(line):
        progress.update(match.group(1), match.group(2))
    elif "Converting image using qemu-img convert" in line:
        progress.update("qemu-img convert")
