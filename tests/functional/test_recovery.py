"""kill -9 at a bad moment, then the next command: nothing left on the host or in the cloud."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from imagekit import runs
from imagekit.builders import dib
from imagekit.cleanup import leftovers
from imagekit.clouds import glance
from imagekit.config import Config, PublishSettings, load_config
from imagekit.devcloud import DevCloud
from imagekit.manifest import Manifest
from imagekit.publishing import publish as publishing
from imagekit.store import Store
from tests.functional.test_failures import start_build, wait_for_log

T = TypeVar("T")


def imagekit(config_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagekit", "--config", str(config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cleanup(config_path: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "imagekit", "--config", str(config_path), "cleanup"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for(found: Callable[[], T], what: str, timeout: float = 600) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} never happened")


def run_records(config: Config, kind: str) -> list[dict[str, Any]]:
    """The records of that kind in every run, each with its run's id as "run"."""
    return [
        {**json.loads(p.read_text()), "run": p.parent.name}
        for p in (config.cache_dir / "runs").glob(f"*/{kind}-*.json")
    ]


def runs_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains marker."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_test_leaves_no_vm(config: Config, built: Callable[[str], Path]) -> None:
    web = built("web")
    path = config.source
    test = imagekit(path, "test", "web", "--build", web.name)
    (record,) = wait_for(lambda: run_records(config, "process"), "qemu started")
    workdir = str(record["paths"][0])
    killed_run = config.cache_dir / "runs" / record["run"]
    # Recorded as soon as it is forked: its command line is qemu's once setpriv has exec'd.
    wait_for(lambda: runs_with(workdir), "qemu running", timeout=30)
    assert Path(workdir).is_dir()
    test.send_signal(signal.SIGKILL)
    test.wait()

    said = cleanup(path).stdout
    assert runs_with(workdir) == [], "no qemu of the killed run is left"
    assert not Path(workdir).exists(), f"temp dir removed: {said}"
    assert not killed_run.exists(), "its run record is gone"
    assert runs.dead_runs(config.cache_dir) == []
    assert Manifest.read(web).status == "built"
    assert cleanup(path).stdout == "nothing left behind by earlier runs\n"


def test_a_killed_build_leaves_no_loop_device_and_a_failed_manifest(
    make_config: Callable[..., Path],
) -> None:
    path = make_config()
    config = load_config(path)
    dib.base_layer(config)  # the role build's own moment, not the base's
    build = start_build(path)
    wait_for_log(config.output_dir, "Calling [sudo losetup")
    build.send_signal(signal.SIGKILL)
    build.wait()
    (made,) = Store(config.output_dir).builds("web")
    build_dir = made.dir
    assert Manifest.read(build_dir).status == "building"

    said = cleanup(path).stdout
    assert f"marked build {build_dir} failed (its builder died)" in said
    manifest = Manifest.read(build_dir)
    assert manifest.status == "failed" and "died" in (manifest.error or "")
    assert runs_with(str(build_dir)) == [], "DIB is stopped"
    tmp = config.cache_dir / "tmp"
    assert leftovers(tmp) == ([], [])
    assert not list(tmp.glob(f"*web-{build_dir.name}")), "its work dir is removed"
    assert not (build_dir / "web.qcow2").exists()


@pytest.mark.usefixtures("clouds_yaml")
def test_a_killed_upload_is_deleted_by_the_next_run(
    config: Config, built: Callable[[str], Path], devcloud: DevCloud
) -> None:
    web = built("web")
    path = config.source.with_name("killed.yaml")
    path.write_text(
        config.source.read_text() + "publish: {name_format: 'killed-{role}-{build_id}'}\n"
    )
    builder = glance(devcloud.connect("devcloud"))

    def uploading() -> list[str]:
        return [i.status for i in builder.images() if i.name.startswith("killed-")]

    upload = imagekit(path, "publish", "web", "--cloud", "devcloud", "--force")
    (status,) = wait_for(uploading, "an image record")
    upload.send_signal(signal.SIGKILL)
    upload.wait()
    assert status in ("queued", "saving")

    said = cleanup(path).stdout
    assert "image" in said and "'devcloud'" in said
    assert uploading() == [], "the half upload is deleted"

    again = imagekit(path, "publish", "web", "--cloud", "devcloud", "--force")
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert uploading() == ["active"]
    publication = Manifest.read(web).publication("devcloud")
    assert publication is not None and publication.complete


@pytest.mark.usefixtures("clouds_yaml")
@pytest.mark.parametrize("step", ["share", "rotate"])
def test_an_interrupted_share_or_rotate_is_finished_by_the_next_run(
    config: Config, built: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    cfg = config.model_copy(
        update={"publish": PublishSettings(name_format=f"cut-{step}-{{role}}-{{build_id}}")}
    )
    web = built("web")

    def cut(*args: object) -> None:
        raise KeyboardInterrupt  # as a kill would, after the upload

    with monkeypatch.context() as patched:
        patched.setattr(publishing, step, cut)
        with pytest.raises(KeyboardInterrupt):
            publishing.publish(cfg, "web", "devcloud", build_id=web.name, force=True)
    (first,) = [p for p in Manifest.read(web).publications if p.name.startswith(f"cut-{step}")]
    assert not first.complete, "the upload was recorded, the missing step was not"

    again = publishing.publish(cfg, "web", "devcloud", build_id=web.name, force=True)
    assert not again.uploaded and again.image_id == first.image_id
    (done,) = [p for p in Manifest.read(web).publications if p.name.startswith(f"cut-{step}")]
    assert done.complete and done.image_id == first.image_id
