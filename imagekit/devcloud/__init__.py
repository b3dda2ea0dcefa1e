"""A real OpenStack image service (Keystone + Glance + Barbican) on loopback.

For tests and for users without a cloud. Keystone, Glance and Barbican (the key
manager, where image signing certificates live: Glance verifies a signed image
on upload against it) come from PyPI into their own virtualenv (their pins
clash with ours) and run under uwsgi on 127.0.0.1. A first setup takes ~20 s, so
a copy of the fresh databases, keys and config (the snapshot) is kept, and later
starts restore it in ~3 s.
"""

import base64
import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import yaml
from keystoneauth1.exceptions import ClientException
from openstack.config.loader import OpenStackConfig
from openstack.connection import Connection
from openstack.exceptions import SDKException

from imagekit.clouds import keystone
from imagekit.daemons import Daemon, port_is_free, uwsgi_command
from imagekit.devcloud.compute import AUTH, COMPUTE_PINS, ComputeCloud
from imagekit.errors import ImagekitError, UserError, one_line
from imagekit.files import remove_path, write_private
from imagekit.host import free_ports
from imagekit.locking import Lock
from imagekit.processes import stop_groups
from imagekit.roles import CHECKOUT

DEFAULT_STATE_DIR = CHECKOUT / "build" / "devcloud"
PINS = ("keystone==30.0.0", "glance==33.0.0", "barbican==23.0.0", "uwsgi==2.0.31")
# Bump when the setup changes, so that older snapshots are not restored.
SETUP_VERSION = 3
REGION = "RegionOne"
# cloud name in clouds.yaml -> (user, project); each user is a member of its project.
ACCOUNTS = {
    "devcloud-admin": ("admin", "admin"),
    "devcloud": ("builder", "images"),
    "devcloud-alpha": ("alpha-user", "alpha"),
    "devcloud-beta": ("beta-user", "beta"),
}
APPS = {
    "keystone": "keystone.wsgi.api:application",
    "glance": "glance.wsgi.api:application",
    "barbican": "",  # served from its paste file (BARBICAN_PASTE)
}
# Barbican's plugins read their config only from ~/.barbican/ (or /etc): its HOME is here.
BARBICAN_HOME = "barbican-home"
BARBICAN_PASTE = Path("etc/barbican/barbican-api-paste.ini")  # in the venv
# What the snapshot holds; everything else in the state dir is kept or rebuilt.
SNAPSHOT_ENTRIES = ("etc", "data", "keys", BARBICAN_HOME, "clouds.yaml", "ports.json")
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0

KEYSTONE_CONF = """\
[database]
connection = sqlite:///{state}/data/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {state}/keys/fernet
# fernet_setup also makes receipt keys, by default in /etc/keystone.
[fernet_receipts]
key_repository = {state}/keys/receipts
[credential]
key_repository = {state}/keys/credential
# The in-process cache cuts a request from ~200 ms to ~20 ms.
[cache]
enabled = true
backend = oslo_cache.dict
# A loopback test cloud: cheap password hashing keeps logins fast.
[identity]
password_hash_rounds = 4
"""

GLANCE_CONF = """\
[DEFAULT]
enabled_backends = fs:file
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {state}/images/store
[os_glance_staging_store]
filesystem_store_datadir = {state}/images/staging
[os_glance_tasks_store]
filesystem_store_datadir = {state}/images/tasks
[database]
connection = sqlite:///{state}/data/glance.db
[paste_deploy]
flavor = keystone
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{keystone_port}
{auth}[oslo_concurrency]
lock_path = {state}/run/lock
# Signed images: the certificate is fetched from Barbican (found in the catalog) with
# the uploader's token, re-checked here.
[barbican]
auth_endpoint = http://127.0.0.1:{keystone_port}/v3
"""

BARBICAN_CONF = """\
[DEFAULT]
host_href = http://127.0.0.1:{barbican_port}
[database]
connection = sqlite:///{state}/data/barbican.db
# The key that encrypts the stored secrets (kept with the database in the snapshot).
[simple_crypto_plugin]
kek = {kek}
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{keystone_port}
{auth}"""


class DevCloud:
    """Keystone + Glance on 127.0.0.1; venv, databases, keys and logs in state_dir."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.resolve()
        self.venv = self.state_dir / "venv"
        self.logs = self.state_dir / "logs"
        self.snapshot = self.state_dir / "snapshot"
        self.compute = ComputeCloud(self)

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def env(self, cloud: str = "devcloud") -> dict[str, str]:
        """Environment variables that point openstacksdk and the CLI at this cloud."""
        if cloud not in ACCOUNTS:
            raise UserError(f"unknown dev cloud {cloud!r}; choose from {', '.join(ACCOUNTS)}")
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": cloud}

    def connect(self, cloud: str = "devcloud", timeout: float | None = None) -> Connection:
        """An openstacksdk connection that ignores the caller's OS_* variables."""
        self.env(cloud)
        files = [str(self.clouds_yaml)]
        config = OpenStackConfig(config_files=files, secure_files=[], load_envvars=False)
        return Connection(config=config.get_one(cloud=cloud, api_timeout=timeout))

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def up(self, fresh: bool = False, compute: bool = False) -> None:
        """Start with an empty image store, unless already running and healthy.

        fresh=True redoes the whole setup instead of restoring the snapshot;
        compute=True adds Placement, Nova and Neutron (see imagekit.devcloud.compute).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with Lock(self.state_dir / "devcloud.lock", "dev cloud start/stop"):
            if not fresh and self.is_up() and (not compute or self.compute.is_up()):
                return
            self._down()
            if compute:
                self.compute.check_host()
            self.install(compute)
            shutil.rmtree(self.state_dir / "images", ignore_errors=True)
            try:
                if fresh or not self._restore():
                    self._setup()
                else:
                    self._start()
                    self._wait_ready()
                if compute:
                    self.compute.up(fresh)
            except BaseException:
                self._down()  # no half-started servers left behind
                raise

    def is_up(self) -> bool:
        """Our servers run, Keystone issues a token and Glance lists images."""
        return all(self._pid(name) is not None for name in APPS) and self._probe() is None

    def down(self) -> None:
        with Lock(self.state_dir / "devcloud.lock", "dev cloud start/stop"):
            self._down()

    def install(self, compute: bool = False) -> None:
        """Install Keystone, Glance and uwsgi (and compute's pins) into the dev cloud's venv, once.

        The compute pins go into the same venv: one release series, one resolver run.
        """
        pins = PINS + (COMPUTE_PINS if compute else ())
        stamp = self.venv / "devcloud-pins"
        installed = stamp.read_text().split() if stamp.exists() else []
        if set(pins) <= set(installed):
            return
        log = self.logs / "install.log"
        if installed[: len(PINS)] != list(PINS):
            shutil.rmtree(self.venv, ignore_errors=True)
            self.run([sys.executable, "-m", "venv", str(self.venv)], "creating its venv", log)
        pip = [str(self.venv / "bin" / "pip"), "install", "--disable-pip-version-check"]
        self.run([*pip, *pins], f"installing {' '.join(pins)}", log)
        stamp.write_text(" ".join(pins))

    def _setup(self) -> None:
        for entry in SNAPSHOT_ENTRIES:
            remove_path(self.state_dir / entry)
        ports = dict(zip(APPS, free_ports(len(APPS)), strict=True))
        (self.state_dir / "ports.json").write_text(json.dumps(ports))
        users = ["glance", "barbican", *(user for user, _ in ACCOUNTS.values())]
        passwords = {user: secrets.token_urlsafe(16) for user in users}
        etc, state = self.state_dir / "etc", self.state_dir
        _write_private(etc / "keystone" / "keystone.conf", KEYSTONE_CONF.format(state=state))

        def auth(user: str) -> str:  # a service user's keystone_authtoken credentials
            return AUTH.format(keystone_port=ports["keystone"], user=user, password=passwords[user])

        glance_conf = GLANCE_CONF.format(
            state=state, keystone_port=ports["keystone"], auth=auth("glance")
        )
        _write_private(etc / "glance" / "glance-api.conf", glance_conf)
        paste = self.venv / "etc" / "glance" / "glance-api-paste.ini"
        shutil.copy(paste, etc / "glance" / "glance-api-paste.ini")
        barbican_conf = BARBICAN_CONF.format(
            state=state,
            barbican_port=ports["barbican"],
            keystone_port=ports["keystone"],
            kek=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            auth=auth("barbican"),
        )
        _write_private(state / BARBICAN_HOME / ".barbican" / "barbican.conf", barbican_conf)
        self._write_clouds_yaml(ports["keystone"], passwords)
        (self.state_dir / "data").mkdir()

        log = self.logs / "setup.log"
        log.unlink(missing_ok=True)
        keystone = [str(self.venv / "bin" / "keystone-manage"), "--config-file"]
        keystone.append(str(etc / "keystone" / "keystone.conf"))
        owner = [
            f"--keystone-user={pwd.getpwuid(os.getuid()).pw_name}",
            f"--keystone-group={grp.getgrgid(os.getgid()).gr_name}",
        ]
        url = f"http://127.0.0.1:{ports['keystone']}/v3"
        bootstrap = ["bootstrap", f"--bootstrap-region-id={REGION}"]
        bootstrap += [f"--bootstrap-public-url={url}", f"--bootstrap-internal-url={url}"]
        # The admin password goes through the environment: not into ps or the log.
        secret = {"OS_BOOTSTRAP_PASSWORD": passwords["admin"]}
        for args in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner]):
            self.run([*keystone, *args], f"keystone-manage {args[0]}", log)
        self.run([*keystone, *bootstrap], "keystone-manage bootstrap", log, secret)
        glance = [str(self.venv / "bin" / "glance-manage"), "--config-file"]
        glance += [str(etc / "glance" / "glance-api.conf"), "db_sync"]
        self.run(glance, "glance-manage db_sync", log)
        barbican = [str(self.venv / "bin" / "barbican-manage"), "db", "upgrade"]
        self.run(barbican, "barbican-manage db upgrade", log, self._barbican_home())

        self._start()
        self._wait_ready("devcloud-admin", image=False)
        self._create_accounts(ports, passwords)
        self._wait_ready()
        self._take_snapshot()

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

    def _create_accounts(self, ports: dict[str, int], passwords: dict[str, str]) -> None:
        conn = self.connect("devcloud-admin")
        identity = keystone(conn)  # identity_api_version is 3 in clouds.yaml
        # Barbican's user only checks tokens: the `service` role is enough.
        accounts = [("glance", "service", "admin"), ("barbican", "service", "service")]
        # admin comes from keystone-manage bootstrap
        accounts += [(u, p, "member") for u, p in ACCOUNTS.values() if u != "admin"]
        try:
            for user_name, project_name, role_name in accounts:
                project = identity.find_project(project_name) or identity.create_project(
                    name=project_name, domain_id="default"
                )
                user = identity.create_user(
                    name=user_name,
                    password=passwords[user_name],
                    default_project_id=project.id,
                    domain_id="default",
                )
                role = identity.find_role(role_name) or identity.create_role(name=role_name)
                identity.assign_project_role_to_user(project, user, role)
            for name, kind in (("glance", "image"), ("barbican", "key-manager")):
                service = identity.create_service(name=name, type=kind)
                for interface in ("public", "internal"):
                    identity.create_endpoint(
                        service_id=service.id,
                        interface=interface,
                        url=f"http://127.0.0.1:{ports[name]}",
                        region_id=REGION,
                    )
        except (SDKException, ClientException) as error:
            log = self.logs / "keystone.log"
            message = f"dev cloud: account setup failed ({one_line(error)}); see {log}"
            raise ImagekitError(message) from None
        finally:
            conn.close()

    def _snapshot_stamp(self) -> str:
        # The config holds absolute paths: a moved state dir needs a new setup.
        return json.dumps({"pins": PINS, "setup": SETUP_VERSION, "dir": str(self.state_dir)})

    def _take_snapshot(self) -> None:
        partial = self.state_dir / "snapshot.partial"
        remove_path(partial)
        partial.mkdir()
        _copy_entries(self.state_dir, partial)
        (partial / "stamp").write_text(self._snapshot_stamp())
        remove_path(self.snapshot)
        partial.rename(self.snapshot)

    def _restore(self) -> bool:
        """Put the snapshot in place; False when there is none or its ports are taken."""
        stamp = self.snapshot / "stamp"
        if not stamp.exists() or stamp.read_text() != self._snapshot_stamp():
            return False
        ports = json.loads((self.snapshot / "ports.json").read_text())
        # The ports are in the service catalog, so they must be free again.
        if not all(port_is_free(port) for port in ports.values()):
            return False
        for entry in SNAPSHOT_ENTRIES:
            remove_path(self.state_dir / entry)
        _copy_entries(self.snapshot, self.state_dir)
        return True

    def _start(self) -> None:
        ports = json.loads((self.state_dir / "ports.json").read_text())
        for path in ("run/lock", "images/store", "logs"):
            (self.state_dir / path).mkdir(parents=True, exist_ok=True)
        for name, module in APPS.items():
            self._log(name).unlink(missing_ok=True)
            env, paste = self.process_env(), None
            if name == "barbican":
                env, paste = env | self._barbican_home(), self.venv / BARBICAN_PASTE
            self.daemon(name, uwsgi_command(self.venv, ports[name], module, paste)).start(
                env, self.state_dir
            )

    def daemon(self, name: str, command: list[str] | None = None) -> Daemon:
        """One of the dev cloud's daemons (the command is needed only to start it)."""
        return Daemon(name, command or [], self.state_dir / "run", self.logs)

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _down(self) -> None:
        self.compute.down()
        pids = [pid for pid in map(self._pid, APPS) if pid is not None]
        stop_groups(pids, grace=STOP_TIMEOUT)
        for name in APPS:
            self.daemon(name).pid_file.unlink(missing_ok=True)

    def _pid(self, name: str) -> int | None:
        return self.daemon(name).pid()

    def process_env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OS_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["OS_KEYSTONE_CONFIG_DIR"] = str(self.state_dir / "etc" / "keystone")
        env["OS_GLANCE_CONFIG_DIR"] = str(self.state_dir / "etc" / "glance")
        return env

    def _barbican_home(self) -> dict[str, str]:
        return {"HOME": str(self.state_dir / BARBICAN_HOME)}

    def run(
        self, command: list[str], what: str, log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        """Run a setup command of the dev cloud, its output appended to log."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.process_env(), **(extra_env or {})},
                cwd=self.state_dir,  # keystone-manage may drop files into its cwd
            )
        if result.returncode != 0:
            raise ImagekitError(f"dev cloud: {what} failed (exit {result.returncode}); see {log}")

    def _probe(self, cloud: str = "devcloud", image: bool = True) -> Exception | None:
        """None when Keystone issues a token (and Glance lists images), else the error."""
        try:
            # Listening first: else openstacksdk logs a warning for each refused discovery.
            ports = json.loads((self.state_dir / "ports.json").read_text())
            for name in APPS if image else ["keystone"]:
                socket.create_connection(("127.0.0.1", ports[name]), timeout=5).close()
            # A server that accepts but never answers must not stall the wait.
            conn = self.connect(cloud, timeout=10)
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
                log = self.logs / ("glance.log" if image else "keystone.log")
                why = one_line(error)
                raise ImagekitError(
                    f"dev cloud: not ready after {READY_TIMEOUT:.0f} s ({why}); see {log}"
                )
            time.sleep(0.2)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text)


def _copy_entries(source: Path, destination: Path) -> None:
    for entry in SNAPSHOT_ENTRIES:
        if (source / entry).is_dir():
            shutil.copytree(source / entry, destination / entry, copy_function=_copy_consistent)
        else:
            _copy_consistent(str(source / entry), str(destination / entry))


def _copy_consistent(source: str, destination: str) -> object:
    """copytree's copy function: SQLite files through the backup API (safe while in use)."""
    if not source.endswith(".db"):
        return shutil.copy2(source, destination)
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(destination)) as dst,
    ):
        src.backup(dst)
    shutil.copystat(source, destination)
    return destination
