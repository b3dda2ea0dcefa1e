"""`imagekit site test`: boot the whole site from the golden images and run the site suite.

One instance per entry of the site description, from the newest tested build
of its role, all booted at once in a network namespace of their own (see
network.py); the site suite (tests/site/) runs inside that namespace, as the
outside world, with SSH to every instance through the lb as a jump host. The
result goes into every build's manifest that took part. Everything made for
the run is removed whatever happened, unless it is kept (`--keep`, then
`imagekit site down`).
"""

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from imagekit import processes, progress
from imagekit.config import Config
from imagekit.errors import ImagekitError, Interrupted, UserError
from imagekit.files import write_private
from imagekit.instances.access import (
    CLOUD_INIT_LOG_TAIL,
    CLOUD_INIT_RESULT,
    cloud_init_errors,
    cloud_init_failure,
    make_key_pair,
)
from imagekit.instances.qemu import Nic, QemuInstance
from imagekit.manifest import Manifest, SiteTestRecord, utc_now
from imagekit.roles import CHECKOUT
from imagekit.site import network
from imagekit.site.model import MEMORY_MB, Site, SiteInstance
from imagekit.store import Build, Store
from imagekit.suites import pytest_command
from imagekit.userdata import render_user_data

SUITE_DIR = CHECKOUT / "tests" / "site"
STATE = "state.json"
SITES_DIR = Path("/run/imagekit/sites")
SUITE_TIMEOUT = 1800  # the whole site suite; it takes a few minutes under TCG
STARTING_GRACE_S = 60  # a run directory without state yet may be one being made


def sites_dir() -> Path:
    """Where each run keeps its key, SSH config and state (0700: the key is there).

    Runtime state, like the namespaces it names: gone after a reboot, and a short
    path, so that SSH's control sockets fit in it.
    """
    SITES_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SITES_DIR


def choose_builds(config: Config, site: Site, chosen: dict[str, str]) -> dict[str, Path]:
    """The build of each role the site uses: `chosen` (ROLE -> ID), else the newest tested."""
    roles = {i.role for i in site.instances}
    unknown = sorted(set(chosen) - roles)
    if unknown:
        raise UserError(f"--build {unknown[0]}=...: the site has no {unknown[0]} instance")
    store = Store(config.output_dir)
    builds = {}
    for role in sorted(roles):
        if role in chosen:
            builds[role] = store.get(role, chosen[role], f"--build {role}=").dir
        else:
            builds[role] = store.newest_or_fail(role, tested=True).dir
    return builds


def parse_builds(values: list[str]) -> dict[str, str]:
    """`--build ROLE=ID` options."""
    chosen = {}
    for value in values:
        role, sep, build_id = value.partition("=")
        if not sep or not role or not build_id or "/" in build_id or build_id.startswith("."):
            raise UserError(f"--build {value}: expected ROLE=BUILD_ID")
        chosen[role] = build_id
    return chosen


class Machine(Protocol):
    """What a site run asks of an instance, local (QemuInstance) or on a cloud (Server)."""

    accelerator: str
    workdir: Path

    @property
    def pid(self) -> int | None: ...
    def gone(self) -> str | None: ...
    def console_tail(self, lines: int = ...) -> str: ...
    def power_on(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Member:
    """One booted instance of the site."""

    instance: SiteInstance
    build_dir: Path
    vm: "Machine"
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SiteResult:
    record: SiteTestRecord
    report: Path
    checks: list[tuple[str, str]]  # (check, outcome)
    members: list[Member]
    namespace: str | None  # where the outside world is (None: this host)
    ssh_config: Path
    lb_public_address: str


class SiteRun:
    """A site on this host: qemu VMs in a network namespace of the run's own."""

    backend = "QemuInstance"

    def __init__(
        self,
        config: Config,
        site: Site,
        site_file: Path,
        builds: dict[str, Path],
        identity: Path | None = None,
        boot_timeout: float = 1200,
        say: Callable[[str], None] = progress.say,
    ) -> None:
        self.config = config
        self.site = site.with_secrets()
        self.site_file = site_file
        self.builds = builds
        self.identity = identity
        self.boot_timeout = boot_timeout
        self.say = say
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:4]
        self.workdir = sites_dir() / self.run_id
        self.reports = config.output_dir / "site" / self.run_id
        self.network = network.SiteNetwork(
            uuid.uuid4().hex[:8], self.site.public_network, self.site.outside
        )
        self.namespace: str | None = self.network.namespace
        self.members: list[Member] = []

    def exec_prefix(self) -> list[str]:
        """How a command runs in the site's outside world."""
        return self.network.exec_prefix()

    @property
    def lb_public_address(self) -> str:
        return str(self.site.lb.public_address)

    @property
    def outside(self) -> str:
        return str(self.site.outside)

    # -- set up ---------------------------------------------------------------------------

    def up(self) -> None:
        """Make the namespace and boot every instance; wait until all are ready."""
        self.workdir.mkdir(mode=0o700)
        # Recorded before there is anything to find: a run that dies from here on is
        # cleaned up by the next one.
        self._save_state(kept=False)
        self.reports.mkdir(parents=True)
        key_file, public_key = make_key_pair(self.workdir, f"imagekit-site-{self.run_id}")
        self._write_ssh_config(key_file)
        self.network.create()
        for instance in self.site.instances:
            build_dir = self.builds[instance.role]
            vm = self._qemu(instance)
            # Recorded before its files and qemu exist: down() and a later run's
            # clean-up find them whenever this run is interrupted.
            self.members.append(Member(instance, build_dir, vm))
            self._save_state(kept=False)
            vm.launch(public_key)
            self._save_state(kept=False)
            self.say(f"[site] {instance.name} ({instance.role} {build_dir.name}) booting")
        self._wait_all_ready(time.monotonic())

    def _wait_all_ready(self, started: float) -> None:
        threads = [
            threading.Thread(target=self._wait_ready, args=(m, started), daemon=True)
            for m in self.members
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
        failed = [m for m in self.members if m.error]
        if failed:
            raise ImagekitError("; ".join(f"{m.instance.name}: {m.error}" for m in failed))

    def _qemu(self, instance: SiteInstance) -> QemuInstance:
        build_dir = self.builds[instance.role]
        values = self.site.role_values(instance)
        nics = [network.PUBLIC_BRIDGE] if instance.role == "lb" else []
        nics.append(network.PRIVATE_BRIDGE)
        netdevs = []
        for n, bridge in enumerate(nics):
            tap = self.network.tap(public=bridge == network.PUBLIC_BRIDGE)
            netdevs.append(
                Nic(f"tap,ifname={tap},script=no,downscript=no", self.site.mac(instance, n))
            )
        return QemuInstance(
            Build(instance.role, build_dir).image,
            Manifest.read(build_dir).admin_user,
            instance.name,
            render_user_data(instance.role, values, self.config.cache_dir),
            memory_mb=MEMORY_MB[instance.role],
            console_log=self.reports / f"{instance.name}-console.log",
            nics=netdevs,
            netns=self.network.namespace,
            network_config=self.site.network_config(instance),
        )

    def _admin_user(self) -> str:
        """The login user, as the builds recorded it."""
        admin = {Manifest.read(b).admin_user for b in self.builds.values()}
        if len(admin) != 1:
            raise UserError(f"the site's builds have different admin users: {sorted(admin)}")
        return admin.pop()

    def _write_ssh_config(self, key_file: Path) -> None:
        """How everyone (readiness, the suite, a person with --keep) reaches the instances."""
        lines = [
            "Host *",
            f"  User {self._admin_user()}",
            f"  IdentityFile {key_file}",
            "  IdentitiesOnly yes",
            "  BatchMode yes",
            # Throwaway instances: their host keys are new by definition.
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            # Guests under TCG are slow: a cheaper key exchange, and time for it.
            "  KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            "  ConnectTimeout 30",
            # One connection per instance, reused by every check.
            "  ControlMaster auto",
            f"  ControlPath {self.workdir}/cm-%C",
            "  ControlPersist 120",
            "  ServerAliveInterval 5",
            "  ServerAliveCountMax 3",
        ]
        lb = self.site.lb
        for instance in self.site.instances:
            lines.append(f"Host {instance.name}")
            if instance is lb:
                lines.append(f"  HostName {self.lb_public_address}")
            else:
                lines += [f"  HostName {instance.address}", f"  ProxyJump {lb.name}"]
        self.ssh_config.write_text("\n".join(lines) + "\n")

    @property
    def ssh_config(self) -> Path:
        return self.workdir / "ssh_config"

    def ssh(self, name: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = [*self.exec_prefix(), "ssh", "-F", str(self.ssh_config), name, command]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 255, "", "timed out")

    def _wait_ssh(self, member: Member, deadline: float) -> None:
        while True:
            if (gone := member.vm.gone()) is not None:
                raise ImagekitError(gone)
            if time.monotonic() > deadline:
                raise ImagekitError(f"SSH did not answer within {self.boot_timeout:.0f}s")
            if self.ssh(member.instance.name, "true", 90).returncode == 0:
                return
            time.sleep(3)

    def _wait_ready(self, member: Member, started: float) -> None:
        """SSH logs in (through the lb for private instances), then cloud-init is done."""
        name, deadline = member.instance.name, started + self.boot_timeout
        try:
            self._wait_ssh(member, deadline)
            member.timings["boot_to_ssh_s"] = round(time.monotonic() - started, 1)
            self.say(f"[site] {name} answers SSH after {member.timings['boot_to_ssh_s']:.0f}s")
            while True:
                done = self.ssh(name, CLOUD_INIT_RESULT, max(deadline - time.monotonic(), 5))
                # 255 is ssh's own failure (a slow guest's banner, a dropped jump): ask again.
                if done.returncode != 255:
                    break
                if time.monotonic() > deadline:
                    raise ImagekitError(f"cloud-init's result unread: {done.stderr.strip()}")
                time.sleep(3)
            member.timings["cloud_init_done_s"] = round(time.monotonic() - started, 1)
            if errors := cloud_init_errors(done.stdout):
                log = self.ssh(name, CLOUD_INIT_LOG_TAIL, 30)
                raise ImagekitError(cloud_init_failure(errors, log.stdout))
        except ImagekitError as err:
            member.error = f"{err}\nconsole:\n{member.vm.console_tail()}"

    # -- the suite --------------------------------------------------------------------------

    def run_suite(self, timeout: float = SUITE_TIMEOUT) -> tuple[Path, float]:
        context = self.workdir / "context.json"
        context.write_text(json.dumps(self.context(), indent=2))
        junit = self.reports / "site-report.xml"
        cmd = [*self.exec_prefix(), *pytest_command(junit, str(SUITE_DIR))]
        started = time.monotonic()
        log_file = self.reports / "site-suite.log"
        with log_file.open("w") as log:
            try:
                subprocess.run(
                    cmd,
                    env={**os.environ, "IMAGEKIT_SITE_CONTEXT": str(context)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                # What the suite started in the namespace goes with the namespace.
                write_error_report(junit, "site_suite", f"no result within {timeout:.0f}s")
        if not junit.is_file():
            write_error_report(junit, "site_suite", f"the suite wrote no report; see {log_file}")
        return junit, round(time.monotonic() - started, 1)

    def context(self) -> dict[str, object]:
        """What the site suite needs: the instances, the outside, how to reach them."""
        site = self.site
        return {
            "ssh_config": str(self.ssh_config),
            # Checks of the local wiring (the run's own namespace) are left out on a cloud.
            "backend": "local" if self.backend == "QemuInstance" else "cloud",
            "domain": site.domain,
            "private_network": str(site.private_network),
            "outside": self.outside,
            "lb": site.lb.name,
            "lb_public_address": self.lb_public_address,
            "server_name": site.server_name,
            "db_name": site.db_name,
            "db_user": site.db_user,
            "admin_user": self._admin_user(),
            "run_key": str(self.workdir / "id_ed25519"),
            "identity": str(self.identity) if self.identity else None,
            "instances": [
                {"name": i.name, "role": i.role, "address": str(i.address)} for i in site.instances
            ],
        }

    # -- results ----------------------------------------------------------------------------

    def record(
        self, junit: Path, suite_s: float, started: float, error: str | None = None
    ) -> SiteResult:
        checks = _checks(junit)
        counts = {k: sum(1 for _, o in checks if o == k) for k in ("failed", "error", "skipped")}
        passed = bool(checks) and not any(counts.values())
        record = SiteTestRecord(
            when=utc_now(),
            passed=passed,
            tests=len(checks),
            failures=counts["failed"],
            errors=counts["error"],
            skipped=counts["skipped"],
            suite_s=suite_s,
            total_s=round(time.monotonic() - started, 1),
            backend=self.backend,
            accelerator=self.members[0].vm.accelerator if self.members else "",
            report=str(junit),
            site=str(self.site_file),
            run_id=self.run_id,
            error=error,
            instances={
                m.instance.name: f"{m.instance.role}/{m.build_dir.name}" for m in self.members
            },
            timings={
                f"{m.instance.name}_{k}": v for m in self.members for k, v in m.timings.items()
            },
        )
        for build_dir in sorted(set(self.builds.values())):
            Manifest.update(build_dir, lambda manifest: manifest.site_tests.append(record))
        (self.reports / "summary.json").write_text(record.model_dump_json(indent=2) + "\n")
        return SiteResult(
            record,
            junit,
            checks,
            self.members,
            self.namespace,
            self.ssh_config,
            self.lb_public_address,
        )

    # -- tear down --------------------------------------------------------------------------

    def keep(self) -> None:
        """Leave the site up, whole: what the suite's fault check powered off comes back."""
        off = [m for m in self.members if m.vm.gone() is not None]
        for member in off:
            member.vm.power_on()
            self.say(f"[site] {member.instance.name} powered on again (the suite turned it off)")
        deadline = time.monotonic() + self.boot_timeout
        for member in off:
            try:
                self._wait_ssh(member, deadline)
            except ImagekitError as err:
                self.say(f"[site] warning: {member.instance.name} did not come back: {err}")
        # Kept only now: until then `site down` leaves this run alone (its owner is alive).
        self._save_state(kept=True)

    def down(self) -> None:
        """Stop every instance and remove the namespace and the run's files."""
        for member in self.members:
            member.vm.stop()
        teardown(self.network.namespace, [], self.workdir)

    def _where(self) -> dict[str, object]:
        """What teardown() needs to find this site's parts."""
        return {
            "namespace": self.network.namespace,
            "qemu": [{"pid": m.vm.pid or 0, "workdir": str(m.vm.workdir)} for m in self.members],
        }

    def _save_state(self, kept: bool) -> None:
        state = {
            "owner_pid": os.getpid(),
            "kept": kept,
            **self._where(),
            "ssh_config": str(self.ssh_config),
            "lb": self.site.lb.name,
            "lb_public_address": self.lb_public_address,
            "instances": [i.name for i in self.site.instances],
        }
        tmp = self.workdir / (STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.workdir / STATE)


def write_error_report(junit: Path, case: str, message: str) -> None:
    """A JUnit report of one errored case, where the suite could not report itself."""
    suite = ET.Element("testsuite", name="site", tests="1", errors="1")
    ET.SubElement(ET.SubElement(suite, "testcase", name=case), "error", message=message)
    junit.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(junit, encoding="unicode", xml_declaration=True)


def _checks(junit: Path) -> list[tuple[str, str]]:
    if not junit.is_file():
        return []
    outcomes = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for kind, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if case.find(kind) is not None:
                outcome = name
        outcomes.append((case.get("name", "?"), outcome))
    return outcomes


def teardown(namespace: str, qemu: list[dict[str, object]], workdir: Path) -> None:
    """Stop what a site left (qemu by recorded pid, anything else still in its
    namespace), delete the namespace, remove the run's files."""
    for vm in qemu:
        vm_dir = Path(str(vm["workdir"]))
        processes.stop_leftover(int(str(vm["pid"])), str(vm_dir), grace=5)
        shutil.rmtree(vm_dir, ignore_errors=True)
    # Whatever still runs in the namespace was started there by a site run.
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in map(int, listed.stdout.split()):
        processes.stop_leftover(pid, "", grace=5)
    network.remove(namespace)
    shutil.rmtree(workdir, ignore_errors=True)


def down_all(only_dead: bool = False) -> list[str]:
    """Remove kept sites and the leftovers of runs that died; returns what was removed.

    A site test still running (its owner alive, not kept) is never touched. With
    only_dead, kept sites stay too.
    """
    removed = []
    for workdir in sorted(sites_dir().iterdir()):
        try:
            state = json.loads((workdir / STATE).read_text())
        except (OSError, ValueError):
            if time.time() - workdir.stat().st_mtime < STARTING_GRACE_S:
                continue  # a run that is making its directory right now
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        running = not state["kept"] and _alive(int(state["owner_pid"]))
        if running or (only_dead and state["kept"]):
            continue
        if "cloud" in state:
            from imagekit.site import cloud  # openstacksdk only for cloud sites

            try:
                cloud.delete(state["cloud"], state["run_id"])
            except ImagekitError as err:  # an unreachable cloud must not stop this command
                progress.say(f"[site] site run {state['run_id']} not removed yet: {err}")
                continue
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(f"site run {state['run_id']} in cloud '{state['cloud']}'")
            continue
        teardown(state["namespace"], state["qemu"], workdir)
        removed.append(state["namespace"])
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def site_test(
    config: Config,
    site: Site,
    site_file: Path,
    builds: dict[str, Path],
    keep: bool = False,
    identity: Path | None = None,
    say: Callable[[str], None] = progress.say,
    cloud: str | None = None,
) -> SiteResult:
    """Boot the site (here, or on that cloud), run its suite, record the result; remove
    it all unless kept."""
    for leftover in down_all(only_dead=True):
        say(f"[site] removed {leftover}, left by a run that died")
    if cloud is None:
        run = SiteRun(config, site, site_file, builds, identity, say=say)
    else:
        from imagekit.site.cloud import CloudSiteRun  # openstacksdk only for cloud sites

        run = CloudSiteRun(config, site, site_file, builds, cloud, identity, say=say)
    started = time.monotonic()
    kept = False
    try:
        try:
            run.up()
        except (UserError, Interrupted):
            raise
        except ImagekitError as err:  # a site that does not come up is a result too
            junit = run.reports / "site-report.xml"
            write_error_report(junit, "site_boot", str(err))
            run.record(junit, 0, started, error=str(err).splitlines()[0])
            raise
        say("[site] every instance is up; running the site suite")
        junit, suite_s = run.run_suite()
        result = run.record(junit, suite_s, started)
        if keep:
            run.keep()
            kept = True
        return result
    finally:
        if not kept:
            run.down()


def write_user_data(config: Config, site: Site, output: Path) -> list[Path]:
    """Every instance's user data, as `imagekit userdata` renders it, into OUTPUT/NAME.yaml."""
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UserError(f"--output {output}: not a directory")
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    site = site.with_secrets()
    written = []
    for instance in site.instances:
        text = render_user_data(instance.role, site.role_values(instance), config.cache_dir)
        target = output / f"{instance.name}.yaml"
        write_private(target, text)
        written.append(target)
    return written


def summary(result: SiteResult) -> str:
    record = result.record
    lines = [f"{'instance':10} {'role/build':28} {'to SSH':>8} {'cloud-init done':>16}"]
    for member in result.members:
        t = member.timings
        lines.append(
            f"{member.instance.name:10} {member.instance.role + '/' + member.build_dir.name:28} "
            f"{t.get('boot_to_ssh_s', 0):7.0f}s {t.get('cloud_init_done_s', 0):15.0f}s"
        )
    lines.append("")
    lines += [f"{outcome.upper():8} {check}" for check, outcome in result.checks]
    passed = sum(1 for _, outcome in result.checks if outcome == "passed")
    lines.append(
        f"site: {'PASSED' if record.passed else 'FAILED'} {passed}/{record.tests} checks "
        f"(suite {record.suite_s:.0f}s, total {record.total_s:.0f}s, {record.accelerator}); "
        f"report: {result.report}"
    )
    return "\n".join(lines)


def document(result: SiteResult) -> dict[str, object]:
    """`site test -f json`: the record the builds' manifests got, each check's outcome,
    and the report's path."""
    return {
        **result.record.model_dump(),
        "report": str(result.report),
        "checks": dict(result.checks),
    }


def how_to_reach(result: SiteResult) -> str:
    """For --keep: a shell in the outside world, and SSH to every instance."""
    enter = f"ip netns exec {result.namespace} " if result.namespace else ""
    lines = [
        "the site is up; from its outside world:",
        f"  {enter}curl -k https://{result.lb_public_address}/",
    ]
    if result.namespace:
        lines.append(f"  {enter}bash    # a shell out there")
    lines += [f"  {enter}ssh -F {result.ssh_config} {m.instance.name}" for m in result.members]
    lines.append("remove it with: imagekit site down")
    return "\n".join(lines)
