"""The pipeline's plan: stages per role, one site test between the roles' tests and
publishing, and what a failing role or site test stops.

The boundary faked is the child `imagekit` command: the fake records the arguments
each stage gets and writes into the manifests what the real command records.
"""

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import Config, load_config
from imagekit.manifest import Manifest, Publication, SiteTestRecord, SuiteResult
from imagekit.pipeline import Pipeline, default_test_jobs, resume_point
from imagekit.site.model import DEFAULT_SITE
from tests.unit.manifests import make_manifest

Outcomes = dict[str, dict[str, str]]


class FakeImagekit:
    """Plays the stage commands: builds write a built manifest, tests record a result."""

    def __init__(self, config: Config, failing: set[str]) -> None:
        self.config, self.failing = config, failing
        self.calls: list[list[str]] = []
        self.publishing, self.most_publishing = 0, 0

    def __call__(self, args: list[str], log: Path) -> int:
        self.calls.append(args)
        command = args[2]
        if command == "site":
            builds = dict(a.removeprefix("--build=").split("=") for a in args if "--build=" in a)
            passed = "site" not in self.failing
            if not passed:  # what `imagekit site test` prints
                log.write_text(
                    "lb1        lb/20261125T000000Z       100s             120s\n\n"
                    "PASSED   test_http_redirects_to_https\n"
                    "FAILED   test_the_site_survives_a_web_instance_powered_off\n"
                    "site: FAILED 12/13 checks (suite 90s, total 300s, tcg); report: r.xml\n"
                    "imagekit: error: site test failed; report: r.xml\n"
                )
            site = SiteTestRecord(when="now", passed=passed, site="s", run_id="r")
            for role, build_id in builds.items():
                Manifest.update(self._dir(role, build_id), lambda m: m.site_tests.append(site))
            return 0 if passed else 1
        role = args[3]
        if f"{role}-{command}" in self.failing:
            return 1
        if command == "build":
            build_dir = self._dir(role, "20261125T000000Z")
            build_dir.mkdir(parents=True)
            make_manifest(role=role, build_id=build_dir.name).write(build_dir)
        elif command == "test":
            record = SuiteResult(when="now", passed=True, tests=3)
            Manifest.update(self._dir(role, args[5]), lambda m: m.tests.append(record))
        elif command == "publish":
            self.publishing += 1
            self.most_publishing = max(self.most_publishing, self.publishing)
            time.sleep(0.2)  # long enough for another role's publish to overlap, if it could
            self.publishing -= 1
            publication = Publication(
                cloud="c", image_id=f"id-{role}", name=role, when="now", shared="now", rotated="now"
            )
            Manifest.update(self._dir(role, args[5]), lambda m: m.publications.append(publication))
        return 0

    def _dir(self, role: str, build_id: str) -> Path:
        return self.config.output_dir / role / build_id


RunPipeline = Callable[..., tuple[Pipeline, FakeImagekit, Outcomes]]


@pytest.fixture
def run_pipeline(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> RunPipeline:
    def run(
        roles: list[str],
        failing: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> tuple[Pipeline, FakeImagekit, Outcomes]:
        config = load_config(write_config(f"ssh_keys: ['{{key}}']\noutput_dir: {tmp_path}/out\n"))
        fake = FakeImagekit(config, set(failing))
        monkeypatch.setattr(Pipeline, "_imagekit", lambda self, args, log: fake(args, log))
        pipeline = Pipeline(config, roles, "c", 2, DEFAULT_SITE)
        results = {r.role: {s.name: s.result for s in r.stages} for r in pipeline.run()}
        return pipeline, fake, results

    return run


def test_one_site_test_between_the_roles_tests_and_publishing(
    run_pipeline: RunPipeline,
) -> None:
    _, fake, results = run_pipeline(["web", "db"])
    assert results == {
        role: {"build": "passed", "test": "passed", "site": "passed", "publish": "passed"}
        for role in ("web", "db")
    }
    commands = [a[2] for a in fake.calls]
    (site_call,) = [a for a in fake.calls if a[2] == "site"]
    assert commands.index("site") > max(i for i, c in enumerate(commands) if c == "test")
    assert commands.index("site") < min(i for i, c in enumerate(commands) if c == "publish")
    # The site gets this run's builds; other roles' newest tested builds are its own choice.
    assert sorted(a for a in site_call if a.startswith("--build=")) == [
        "--build=db=20261125T000000Z",
        "--build=web=20261125T000000Z",
    ]
    assert site_call[site_call.index("--site") + 1] == str(DEFAULT_SITE)
    # Every role is ready to publish at once after the site test: one upload at a time.
    assert fake.most_publishing == 1
    # Each test boots a local VM with one vCPU: a build runs beside it.
    for test_call in (a for a in fake.calls if a[2] == "test"):
        assert test_call[test_call.index("--cpus") + 1] == "1" and "--local" in test_call


def test_a_role_failing_its_suite_is_left_out_of_the_site_and_not_published(
    run_pipeline: RunPipeline,
) -> None:
    _, fake, results = run_pipeline(["web", "dns"], {"dns-test"})
    assert results["dns"] == {
        "build": "passed", "test": "failed", "site": "not run", "publish": "not run"
    }  # fmt: skip
    assert results["web"]["publish"] == "passed"
    (site_call,) = [a for a in fake.calls if a[2] == "site"]
    assert [a for a in site_call if a.startswith("--build=")] == ["--build=web=20261125T000000Z"]
    assert not [a for a in fake.calls if a[2] == "publish" and a[3] == "dns"]


def test_a_failing_site_test_publishes_nothing_and_a_rerun_resumes_at_the_site(
    run_pipeline: RunPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, fake, results = run_pipeline(["web", "lb"], {"site"})
    assert {r["site"] for r in results.values()} == {"failed"}
    # The nightly log says which checks failed, not only where the site test's log is.
    said = capsys.readouterr().err.splitlines()
    failed_at = next(i for i, line in enumerate(said) if line.startswith("[site] test failed"))
    assert said[failed_at + 1 : failed_at + 3] == [
        "[site]   FAILED   test_the_site_survives_a_web_instance_powered_off",
        "[site]   imagekit: error: site test failed; report: r.xml",
    ]
    assert {r["publish"] for r in results.values()} == {"not run"}
    assert not [a for a in fake.calls if a[2] == "publish"]
    # Tested but not site-tested: the next run starts at the site test, same build.
    assert resume_point(pipeline.config, "web", "c") == ("20261125T000000Z", 2)


def test_ctrl_c_during_the_site_test_stops_it_and_waits_for_its_clean_up(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The site stage runs in the main thread's wait like every stage: the signal reaches
    the child (SIGTERM to its group) and the pipeline waits until it has cleaned up."""
    config = load_config(write_config(f"ssh_keys: ['{{key}}']\noutput_dir: {tmp_path}/out\n"))
    fake = FakeImagekit(config, set())
    events: list[str] = []
    signalled = threading.Event()

    def imagekit(self: Pipeline, args: list[str], log: Path) -> int:
        if args[2] != "site":
            return fake(args, log)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        assert signalled.wait(10), "the site child was never told to stop"
        time.sleep(0.5)  # its clean-up
        events.append("site cleaned up")
        return 130

    def stop_all(self: Pipeline) -> None:
        events.append("stop sent")
        signalled.set()

    monkeypatch.setattr(Pipeline, "_imagekit", imagekit)
    monkeypatch.setattr(Pipeline, "_stop_all", stop_all)
    pipeline = Pipeline(config, ["web"], "c", 2, DEFAULT_SITE)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run()
    assert events == ["stop sent", "site cleaned up"]


@pytest.mark.parametrize(
    ("cores", "memory_gib", "jobs"), [(2, 24, 2), (8, 12, 4), (1, 24, 1), (4, 2, 1)]
)
def test_one_test_vm_per_core_with_3_gib_each(
    monkeypatch: pytest.MonkeyPatch, cores: int, memory_gib: int, jobs: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": memory_gib * 2**30 // 4096}
    monkeypatch.setattr(os, "sysconf", pages.__getitem__)
    assert default_test_jobs() == jobs
