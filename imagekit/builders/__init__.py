"""Image builders: each turns a role into a qcow2 plus manifest in the same build layout.

`run_build` is the part every builder shares: the per-role lock, the build
directory and id, the manifest, the log, and what a failure or Ctrl-C leaves
(the log, a failed manifest, no half image). `run_logged` runs the builder's
tool in its own session with its output in the log and on the progress line.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from imagekit import processes, runs, sbom
from imagekit.builders import layer
from imagekit.cleanup import sweep
from imagekit.config import Config
from imagekit.errors import ImagekitError, Interrupted
from imagekit.locking import Lock
from imagekit.manifest import (
    BaseLayer,
    Manifest,
    Package,
    describe_image,
    git_source,
    new_build_id,
    utc_now,
)
from imagekit.progress import Progress
from imagekit.roles import cloud_init_datasources
from imagekit.store import Build, Store

# How long a builder gets to clean up after its stop signal before SIGKILL.
STOP_GRACE_S = 90

# Makes the image in build_dir/ROLE.qcow2 and returns its installed packages.
Producer = Callable[[Path, Path, Progress], list[Package]]


def run_build(
    config: Config,
    role: str,
    builder: tuple[str, str],
    elements: list[str],
    produce: Producer,
    progress: Progress | None = None,
    base_layer: BaseLayer | None = None,
) -> Path:
    """Build one role with `produce`; returns the build directory."""
    progress = progress or Progress(role)
    run = runs.start(config.cache_dir)
    role_dir = config.output_dir / role
    with Lock(role_dir / ".lock", f"a build of '{role}' in {role_dir}"):
        build = Build(role, role_dir / new_build_id(role_dir))
        build_id, build_dir, log = build.id, build.dir, build.log
        build_dir.mkdir(parents=True)
        manifest = Manifest(
            role=role,
            build_id=build_id,
            status="building",
            created=utc_now(),
            builder=builder[0],
            builder_version=builder[1],
            source=git_source(),
            distribution=config.distribution,
            release=config.release,
            architecture=config.architecture,
            elements=elements,
            base_layer=base_layer,
            admin_user=config.admin_user,
            ssh_key_fingerprints=[key.fingerprint for key in config.public_keys],
            authorized_keys=[key.line for key in config.public_keys],
            requested_packages=config.role_packages(role),
            datasources=cloud_init_datasources(),
            run_id=run.id,
        )
        manifest.write(build_dir)
        started = time.monotonic()
        image = build.image
        try:
            manifest.packages = produce(build_dir, log, progress)
            progress.update("writing manifest")
            manifest.image = describe_image(image)
            manifest.sbom_sha256 = sbom.write(build, manifest)
            build.checksum_file.write_text(f"{manifest.image.sha256}  {image.name}\n")
            manifest.status = "built"
        except BaseException as err:
            progress.close()
            manifest.status = "failed"
            manifest.error = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
            image.unlink(missing_ok=True)
            if isinstance(err, KeyboardInterrupt):
                raise Interrupted(f"build of '{role}' was interrupted; log: {log}") from None
            raise ImagekitError(f"build of '{role}' failed; log: {log}") from err
        finally:
            manifest.finished = utc_now()
            manifest.duration_s = round(time.monotonic() - started, 1)
            Manifest.update(build_dir, lambda current: _finish(current, manifest))
        progress.finish(f"built {build_dir} in {manifest.duration_s:.0f}s")
        return build_dir


def compression_option(config: Config) -> str:
    """qemu-img's -o for the configured qcow2 compression (every builder's last step)."""
    return f"compression_type={config.image_compression}"


def compress(config: Config, source: Path, target: Path) -> None:
    """A compressed qcow2 copy, as DIB makes its own (for what Packer hands over)."""
    cmd = ["qemu-img", "convert", "-c", "-o", compression_option(config), "-O", "qcow2"]
    subprocess.run([*cmd, str(source), str(target)], check=True, capture_output=True)


def _finish(current: Manifest, built: Manifest) -> None:
    """The build's outcome onto the manifest as it is now on disk."""
    for name in ("status", "error", "image", "sbom_sha256", "packages", "finished", "duration_s"):
        setattr(current, name, getattr(built, name))


def run_logged(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    on_line: Callable[[str], None],
    stop_signal: signal.Signals,
    owned: tuple[str, Path] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a tool in its own session, its output to the log and to on_line.

    On Ctrl-C/SIGTERM/SIGHUP (KeyboardInterrupt here, once: the CLI's handler
    ignores later signals) the tool gets stop_signal so that it cleans up after
    itself, and we wait for it; SIGKILL only after STOP_GRACE_S. If we die
    without cleaning up, it gets stop_signal from the kernel, and the run
    records (marker in its command line, its work dir) let the next imagekit
    command stop it and remove what it left: owned is (a string only its command
    line holds, its work dir).
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = processes.spawn(
            cmd, stdout=subprocess.PIPE, env=env, cwd=cwd, die_with_us=stop_signal
        )
        run = runs.current() if owned else None
        if run is not None and owned is not None:
            run.note_process(proc.pid, owned[0], [owned[1]])
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                on_line(line.decode(errors="replace"))
            returncode = proc.wait()
        except BaseException:
            _stop(proc, out, stop_signal)
            raise
        finally:
            if run is not None and proc.poll() is not None:
                run.forget_process(proc.pid)
    if returncode != 0:
        raise ImagekitError(f"{Path(cmd[0]).name} exited with status {returncode}")


def _stop(proc: "subprocess.Popen[bytes]", out: BinaryIO, stop_signal: signal.Signals) -> None:
    out.write(f"imagekit: stopping the build ({stop_signal.name})\n".encode())
    assert proc.stdout is not None
    stdout = proc.stdout
    os.set_blocking(stdout.fileno(), False)

    def keep_logging() -> None:
        # What the tool says while it cleans up belongs in the log.
        if chunk := stdout.read():
            out.write(chunk)

    with contextlib.suppress(ImagekitError):  # it would not stop: SIGKILL was all we had
        processes.stop_groups([proc.pid], stop_signal, STOP_GRACE_S, keep_logging)


def recover_builds(config: Config) -> list[str]:
    """Builds left "building" by a builder that died (kill -9, OOM): marked failed,
    their half image and work dirs (mounts, loop devices) removed."""
    done = layer.remove_partial(config)
    if not config.output_dir.is_dir():
        return done
    for role_dir in sorted(p for p in config.output_dir.iterdir() if p.is_dir()):
        for build, manifest in Store(config.output_dir).readable(role_dir.name):
            build_dir = build.dir
            # Without a run id, whether its builder lives cannot be proven.
            if manifest.status != "building" or manifest.run_id is None:
                continue
            if runs.is_alive(config.cache_dir, manifest.run_id):
                continue
            if Manifest.read(build_dir).status != "building":
                continue  # it finished between our reading and its run ending
            for work_dir in (config.cache_dir / "tmp").glob(f"*{role_dir.name}-{build_dir.name}"):
                done += sweep(work_dir)
                shutil.rmtree(work_dir, ignore_errors=True)
                done.append(f"removed {work_dir}")
            build.image.unlink(missing_ok=True)
            build.update(_mark_dead)
            done.append(f"marked build {build_dir} failed (its builder died)")
    return done


def _mark_dead(manifest: Manifest) -> None:
    manifest.status = "failed"
    manifest.error = f"its builder (run {manifest.run_id}) died; marked failed"
    manifest.finished = utc_now()
