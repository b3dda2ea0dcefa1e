"""The site run's bookkeeping: which runs `site down` removes, failed runs' reports,
and what a kept site tells its user."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagekit.errors import ImagekitError
from imagekit.manifest import Manifest, SiteTestRecord
from imagekit.site import cloud
from imagekit.site import run as site_run
from imagekit.site.model import DEFAULT_SITE, load_site

DEAD_PID = 2**22 + 1  # above pid_max's default: no such process


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run directories under a temporary sites dir; teardown() records the namespaces."""
    monkeypatch.setattr(site_run, "SITES_DIR", tmp_path / "sites")
    removed: list[str] = []
    monkeypatch.setattr(
        site_run, "teardown", lambda namespace, qemu, workdir: removed.append(namespace)
    )
    return removed


def state(name: str, owner: int, kept: bool) -> None:
    workdir = site_run.sites_dir() / name
    workdir.mkdir()
    (workdir / site_run.STATE).write_text(
        json.dumps({"owner_pid": owner, "kept": kept, "namespace": f"ns-{name}", "qemu": []})
    )


def test_site_down_removes_kept_and_dead_runs_never_a_running_one(sites: list[str]) -> None:
    state("running", os.getpid(), kept=False)
    state("kept-by-us", os.getpid(), kept=True)
    state("kept-by-the-dead", DEAD_PID, kept=True)
    state("dead", DEAD_PID, kept=False)
    assert sorted(site_run.down_all()) == ["ns-dead", "ns-kept-by-the-dead", "ns-kept-by-us"]
    assert "ns-running" not in sites


def test_a_new_site_test_removes_only_dead_runs(sites: list[str]) -> None:
    state("running", os.getpid(), kept=False)
    state("kept", DEAD_PID, kept=True)
    state("dead", DEAD_PID, kept=False)
    assert site_run.down_all(only_dead=True) == ["ns-dead"]


def test_a_run_directory_being_made_is_left_alone(sites: list[str]) -> None:
    young = site_run.sites_dir() / "young"
    young.mkdir()
    old = site_run.sites_dir() / "old"
    old.mkdir()
    os.utime(old, (0, 0))
    site_run.down_all()
    assert young.is_dir() and not old.exists()


def test_an_error_report_is_junit_with_one_errored_case(tmp_path: Path) -> None:
    junit = tmp_path / "reports" / "site-report.xml"
    site_run.write_error_report(junit, "site_boot", "web1: SSH did not answer within 1200s")
    assert site_run._checks(junit) == [("site_boot", "error")]
    assert 'message="web1: SSH did not answer within 1200s"' in junit.read_text()


class FakeVm:
    def __init__(self, off: bool = False) -> None:
        self.off = off
        self.powered_on = 0
        self.pid = 4242
        self.workdir = Path("/nonexistent")
        self.accelerator = "tcg"

    def gone(self) -> str | None:
        return "qemu exited with status 0: " if self.off else None

    def power_on(self) -> None:
        self.powered_on += 1
        self.off = False


def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """A SiteRun without a network or VMs: members with fake VMs, ssh that answers."""
    monkeypatch.setattr(site_run, "SITES_DIR", tmp_path / "sites")
    said: list[str] = []
    site = load_site(DEFAULT_SITE)
    config: Any = type("C", (), {"output_dir": tmp_path / "out"})()
    run = site_run.SiteRun(config, site, DEFAULT_SITE, {}, say=said.append)
    run.workdir.mkdir(parents=True)
    run._admin_user = lambda: "debian"  # type: ignore[method-assign]
    run.members = [
        site_run.Member(i, tmp_path / "builds" / i.role / "20261201T000000Z", FakeVm())  # type: ignore[arg-type]
        for i in run.site.instances
    ]
    monkeypatch.setattr(
        run, "ssh", lambda name, command, timeout: subprocess.CompletedProcess([], 0, "", "")
    )
    return run, said


def test_a_kept_site_powers_on_what_the_fault_check_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, said = fake_run(tmp_path, monkeypatch)
    victim = run.members[2].vm
    victim.off = True
    kept_while_waiting = []

    def ssh(name: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        state = json.loads((run.workdir / site_run.STATE).read_text())
        kept_while_waiting.append(state["kept"])
        return subprocess.CompletedProcess([], 0, "", "")

    run._save_state(kept=False)
    monkeypatch.setattr(run, "ssh", ssh)
    run.keep()
    # A `site down` meanwhile must not take the site from under the wait.
    assert kept_while_waiting == [False]
    assert victim.powered_on == 1
    assert [m.vm.powered_on for m in run.members] == [0, 0, 1, 0, 0]
    assert said == ["[site] web2 powered on again (the suite turned it off)"]
    saved = json.loads((run.workdir / site_run.STATE).read_text())
    assert saved["kept"] is True and len(saved["qemu"]) == 5


def test_a_site_that_did_not_come_up_is_recorded_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = fake_run(tmp_path, monkeypatch)
    run.reports.mkdir(parents=True)
    build = tmp_path / "builds" / "web" / "20261201T000000Z"
    run.builds = {"web": build}
    updates: list[tuple[Path, SiteTestRecord]] = []

    def update(build_dir: Path, change: Any) -> None:
        manifest: Any = type("M", (), {"site_tests": []})()
        change(manifest)
        updates.append((build_dir, manifest.site_tests[0]))

    monkeypatch.setattr(Manifest, "update", update)
    junit = run.reports / "site-report.xml"
    site_run.write_error_report(junit, "site_boot", "db1: SSH did not answer within 1200s")
    result = run.record(junit, 0, 0.0, error="db1: SSH did not answer within 1200s")
    [(where, record)] = updates
    assert where == build
    assert not record.passed and (record.tests, record.errors) == (1, 1)
    assert record.error == "db1: SSH did not answer within 1200s"
    assert "FAILED 0/1 checks" in site_run.summary(result)


def test_how_to_reach_a_kept_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = fake_run(tmp_path, monkeypatch)
    result = site_run.SiteResult(
        record=None,  # type: ignore[arg-type]
        report=tmp_path / "r.xml",
        checks=[],
        members=run.members,
        namespace="imagekit-site-1234",
        ssh_config=run.ssh_config,
        lb_public_address="203.0.113.10",
    )
    text = site_run.how_to_reach(result).splitlines()
    enter = "ip netns exec imagekit-site-1234"
    assert f"  {enter} curl -k https://203.0.113.10/" in text
    for name in ("lb1", "web1", "web2", "dns1", "db1"):
        assert f"  {enter} ssh -F {run.ssh_config} {name}" in text
    assert text[-1] == "remove it with: imagekit site down"


def test_site_test_json_is_the_record_with_each_checks_outcome(tmp_path: Path) -> None:
    record = SiteTestRecord(
        when="2026-12-02T00:00:00Z", passed=False, tests=2, failures=1, report="site-report.xml",
        site="site.yaml", run_id="r1", instances={"web1": "web/20261202T010000Z"},
    )  # fmt: skip
    result = site_run.SiteResult(
        record=record,
        report=tmp_path / "site-report.xml",
        checks=[("test_a", "passed"), ("test_b", "failed")],
        members=[],
        namespace="ns",
        ssh_config=tmp_path / "ssh_config",
        lb_public_address="203.0.113.10",
    )
    document = json.loads(json.dumps(site_run.document(result)))
    assert document["checks"] == {"test_a": "passed", "test_b": "failed"}
    assert document["report"] == str(tmp_path / "site-report.xml")
    assert document["passed"] is False and document["run_id"] == "r1"
    assert document["instances"] == {"web1": "web/20261202T010000Z"}


def test_a_dead_cloud_site_is_deleted_and_an_unreachable_cloud_stops_nothing(
    sites: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def delete(name: str, run_id: str) -> list[str]:
        if name == "down":
            raise ImagekitError("cloud 'down': clean-up failed: unreachable")
        deleted.append((name, run_id))
        return []

    deleted: list[tuple[str, str]] = []
    monkeypatch.setattr(cloud, "delete", delete)
    for name in ("up", "down"):
        workdir = site_run.sites_dir() / name
        workdir.mkdir()
        record = {"owner_pid": DEAD_PID, "kept": False, "cloud": name, "run_id": f"R-{name}"}
        (workdir / site_run.STATE).write_text(json.dumps(record))
    assert site_run.down_all(only_dead=True) == ["site run R-up in cloud 'up'"]
    assert deleted == [("up", "R-up")]
    assert not (site_run.sites_dir() / "up").exists()
    assert (site_run.sites_dir() / "down").exists(), "kept for a later try"
    assert "site run R-down not removed yet" in capsys.readouterr().err
