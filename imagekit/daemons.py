"""Start and stop the dev cloud's daemons: one process group each, known by a pid file.

Each daemon runs in the foreground of its own session, so stopping its group
also stops what it forked; the pid file holds the start time too, which tells
our process from an unrelated one that reused the pid.
"""

import socket
from dataclasses import dataclass
from pathlib import Path

from imagekit.processes import spawn, stop_groups

STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Daemon:
    name: str
    command: list[str]
    run_dir: Path  # pid files
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Not dying with us: the dev cloud outlives `imagekit devcloud up`.
        with self.log.open("a") as out:
            process = spawn(self.command, stdout=out, env=env, cwd=cwd)
        # The start time beside the pid: how pid() knows the process is still ours.
        self.pid_file.write_text(f"{process.pid} {_start_time(process.pid)}")

    def pid(self) -> int | None:
        """The recorded pid, if that process still lives (pids get reused: start times tell)."""
        try:
            pid, started = self.pid_file.read_text().split()
            return int(pid) if _start_time(int(pid)) == started else None
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        pid = self.pid()
        if pid is not None:
            stop_groups([pid], grace=timeout)
        self.pid_file.unlink(missing_ok=True)


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot); None for zombies and the gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def uwsgi_command(venv: Path, port: int, module: str, paste: Path | None = None) -> list[str]:
    """How the dev cloud serves an OpenStack API: uwsgi on 127.0.0.1:port, the WSGI
    module, or the app of a paste file (Barbican's module reads /etc's paste file)."""
    app = ["--paste", f"config:{paste}"] if paste else ["--module", module]
    return [
        str(venv / "bin" / "uwsgi"),
        *("--http-socket", f"127.0.0.1:{port}"),
        *app,
        *("--virtualenv", str(venv)),
        # One process, no master: when the app cannot load, uwsgi exits
        # instead of respawning workers forever.
        *("--processes", "1", "--threads", "4", "--need-app", "--die-on-term"),
        # http-socket drops kept-alive connections, and clients then fail
        # with ConnectionResetError on their next request.
        *("--add-header", "Connection: close", "--buffer-size", "65535"),
        # Nova's snapshot upload sends Glance 1 MiB chunks (Transfer-Encoding:
        # chunked); uwsgi's default limit per chunk refuses them ("unable to
        # receive chunked part").
        *("--chunked-input-limit", str(16 * 1024 * 1024)),
    ]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As uwsgi does: connections of a stopped server in TIME_WAIT do not block.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
