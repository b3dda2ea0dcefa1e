"""A real OpenStack image service (Keystone + Glance) on loopback.

For tests and for users without a cloud. Keystone and Glance come from PyPI
into their own virtualenv (their pins clash with ours) and run under uwsgi on
127.0.0.1. A first setup takes ~20 s, so a copy of the fresh databases, keys
and config (the snapshot) is kept and restored by later starts instead.
"""

import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import yaml
from keystoneauth1.exceptions import ClientException
from openstack.config.loader import OpenStackConfig
from openstack.connection import Connection
from openstack.exceptions import SDKException
from openstack.identity.v3._proxy import Proxy as IdentityV3

from imagekit.errors import ImagekitError, UserError
from imagekit.locking import Lock

DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / "build" / "devcloud"
PINS = ("keystone==30.0.0", "glance==33.0.0", "uwsgi==2.0.31")
# Bump when the setup changes, so that older snapshots are not restored.
SETUP_VERSION = 1
REGION = "RegionOne"
# cloud name in clouds.yaml -> (user, project)
ACCOUNTS = {
    "devcloud-admin": ("admin", "admin"),
    "devcloud": ("builder", "images"),
    "devcloud-alpha": ("alpha-user", "alpha"),
    "devcloud-beta": ("beta-user", "beta"),
}
APPS = {"keystone": "keystone.wsgi.api:application", "glance": "glance.wsgi.api:application"}
# What the snapshot holds; everything else in the state dir is rebuilt or kept.
SNAPSHOT_ENTRIES = ("etc", "data", "keys", "clouds.yaml", "ports.json")
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class DevCloud:
    """Keystone + Glance on 127.0.0.1 with state (venv, databases, logs) in state_dir."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.resolve()
        self.venv = self.state_dir / "venv"
        self.logs = self.state_dir / "logs"
        self.snapshot = self.state_dir / "snapshot"
        self._run_dir = self.state_dir / "run"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def env(self, cloud: str = "devcloud") -> dict[str, str]:
        """Environment variables that point openstacksdk and the CLI at this cloud."""
        if cloud not in ACCOUNTS:
            raise UserError(f"unknown dev cloud {cloud!r}; choose from {', '.join(ACCOUNTS)}")
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": cloud}

    def connect(self, cloud: str = "devcloud") -> Connection:
        """An openstacksdk connection that ignores the caller's OS_* variables."""
        self.env(cloud)
        config = OpenStackConfig(
            config_files=[str(self.clouds_yaml)], secure_files=[], load_envvars=False
        )
        return Connection(config=config.get_one(cloud=cloud))

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self, fresh: bool = False) -> None:
        """Start with an empty image store; fresh=True redoes the setup instead of the snapshot."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with Lock(self.state_dir / "devcloud.lock", "dev cloud start/stop"):
            if not fresh and self._running() and self._probe() is None:
                return
            self._down()
            self.install()
            shutil.rmtree(self.state_dir / "images", ignore_errors=True)
            if fresh or not self._restore():
                self._setup()
                return
            self._start()
            self._wait_ready()

    def down(self) -> None:
        with Lock(self.state_dir / "devcloud.lock", "dev cloud start/stop"):
            self._down()

    def install(self) -> None:
        """Install Keystone, Glance and uwsgi into the dev cloud's own virtualenv, once."""
        stamp = self.venv / "devcloud-pins"
        if stamp.exists() and stamp.read_text() == " ".join(PINS):
            return
        shutil.rmtree(self.venv, ignore_errors=True)
        log = self.logs / "install.log"
        self._run([sys.executable, "-m", "venv", str(self.venv)], "creating its venv", log)
        pip = [str(self.venv / "bin" / "pip"), "install", "--disable-pip-version-check"]
        self._run([*pip, *PINS], "installing Keystone and Glance", log)
        stamp.write_text(" ".join(PINS))

    # -- setup -------------------------------------------------------------

    def _setup(self) -> None:
        for entry in SNAPSHOT_ENTRIES:
            _remove(self.state_dir / entry)
        ports = {"keystone": _free_port(), "glance": _free_port()}
        while ports["glance"] == ports["keystone"]:
            ports["glance"] = _free_port()
        (self.state_dir / "ports.json").write_text(json.dumps(ports))
        passwords = {user: secrets.token_urlsafe(16) for user in ("glance", *_users())}
        self._write_config(ports, passwords["glance"])
        self._write_clouds_yaml(ports["keystone"], passwords)

        log = self.logs / "setup.log"
        keystone = [str(self.venv / "bin" / "keystone-manage")]
        owner = [
            f"--keystone-user={pwd.getpwuid(os.getuid()).pw_name}",
            f"--keystone-group={grp.getgrgid(os.getgid()).gr_name}",
        ]
        identity_url = f"http://127.0.0.1:{ports['keystone']}/v3"
        for args, what in (
            (["db_sync"], "keystone-manage db_sync"),
            (["fernet_setup", *owner], "keystone-manage fernet_setup"),
            (["credential_setup", *owner], "keystone-manage credential_setup"),
            (
                [
                    "bootstrap",
                    f"--bootstrap-password={passwords['admin']}",
                    f"--bootstrap-public-url={identity_url}",
                    f"--bootstrap-internal-url={identity_url}",
                    f"--bootstrap-region-id={REGION}",
                ],
                "keystone-manage bootstrap",
            ),
        ):
            self._run([*keystone, *args], what, log)
        glance_conf = self.state_dir / "etc" / "glance" / "glance-api.conf"
        glance_manage = str(self.venv / "bin" / "glance-manage")
        self._run(
            [glance_manage, "--config-file", str(glance_conf), "db_sync"], "glance db_sync", log
        )

        self._start()
        self._wait_ready("devcloud-admin", image=False)
        self._create_accounts(ports["glance"], passwords)
        self._wait_ready()
        self._take_snapshot()

    def _write_config(self, ports: dict[str, int], glance_password: str) -> None:
        data, keys, images = (self.state_dir / name for name in ("data", "keys", "images"))
        keystone: dict[str, dict[str, str]] = {
            "database": {"connection": f"sqlite:///{data}/keystone.db"},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": f"{keys}/fernet"},
            "credential": {"key_repository": f"{keys}/credential"},
            # The in-process cache cuts a request from ~200 ms to ~20 ms.
            "cache": {"enabled": "true", "backend": "oslo_cache.dict"},
            # Loopback test cloud: cheap hashing keeps logins fast.
            "identity": {"password_hash_rounds": "4"},
        }
        identity_url = f"http://127.0.0.1:{ports['keystone']}"
        glance = {
            "DEFAULT": {"enabled_backends": "fs:file"},
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": f"{images}/store"},
            "os_glance_staging_store": {"filesystem_store_datadir": f"{images}/staging"},
            "os_glance_tasks_store": {"filesystem_store_datadir": f"{images}/tasks"},
            "database": {"connection": f"sqlite:///{data}/glance.db"},
            "paste_deploy": {"flavor": "keystone"},
            "keystone_authtoken": {
                "www_authenticate_uri": identity_url,
                "auth_url": identity_url,
                "auth_type": "password",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
                "project_name": "service",
                "username": "glance",
                "password": glance_password,
            },
            "oslo_concurrency": {"lock_path": str(self._run_dir / "lock")},
        }
        data.mkdir(parents=True, exist_ok=True)
        _write_ini(self.state_dir / "etc" / "keystone" / "keystone.conf", keystone)
        _write_ini(self.state_dir / "etc" / "glance" / "glance-api.conf", glance)
        paste = self.venv / "etc" / "glance" / "glance-api-paste.ini"
        shutil.copy(paste, self.state_dir / "etc" / "glance" / "glance-api-paste.ini")

    def _write_clouds_yaml(self, keystone_port: int, passwords: dict[str, str]) -> None:
        clouds = {
            cloud: {
                "auth": {
                    "auth_url": f"http://127.0.0.1:{keystone_port}/v3",
                    "username": user,
                    "password": passwords[user],
                    "project_name": project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": REGION,
                "identity_api_version": 3,
                "image_api_version": 2,
            }
            for cloud, (user, project) in ACCOUNTS.items()
        }
        _write_private(self.clouds_yaml, yaml.safe_dump({"clouds": clouds}, sort_keys=False))

    def _create_accounts(self, glance_port: int, passwords: dict[str, str]) -> None:
        conn = self.connect("devcloud-admin")
        try:
            # identity_api_version 3 in clouds.yaml
            identity = cast(IdentityV3, conn.identity)
            roles = {
                name: identity.find_role(name, ignore_missing=False) for name in ("admin", "member")
            }
            accounts = [("glance", "service", "admin")]
            accounts += [(user, project, "member") for user, project in ACCOUNTS.values()]
            for user_name, project_name, role in accounts:
                if user_name == "admin":
                    continue  # made by keystone-manage bootstrap
                project = identity.find_project(project_name, domain_id="default")
                if project is None:
                    project = identity.create_project(name=project_name, domain_id="default")
                user = identity.create_user(
                    name=user_name,
                    password=passwords[user_name],
                    default_project_id=project.id,
                    domain_id="default",
                )
                identity.assign_project_role_to_user(project, user, roles[role])
            service = identity.create_service(name="glance", type="image")
            for interface in ("public", "internal"):
                identity.create_endpoint(
                    service_id=service.id,
                    interface=interface,
                    url=f"http://127.0.0.1:{glance_port}",
                    region_id=REGION,
                )
        except (SDKException, ClientException) as error:
            raise ImagekitError(f"dev cloud account setup failed: {error}") from None
        finally:
            conn.close()

    # -- snapshot ----------------------------------------------------------

    def _snapshot_stamp(self) -> str:
        return json.dumps({"pins": PINS, "setup": SETUP_VERSION, "dir": str(self.state_dir)})

    def _take_snapshot(self) -> None:
        partial = self.state_dir / "snapshot.partial"
        _remove(partial)
        partial.mkdir()
        for entry in SNAPSHOT_ENTRIES:
            source = self.state_dir / entry
            if source.is_dir():
                shutil.copytree(source, partial / entry, copy_function=_copy_consistent)
            else:
                shutil.copy2(source, partial / entry)
        (partial / "stamp").write_text(self._snapshot_stamp())
        _remove(self.snapshot)
        partial.rename(self.snapshot)

    def _restore(self) -> bool:
        """Put the snapshot in place; False when there is none or its ports are taken."""
        stamp = self.snapshot / "stamp"
        if not stamp.exists() or stamp.read_text() != self._snapshot_stamp():
            return False
        ports = json.loads((self.snapshot / "ports.json").read_text())
        # The ports are baked into the service catalog, so they must be free again.
        if not all(_port_is_free(port) for port in ports.values()):
            return False
        for entry in SNAPSHOT_ENTRIES:
            _remove(self.state_dir / entry)
            source = self.snapshot / entry
            if source.is_dir():
                shutil.copytree(source, self.state_dir / entry)
            else:
                shutil.copy2(source, self.state_dir / entry)
        return True

    # -- processes ---------------------------------------------------------

    def _start(self) -> None:
        ports = json.loads((self.state_dir / "ports.json").read_text())
        for path in (self._run_dir / "lock", self.state_dir / "images" / "store", self.logs):
            path.mkdir(parents=True, exist_ok=True)
        env = self._env()
        for name, module in APPS.items():
            command = [
                str(self.venv / "bin" / "uwsgi"),
                *("--http-socket", f"127.0.0.1:{ports[name]}"),
                *("--module", module, "--virtualenv", str(self.venv)),
                *("--master", "--processes", "2", "--lazy-apps", "--enable-threads"),
                *("--die-on-term", "--need-app", "--buffer-size", "65535"),
                # uwsgi's http-socket drops kept-alive connections, and clients then
                # fail with ConnectionResetError on their next request.
                *("--add-header", "Connection: close"),
                *("--http-chunked-input", "--http-auto-chunked"),
            ]
            log = self.logs / f"{name}.log"
            try:
                with log.open("w") as out:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,  # its own process group: stopped as one
                    )
            except OSError as error:
                raise ImagekitError(f"dev cloud: cannot start {name}: {error}; see {log}") from None
            (self._run_dir / f"{name}.pid").write_text(str(process.pid))

    def _down(self) -> None:
        pids = {name: self._pid(name) for name in APPS}
        for pid in pids.values():
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for name, pid in pids.items():
            if pid is not None:
                deadline = time.monotonic() + STOP_TIMEOUT
                while _group_members(pid) and time.monotonic() < deadline:
                    _reap(pid)
                    time.sleep(0.1)
                if _group_members(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    time.sleep(0.2)
                _reap(pid)
                if _group_members(pid):
                    raise ImagekitError(f"dev cloud: {name} (pid {pid}) does not stop")
            (self._run_dir / f"{name}.pid").unlink(missing_ok=True)

    def _pid(self, name: str) -> int | None:
        """The recorded pid, if that process is still our uwsgi (pids get reused)."""
        try:
            pid = int((self._run_dir / f"{name}.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if cmdline[0].endswith(b"uwsgi") and str(self.venv).encode() in cmdline:
            return pid
        return None

    def _running(self) -> bool:
        return all(self._pid(name) is not None for name in APPS)

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OS_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["OS_KEYSTONE_CONFIG_DIR"] = str(self.state_dir / "etc" / "keystone")
        env["OS_GLANCE_CONFIG_DIR"] = str(self.state_dir / "etc" / "glance")
        return env

    def _run(self, command: list[str], what: str, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=self._env())
        if result.returncode != 0:
            raise ImagekitError(
                f"dev cloud: {what} failed (exit status {result.returncode}); see {log}"
            )

    # -- readiness ---------------------------------------------------------

    def _probe(self, cloud: str = "devcloud", image: bool = True) -> Exception | None:
        """None when Keystone issues a token (and Glance lists images), else the error."""
        try:
            conn = self.connect(cloud)
            try:
                conn.authorize()
                if image:
                    list(conn.image.images())
            finally:
                conn.close()
        except (SDKException, ClientException, OSError) as error:
            return error
        return None

    def _wait_ready(self, cloud: str = "devcloud", image: bool = True) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while (error := self._probe(cloud, image)) is not None:
            for name in APPS:
                if self._pid(name) is None:
                    log = self.logs / f"{name}.log"
                    raise ImagekitError(f"dev cloud: {name} exited while starting; see {log}")
            if time.monotonic() > deadline:
                which = "Glance" if image else "Keystone"
                raise ImagekitError(
                    f"dev cloud: {which} not ready after {READY_TIMEOUT:.0f} s ({error}); "
                    f"see logs in {self.logs}"
                )
            time.sleep(0.2)


def _users() -> list[str]:
    return [user for user, _ in ACCOUNTS.values()]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _write_ini(path: Path, sections: dict[str, dict[str, str]]) -> None:
    lines = []
    for section, options in sections.items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in options.items()), ""]
    _write_private(path, "\n".join(lines))


def _copy_consistent(source: str, destination: str) -> object:
    """copytree's copy function: SQLite files through the backup API (safe while in use)."""
    if source.endswith(".db"):
        with (
            contextlib.closing(sqlite3.connect(source)) as src,
            contextlib.closing(sqlite3.connect(destination)) as dst,
        ):
            src.backup(dst)
        shutil.copystat(source, destination)
        return destination
    return shutil.copy2(source, destination)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
