"""Crash recovery on the host: what a run killed with -9 left is found and removed, only that."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagekit import clouds, runs
from imagekit.builders import recover_builds
from imagekit.config import load_config
from imagekit.errors import ImagekitError
from imagekit.instances.qemu import QemuInstance
from imagekit.manifest import Manifest
from tests.unit.manifests import make_manifest


def sleeper(*args: str) -> subprocess.Popen[bytes]:
    """A process whose command line carries args (python ignores them)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *args], start_new_session=True
    )
    # /proc/PID/cmdline is empty for a moment after exec.
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        time.sleep(0.01)
    return proc


@pytest.fixture(autouse=True)
def no_current_run() -> Iterator[None]:
    yield
    runs.end()


def dead_run(cache: Path, script: str) -> str:
    """Run script in a registered run, then kill -9 it; returns the dead run's id."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from imagekit import runs\n"
            f"run = runs.start(Path({str(cache)!r}))\n{script}\n"
            "print(run.id, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    child.kill()
    child.wait()
    return run_id


def gone(proc: subprocess.Popen[bytes], timeout: float = 10) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_dead_runs_process_is_stopped_and_its_dir_removed(tmp_path: Path) -> None:
    work = tmp_path / "imagekit-test-web-abc"
    work.mkdir()
    vm = sleeper(str(work / "overlay.qcow2"))
    stranger = sleeper("not-ours")
    try:
        run_id = dead_run(
            tmp_path / "cache",
            f"run.note_process({vm.pid}, {str(work)!r}, [Path({str(work)!r})])\n"
            # A recorded pid that now belongs to another process: never killed.
            f"run.note_process({stranger.pid}, '/no/such/marker', [])",
        )
        assert runs.dead_runs(tmp_path / "cache") == [run_id]
        done = runs.recover(tmp_path / "cache")
        assert gone(vm), "the recorded process whose command line matched was stopped"
        assert stranger.poll() is None, "a process that is not provably ours is left alone"
        assert not work.exists()
        assert f"stopped pid {vm.pid} left by run {run_id}" in done
        assert not (tmp_path / "cache" / "runs" / run_id).exists()
        assert runs.dead_runs(tmp_path / "cache") == []
    finally:
        for proc in (vm, stranger):
            proc.kill()
            proc.wait()


def test_a_test_vm_killed_before_qemu_started_leaves_no_files(tmp_path: Path) -> None:
    """Its temp dir (the run's SSH key goes there) is in the run's directory from the start."""
    image = tmp_path / "web.qcow2"
    image.touch()
    run_id = dead_run(
        tmp_path / "cache",
        "from imagekit.instances.qemu import QemuInstance\n"
        f"vm = QemuInstance(Path({str(image)!r}), 'admin', 'imagekit-test-web', "
        "stop_with_us=True)\n"
        "assert vm.workdir.parent == run.directory\n"
        "(vm.workdir / 'id_ed25519').write_text('private')",
    )
    assert runs.recover(tmp_path / "cache") == []
    assert not (tmp_path / "cache" / "runs" / run_id).exists()
    kept = QemuInstance(image, "admin", "imagekit-kept-web")  # --keep: outlives every run
    try:
        assert not kept.workdir.is_relative_to(tmp_path)
    finally:
        kept.stop()


def test_a_live_run_is_left_alone(tmp_path: Path) -> None:
    vm = sleeper("marker-live")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from imagekit import runs\n"
            f"run = runs.start(Path({str(tmp_path)!r}))\n"
            f"run.note_process({vm.pid}, 'marker-live', [])\n"
            "print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert runs.recover(tmp_path) == []
        assert runs.dead_runs(tmp_path) == []
        assert vm.poll() is None
    finally:
        for proc in (vm, holder):
            proc.kill()
            proc.wait()


def test_a_normal_exit_leaves_no_record(tmp_path: Path) -> None:
    run = runs.start(tmp_path)
    # A child that has ended: its pid no longer runs a command line with the marker.
    run.note_process(os.getpid(), "/no/such/marker", [])
    runs.end()
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_failed_clean_up_keeps_the_record_for_the_next_command(tmp_path: Path) -> None:
    """Our own deletion of a cloud resource failed: the record outlives us."""
    run = runs.start(tmp_path)
    run.note_cloud("prod", "servers")
    runs.leave_for_cleanup()
    runs.end()
    assert runs.dead_runs(tmp_path) == [run.id]
    done = runs.recover(tmp_path, lambda c, r, k: [f"deleted {k[0]} of {r} in {c}"])
    assert done == [f"deleted servers of {run.id} in prod"]
    assert runs.dead_runs(tmp_path) == []


def test_a_child_still_running_at_exit_keeps_the_record(tmp_path: Path) -> None:
    child = sleeper("marker-survivor")
    try:
        run = runs.start(tmp_path / "cache")
        run.note_process(child.pid, "marker-survivor", [])
        runs.end()
        assert runs.dead_runs(tmp_path / "cache") == [run.id]
        assert f"stopped pid {child.pid} left by run {run.id}" in runs.recover(tmp_path / "cache")
        assert gone(child)
    finally:
        child.kill()
        child.wait()


def dead_or_zombie(pid: int) -> bool:
    """Gone, or a zombie waiting for init (its new parent) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_cloud_leftovers_are_kept_until_the_cloud_is_cleaned(tmp_path: Path) -> None:
    run_id = dead_run(tmp_path, "run.note_cloud('prod', 'images')")
    calls: list[tuple[str, str, list[str]]] = []

    def unreachable(cloud: str, dead: str, kinds: list[str]) -> list[str]:
        calls.append((cloud, dead, kinds))
        raise ImagekitError("unreachable: Connection refused")

    # A command without a cloud says so and keeps the record.
    (said,) = runs.recover(tmp_path)
    assert "may have left resources in cloud prod" in said and "imagekit cleanup" in said
    done = runs.recover(tmp_path, unreachable, {"prod"})
    assert calls == [("prod", run_id, ["images"])]
    assert any("cloud 'prod' not cleaned up: unreachable" in line for line in done)
    record = tmp_path / "runs" / run_id / "clouds.json"
    assert json.loads(record.read_text()) == {"prod": ["images"]}

    done = runs.recover(tmp_path, lambda c, r, k: [f"deleted queued image of {r} in {c}"])
    assert done == [f"deleted queued image of {run_id} in prod"]
    assert not (tmp_path / "runs" / run_id).exists()


def building(build_dir: Path, run_id: str | None) -> Manifest:
    manifest = make_manifest(
        build_id=build_dir.name,
        status="building",
        run_id=run_id,
    )
    build_dir.mkdir(parents=True)
    manifest.write(build_dir)
    (build_dir / "web.qcow2").write_bytes(b"half")
    return manifest


def test_a_build_whose_builder_died_is_marked_failed(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = load_config(write_config("ssh_keys: [{key}]\n"))
    dead = dead_run(config.cache_dir, "")
    live = runs.start(config.cache_dir).id  # this process: alive
    stuck = config.output_dir / "web" / "20261125T040000Z"
    running = config.output_dir / "web" / "20261125T040100Z"
    legacy = config.output_dir / "web" / "20261125T040200Z"
    building(stuck, dead)
    building(running, live)
    building(legacy, None)  # no run id: its builder cannot be proven dead
    work = config.cache_dir / "tmp" / f"web-{stuck.name}"
    work.mkdir(parents=True)

    done = recover_builds(config)

    manifest = Manifest.read(stuck)
    assert manifest.status == "failed" and f"run {dead}" in (manifest.error or "")
    assert manifest.finished is not None
    assert not (stuck / "web.qcow2").exists() and not work.exists()
    assert done == [f"removed {work}", f"marked build {stuck} failed (its builder died)"]
    for untouched in (running, legacy):
        assert Manifest.read(untouched).status == "building"
        assert (untouched / "web.qcow2").exists()


def test_a_dead_runs_images_in_the_cloud_half_uploads_and_intermediates_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the clean-up asks Glance to delete: a dead run's queued upload and its Packer
    snapshot (active), never its finished image nor another run's."""

    def image(image_id: str, status: str, run: str, **properties: str) -> SimpleNamespace:
        props = {"imagekit_run": run, **properties}
        return SimpleNamespace(id=image_id, status=status, properties=props)

    images = [
        image("half", "queued", "dead-run"),
        image("snapshot", "active", "dead-run", imagekit_intermediate="packer snapshot"),
        image("published", "active", "dead-run"),
        image("other", "queued", "live-run"),
    ]
    deleted: list[str] = []
    listed: list[dict[str, object]] = []

    def list_images(**query: object) -> list[SimpleNamespace]:
        listed.append(query)
        return images

    glance = SimpleNamespace(
        api_version="2",
        images=list_images,
        delete_image=lambda image, ignore_missing: deleted.append(image.id),
    )
    conn = SimpleNamespace(image=glance, current_project_id="p1")
    monkeypatch.setattr(clouds, "connect", lambda cloud: conn)
    done = clouds.delete_run_leftovers("prod", "dead-run", ["images"])
    assert deleted == ["half", "snapshot"]
    assert listed == [{"owner": "p1", "tag": "imagekit"}]
    assert done == [
        "deleted queued image half in 'prod'",
        "deleted active image snapshot in 'prod'",
    ]
