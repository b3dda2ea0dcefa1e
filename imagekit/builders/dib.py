"""Build a role's image with diskimage-builder."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import BinaryIO

from imagekit import host
from imagekit.cleanup import sweep
from imagekit.config import Config
from imagekit.errors import ImagekitError, Interrupted
from imagekit.locking import Lock
from imagekit.manifest import (
    Manifest,
    describe_image,
    git_source,
    new_build_id,
    read_dpkg_manifest,
    utc_now,
)
from imagekit.progress import Progress
from imagekit.roles import DISTRO_ELEMENTS, ELEMENTS_DIR, role_element

CLOUD_INIT_DATASOURCES = "NoCloud, ConfigDrive, OpenStack"
# How long DIB gets to unmount and detach after SIGTERM before SIGKILL.
STOP_GRACE_S = 90

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
    progress = progress or Progress(role)
    role_dir = config.output_dir / role
    with Lock(role_dir / ".lock", f"a build of '{role}' in {role_dir}"):
        build_id = new_build_id(role_dir)
        build_dir = role_dir / build_id
        build_dir.mkdir(parents=True)
        tmp_dir = config.cache_dir / "tmp" / f"{role}-{build_id}"
        tmp_dir.mkdir(parents=True)
        log = build_dir / "build.log"
        manifest = Manifest(
            role=role,
            build_id=build_id,
            status="building",
            created=utc_now(),
            builder_version=version("diskimage-builder"),
            source=git_source(),
            distribution=config.distribution,
            release=config.release,
            architecture=config.architecture,
            elements=elements(config, role),
            admin_user=config.admin_user,
            ssh_key_fingerprints=[key.fingerprint for key in config.public_keys],
        )
        manifest.write(build_dir)
        started = time.monotonic()
        try:
            _run(command(config, role, build_dir), environment(config, tmp_dir), log, progress)
            progress.update("writing manifest")
            image = build_dir / f"{role}.qcow2"
            manifest.image = describe_image(image)
            manifest.packages = read_dpkg_manifest(
                build_dir / f"{role}.d" / "dib-manifests" / f"dib-manifest-dpkg-{role}"
            )
            (build_dir / f"{role}.qcow2.sha256").write_text(
                f"{manifest.image.sha256}  {image.name}\n"
            )
            manifest.status = "built"
        except BaseException as err:
            manifest.status = "failed"
            manifest.error = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
            (build_dir / f"{role}.qcow2").unlink(missing_ok=True)
            if isinstance(err, KeyboardInterrupt):
                raise Interrupted(f"build of '{role}' was interrupted; log: {log}") from None
            raise ImagekitError(f"build of '{role}' failed; log: {log}") from err
        finally:
            manifest.finished = utc_now()
            manifest.duration_s = round(time.monotonic() - started, 1)
            manifest.write(build_dir)
            for action in sweep(tmp_dir):
                progress.update("cleanup", action)
            shutil.rmtree(tmp_dir, ignore_errors=True)
        progress.finish(f"built {build_dir} in {manifest.duration_s:.0f}s")
        return build_dir


def _run(cmd: list[str], env: dict[str, str], log: Path, progress: Progress) -> None:
    """Run DIB in its own session, its output to the log and the progress line.

    On Ctrl-C/SIGTERM (KeyboardInterrupt here) DIB gets SIGTERM so that its
    own exit trap unmounts and detaches; the caller sweeps what it missed.
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                _show(line.decode(errors="replace"), progress)
            returncode = proc.wait()
        except BaseException:
            _stop(proc, out)
            raise
    if returncode != 0:
        raise ImagekitError(f"disk-image-create exited with status {returncode}")


def _show(line: str, progress: Progress) -> None:
    if match := _HOOK.search(line):
        progress.update(match.group(1), match.group(2))
    elif "Converting image using qemu-img convert" in line:
        progress.update("qemu-img convert")


def _stop(proc: subprocess.Popen[bytes], out: BinaryIO) -> None:
    out.write(b"imagekit: stopping disk-image-create\n")
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while proc.poll() is None and time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            out.write(chunk)
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
