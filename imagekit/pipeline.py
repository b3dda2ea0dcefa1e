"""`imagekit pipeline`: build -> test -> site test -> publish (share, rotate); the nightly job.

Each stage runs as its own `imagekit` command, so each keeps its own clean-up
on failure, Ctrl-C, SIGTERM and SIGHUP; the pipeline forwards SIGTERM to the
running ones, once, and waits for them (later signals are ignored meanwhile).
State lives in the builds' manifests (tests and each publication step -
uploaded, shared, rotated - are recorded there as soon as they are true), so a
re-run resumes the newest unfinished build instead of rebuilding what passed;
a role that only finished an earlier run's build is marked "resumed" in the
table and the summary. Builds run one at a time (they share DIB's cache);
tests of one role overlap the build of the next where the host has room.
When every role has passed (or failed) its own suite, one site test boots the
whole site from this run's tested builds (and the newest tested build of any
other role); only builds that took part in a passing site test are published.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from imagekit import changes, processes, progress
from imagekit.config import Config
from imagekit.locking import Lock
from imagekit.manifest import SuiteResult
from imagekit.store import Store

STAGES = ("build", "test", "site", "publish")
# Each role on its own before the site test, and after it.
BEFORE_SITE, AFTER_SITE = ("build", "test"), ("publish",)


@dataclass
class Stage:
    name: str
    result: str = "pending"  # passed, failed, skipped (done before: resumed), not run
    seconds: float = 0
    log: str = ""


@dataclass
class RoleRun:
    role: str
    build_id: str | None = None
    image_id: str | None = None
    resumed: bool = False  # continued an earlier run's build: no new build in this run
    stages: list[Stage] = field(default_factory=lambda: [Stage(s) for s in STAGES])
    # What changed against the build it replaces (the newest one published to the
    # cloud before it, else the one before it): imagekit diff's summary and record.
    changes: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(s.result in ("passed", "skipped") for s in self.stages)

    def passed_so_far(self, stage: Stage) -> bool:
        """Every stage before this one passed (or was done in an earlier run)."""
        before = self.stages[: self.stages.index(stage)]
        return all(s.result in ("passed", "skipped") for s in before)


def default_test_jobs() -> int:
    """Throwaway VMs at once: one per core, with 3 GiB of the host's memory each. A build
    runs beside the first tests only: on the base layer a role builds in well under a
    minute, and each test's VM has one vCPU."""
    cores = os.cpu_count() or 1
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores, int(memory_gib // 3)))


def resume_point(config: Config, role: str, cloud: str) -> tuple[str | None, int]:
    """(build id to continue, index of the first stage to run) for a role."""
    found = Store(config.output_dir).readable(role)
    if not found:
        return None, 0
    _, manifest = found[-1]
    if manifest.status != "built":
        return None, 0
    publication = manifest.publication(cloud)
    if publication is not None and publication.complete:
        return None, 0  # finished: tonight gets a new build
    if manifest.tested and manifest.site_tested:
        return manifest.build_id, STAGES.index("publish")
    # A failure may be the host's (a slow boot): one more try. A stage that failed twice
    # on this build will not pass a third time: a new build, with whatever was fixed.
    records: Sequence[SuiteResult] = manifest.site_tests if manifest.tested else manifest.tests
    if _failures_in_a_row(records) >= RETRIES_PER_BUILD + 1:
        return None, 0
    return manifest.build_id, STAGES.index("site" if manifest.tested else "test")


RETRIES_PER_BUILD = 1


def _failures_in_a_row(records: Sequence[SuiteResult]) -> int:
    """Failed runs at the end of the records (since the last one that passed)."""
    count = 0
    for record in reversed(records):
        if record.passed:
            break
        count += 1
    return count


class Pipeline:
    def __init__(
        self, config: Config, roles: list[str], cloud: str, test_jobs: int, site_file: Path
    ) -> None:
        self.config = config
        self.roles = roles
        self.cloud = cloud
        self.site_file = site_file
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.logs = config.output_dir / "pipeline" / self.run_id
        self.build_slot = threading.Semaphore(1)
        self.test_slots = threading.Semaphore(test_jobs)
        # After the site test every role is ready to publish at once: one upload at a
        # time (they share the uplink, and the image service's database).
        self.publish_slot = threading.Semaphore(1)
        self.stopping = threading.Event()
        self.children: set[subprocess.Popen[str]] = set()
        self.lock = threading.Lock()

    def plan(self) -> list[tuple[str, str | None, list[str]]]:
        """(role, build id to resume or None, stages to run) per role."""
        result = []
        for role in self.roles:
            build_id, first = resume_point(self.config, role, self.cloud)
            result.append((role, build_id, list(STAGES[first:])))
        return result

    def run(self) -> list[RoleRun]:
        with Lock(
            self.config.output_dir / ".pipeline.lock", f"a pipeline on {self.config.output_dir}"
        ):
            self.logs.mkdir(parents=True, exist_ok=True)
            runs = [RoleRun(role) for role in self.roles]
            todos = {}
            for run, (_, build_id, todo) in zip(runs, self.plan(), strict=True):
                run.build_id, todos[run.role] = build_id, todo
                run.resumed = build_id is not None
            try:
                self._each_role(runs, todos, BEFORE_SITE)
                self._site(runs, todos)
                self._each_role(runs, todos, AFTER_SITE)
            finally:
                self._write_summary(runs)
            return runs

    def _each_role(
        self, runs: list[RoleRun], todos: dict[str, list[str]], names: tuple[str, ...]
    ) -> None:
        """These stages of every role, the roles side by side."""
        self._wait_for([partial(self._role, run, todos[run.role], names) for run in runs])

    def _wait_for(self, work: list[Callable[[], object]]) -> None:
        """Run each in a thread and wait; on Ctrl-C or SIGTERM, stop the running stages
        (their children clean up) and wait for that before passing it on."""
        # Our own flags, polled: a Thread.join() cut by KeyboardInterrupt can leave the
        # thread looking finished while it still runs (Python before 3.13).
        done = [threading.Event() for _ in work]

        def run(target: Callable[[], object], finished: threading.Event) -> None:
            try:
                target()
            finally:
                finished.set()

        for target, finished in zip(work, done, strict=True):
            threading.Thread(target=run, args=(target, finished), daemon=True).start()
        try:
            while not all(finished.is_set() for finished in done):
                time.sleep(0.2)
        except KeyboardInterrupt:
            self._stop_all()
            while not all(finished.is_set() for finished in done):
                time.sleep(0.2)
            raise

    def _role(self, run: RoleRun, todo: list[str], names: tuple[str, ...]) -> None:
        for stage in run.stages:
            if stage.name in names and self._should_run(run, stage, todo):
                self._stage(run, stage)

    def _should_run(self, run: RoleRun, stage: Stage, todo: list[str]) -> bool:
        """Marks the stage skipped (done before) or not run; True if it is to run."""
        if stage.name not in todo:
            stage.result = "skipped"
        elif self.stopping.is_set() or not run.passed_so_far(stage):
            stage.result = "not run"
        else:
            return True
        return False

    def _site(self, runs: list[RoleRun], todos: dict[str, list[str]]) -> None:
        """One site test for every role that reached it; other roles' newest tested builds."""
        taking_part = [
            run
            for run in runs
            if self._should_run(run, run.stages[STAGES.index("site")], todos[run.role])
        ]
        if not taking_part:
            return
        args = ["--config", str(self.config.source), "site", "test", "--site", str(self.site_file)]
        args += [f"--build={run.role}={run.build_id}" for run in taking_part]
        log = self.logs / "site-test.log"
        self._say(f"[site] test started: {', '.join(r.role for r in taking_part)} of this run")
        started = time.monotonic()
        returncodes: list[int] = []
        self._wait_for([lambda: returncodes.append(self._imagekit(args, log))])
        seconds = round(time.monotonic() - started, 1)
        result = "passed" if returncodes == [0] else "failed"
        for run in taking_part:
            stage = run.stages[STAGES.index("site")]
            stage.result, stage.seconds, stage.log = result, seconds, str(log)
        self._say(f"[site] test {result} in {seconds:.0f}s (log: {log})")
        if result == "failed":
            self._say_why("site", log)

    def _stage(self, run: RoleRun, stage: Stage) -> None:
        args = ["--config", str(self.config.source), stage.name, run.role]
        if stage.name != "build":
            args += ["--build", str(run.build_id)]
        if stage.name == "test":
            # Whatever OS_CLOUD says; one vCPU, as a build runs beside it: a two-vCPU TCG
            # guest on a host this busy was seen livelocked (soft lockups for 400 s and more).
            args += ["--local", "--cpus", "1"]
        if stage.name == "publish":
            args += ["--cloud", self.cloud]
        store = Store(self.config.output_dir)
        before = {b.id for b in store.builds(run.role)}
        slot = {
            "build": self.build_slot,
            "test": self.test_slots,
            "publish": self.publish_slot,
        }[stage.name]
        log = self.logs / f"{run.role}-{stage.name}.log"
        stage.log = str(log)
        slot.acquire()
        try:
            if self.stopping.is_set():
                stage.result = "not run"
                return
            self._say(f"[{run.role}] {stage.name} started")
            started = time.monotonic()
            returncode = self._imagekit(args, log)
            stage.seconds = round(time.monotonic() - started, 1)
        finally:
            slot.release()
        stage.result = "passed" if returncode == 0 else "failed"
        # What the stage recorded, not what it printed, says what it made.
        if stage.name == "build" and returncode == 0:
            new = [
                b
                for b, manifest in store.readable(run.role)
                if b.id not in before and manifest.status == "built"
            ]
            run.build_id = new[-1].id if new else None
            if not new:
                stage.result = "failed"
                self._say(f"[{run.role}] build exited 0 but recorded no finished build")
        if stage.name == "publish" and returncode == 0 and run.build_id:
            manifest = store.get(run.role, run.build_id).manifest()
            publication = manifest.publication(self.cloud)
            run.image_id = publication.image_id if publication else None
            if publication is None or not publication.complete:
                stage.result = "failed"
                self._say(f"[{run.role}] publish exited 0 but did not record every step")
        self._say(f"[{run.role}] {stage.name} {stage.result} in {stage.seconds:.0f}s (log: {log})")
        if stage.result == "failed":
            self._say_why(run.role, log)

    def _imagekit(self, args: list[str], log: Path) -> int:
        with log.open("w") as out:
            # Our Ctrl-C is forwarded as SIGTERM, once; if the pipeline dies (kill -9
            # too) the kernel sends it, as this thread waits for the stage.
            child = processes.spawn(
                [sys.executable, "-m", "imagekit", *args],
                stdout=out,
                text=True,
                die_with_us=signal.SIGTERM,
            )
            with self.lock:
                self.children.add(child)
                if self.stopping.is_set():  # started just as we were told to stop
                    processes.signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait()
            finally:
                with self.lock:
                    self.children.discard(child)
        return child.returncode

    def _stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            children = list(self.children)
        for child in children:
            processes.signal_group(child.pid, signal.SIGTERM)
        self._say("stopping: running stages clean up and exit")

    def _say(self, line: str) -> None:
        progress.say(line, warning=True)  # the nightly log's record of each stage

    def _say_why(self, name: str, log: Path) -> None:
        """A failed stage's reasons, from its log: the nightly log (and a CI run) shows
        which checks failed without the stage's log at hand."""
        for line in failure_lines(log):
            self._say(f"[{name}]   {line}")

    def _write_summary(self, runs: list[RoleRun]) -> None:
        store = Store(self.config.output_dir)
        for run in runs:
            if run.build_id is not None and run.changes is None:
                found = replaced_changes(store, run.role, run.build_id, self.cloud)
                if found is not None:
                    run.changes = {**asdict(found), "summary": found.summary()}
        data = {
            "run_id": self.run_id,
            "cloud": self.cloud,
            "roles": [{**asdict(run), "passed": run.passed} for run in runs],
        }
        path = self.config.output_dir / "pipeline" / f"{self.run_id}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")


def failure_lines(log: Path, most: int = 8) -> list[str]:
    """A stage log's failed checks and error line (the child's own summary); else its last line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [
        line.strip() for line in lines if line.startswith(("FAILED ", "ERROR ", "imagekit: error:"))
    ]
    if not found:
        found = [line.strip() for line in lines[-1:]]
    return found[-most:]


def replaced_changes(store: Store, role: str, build_id: str, cloud: str) -> changes.Changes | None:
    """The build against the one it replaces: the newest earlier build published to the
    cloud, else the newest earlier finished one; None for a role's first build."""
    new = next((m for b, m in store.readable(role) if b.id == build_id), None)
    replaced = store.newest(role, published_to=cloud, before=build_id) or store.newest(
        role, before=build_id
    )
    if replaced is None or new is None or new.status != "built":
        return None
    return changes.compare(replaced.manifest(), new)


def dry_run(pipeline: Pipeline) -> str:
    """What a run would build, test, publish and rotate."""
    config, lines = pipeline.config, []
    members = ", ".join(config.publish.members) or "no one"
    for role, build_id, todo in pipeline.plan():
        start = f"resume build {build_id}" if build_id else "new build"
        lines.append(f"{role}: {start}; stages: {', '.join(todo) or 'none (published)'}")
    lines.append(f"site test: {pipeline.site_file}, with the other roles' newest tested builds")
    lines.append(
        f"publish to '{pipeline.cloud}', share with {members}; rotate: keep the newest "
        f"{config.publish.keep} visible, hide older, delete those over "
        f"{config.publish.delete_after_days} days"
    )
    return "\n".join(lines)


def table(runs: list[RoleRun]) -> str:
    lines = [f"{'role':5} {'build id':18} " + " ".join(f"{s:16}" for s in STAGES) + " image"]
    for run in runs:
        cells = " ".join(
            f"{s.result + (f' {s.seconds:.0f}s' if s.seconds else ''):16}" for s in run.stages
        )
        image = (run.image_id or "-") + (" (resumed: no new build)" if run.resumed else "")
        lines.append(f"{run.role:5} {run.build_id or '-':18} {cells} {image}")
    lines += [run.changes["summary"] for run in runs if run.changes]
    return "\n".join(lines)
