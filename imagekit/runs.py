"""Runs: what an imagekit process started that could outlive it, so a later one removes it.

Each process that makes something registers a run in CACHE/runs/RUN_ID/ and
holds an flock on its `owner.lock` while it lives: the kernel drops it when
the process dies, even by kill -9 or the OOM killer, so a run directory whose
lock is free belongs to a dead run. The run records there:
- child processes (qemu, DIB, Packer): pid, a marker that must appear in
  their command line (a path only that child uses) and the paths to remove;
- the clouds it made things in; every cloud resource carries the run id
  (Glance property `imagekit_run`, server metadata and name, keypair name,
  floating IP description).
A normal exit (Ctrl-C included) removes its own things and the run directory;
when some of that failed, the directory stays and is recovered like a dead run's.
`recover()` (run at the start of every command and by `imagekit cleanup`)
stops and removes what dead runs left, and marks builds they left in
"building" as failed.
"""

import atexit
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imagekit import processes
from imagekit.cleanup import sweep
from imagekit.errors import BusyError, ImagekitError
from imagekit.locking import Lock

RUNS = "runs"
OWNER_LOCK = "owner.lock"
CLOUDS = "clouds.json"
# How long a leftover child gets to stop after SIGTERM before SIGKILL.
STOP_WAIT_S = 30


@dataclass
class Run:
    id: str
    directory: Path
    lock: Lock
    unfinished: bool = False  # some of our own clean-up failed

    def note_process(self, pid: int, marker: str, paths: list[Path]) -> None:
        """A child to stop if we die: its command line must contain marker to be ours."""
        record = {"pid": pid, "marker": marker, "paths": [str(p) for p in paths]}
        _write(self.directory / f"process-{pid}.json", json.dumps(record))

    def forget_process(self, pid: int) -> None:
        (self.directory / f"process-{pid}.json").unlink(missing_ok=True)

    def note_cloud(self, cloud: str, kind: str) -> None:
        """We make `kind` ("images" or "servers") in that cloud, tagged with our id."""
        used = self.clouds()
        if kind not in used.setdefault(cloud, []):
            used[cloud].append(kind)
            _write(self.directory / CLOUDS, json.dumps(used))

    def _children_alive(self) -> bool:
        for record_file in self.directory.glob("process-*.json"):
            record = json.loads(record_file.read_text())
            if processes.carries(record["pid"], record["marker"]):
                return True
        return False

    def clouds(self) -> dict[str, list[str]]:
        return _clouds(self.directory)

    def end(self) -> None:
        """A normal exit: our own clean-up has run, so the record goes, unless some of it
        failed (a recorded child still running, a cloud deletion refused): then the record stays
        for the next command's recovery, as if we had died."""
        if not self.unfinished and not self._children_alive():
            shutil.rmtree(self.directory, ignore_errors=True)
        self.lock.__exit__(None, None, None)


_current: Run | None = None


def start(cache_dir: Path) -> Run:
    """This process's run (made on first use); it ends when the process exits."""
    global _current
    runs_dir = cache_dir.resolve() / RUNS
    if _current is not None and _current.directory.parent == runs_dir:
        return _current
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}"
    directory = runs_dir / run_id
    lock = Lock(directory / OWNER_LOCK, f"run {run_id}")
    lock.__enter__()
    if _current is not None:
        _current.end()
    else:
        atexit.register(end)
    _current = Run(run_id, directory, lock)
    return _current


def current() -> Run | None:
    return _current


def leave_for_cleanup() -> None:
    """Our own clean-up of something failed: keep the run's record when we exit, so
    that the next command (or `imagekit cleanup`) finds what is left by the run id."""
    if _current is not None:
        _current.unfinished = True


def end() -> None:
    global _current
    if _current is not None:
        _current.end()
        _current = None


def is_alive(cache_dir: Path, run: str) -> bool:
    """Whether that run's process still holds its lock (a missing directory: it ended)."""
    lock_file = cache_dir.resolve() / RUNS / run / OWNER_LOCK
    if not lock_file.is_file():
        return False
    try:
        with Lock(lock_file, f"run {run}"):
            return False
    except BusyError:
        return True


def dead_runs(cache_dir: Path) -> list[str]:
    """Ids of runs that died without cleaning up (what `imagekit cleanup` would handle)."""
    runs_dir = cache_dir.resolve() / RUNS
    if not runs_dir.is_dir():
        return []
    return [
        p.name
        for p in sorted(runs_dir.iterdir())
        if p.is_dir() and (p / OWNER_LOCK).is_file() and not is_alive(cache_dir, p.name)
    ]


# (cloud, run id, kinds) -> what it deleted; raises ImagekitError when it cannot.
CloudCleaner = Callable[[str, str, list[str]], list[str]]


def recover(
    cache_dir: Path, clean_cloud: CloudCleaner | None = None, clouds: set[str] | None = None
) -> list[str]:
    """Stop and remove what dead runs left; returns what was done, one line each.

    Cloud resources are deleted only in the clouds given (all that a dead run
    used when None) and only with clean_cloud; otherwise, or when the cloud
    cannot be reached, the run's record stays for a later `imagekit cleanup`.
    """
    runs_dir = cache_dir.resolve() / RUNS
    done: list[str] = []
    if not runs_dir.is_dir():
        return done
    for directory in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if _current is not None and directory == _current.directory:
            continue
        try:
            # Held while we clean: a second recovering process skips this run.
            with Lock(directory / OWNER_LOCK, f"run {directory.name}"):
                done += _recover_run(directory, clean_cloud, clouds)
        except BusyError:
            continue  # alive, or being recovered right now
    return done


def _recover_run(
    directory: Path, clean_cloud: CloudCleaner | None, clouds: set[str] | None
) -> list[str]:
    done: list[str] = []
    for record_file in sorted(directory.glob("process-*.json")):
        record = json.loads(record_file.read_text())
        if processes.stop_leftover(record["pid"], record["marker"], STOP_WAIT_S):
            done.append(f"stopped pid {record['pid']} left by run {directory.name}")
        for path in map(Path, record["paths"]):
            done += sweep(path)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path}")
        record_file.unlink()
    used = _clouds(directory)
    for cloud, kinds in list(used.items()):
        if clean_cloud is None or (clouds is not None and cloud not in clouds):
            continue
        try:
            done += clean_cloud(cloud, directory.name, kinds)
        except ImagekitError as err:
            done.append(f"run {directory.name}: cloud '{cloud}' not cleaned up: {err}")
            continue
        del used[cloud]
        _write(directory / CLOUDS, json.dumps(used))
    if used:
        done.append(
            f"run {directory.name} may have left resources in cloud {', '.join(used)}: "
            "remove them with 'imagekit cleanup'"
        )
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return done


def _clouds(directory: Path) -> dict[str, list[str]]:
    path = directory / CLOUDS
    data: dict[str, list[str]] = json.loads(path.read_text()) if path.is_file() else {}
    return data


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
