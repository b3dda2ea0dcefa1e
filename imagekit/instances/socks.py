"""A SOCKS5 front for ssh's ProxyCommand, for tools that take a SOCKS proxy but no
ProxyCommand (Packer's `ssh_proxy_host`): servers the builder cannot route to
(behind a bastion, or in the dev cloud's namespace) stay reachable the same way
as for `imagekit test --cloud`.

Every CONNECT runs the command with %h and %p filled in and relays bytes to and
from its stdin and stdout, as ssh does with a ProxyCommand. It listens on
127.0.0.1 only, for the life of the `with` block.
"""

import contextlib
import shlex
import socket
import socketserver
import struct
import subprocess
import threading
from collections.abc import Iterator
from typing import IO

SOCKS5 = 5
CONNECT = 1
IPV4, DOMAIN, IPV6 = 1, 3, 4


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("SOCKS client closed the connection")
        data += chunk
    return data


def read_request(sock: socket.socket) -> tuple[str, int]:
    """The SOCKS5 greeting (no authentication) and a CONNECT request: (host, port)."""
    version, methods = _read(sock, 2)
    _read(sock, methods)
    if version != SOCKS5:
        raise ConnectionError(f"not SOCKS5 (version {version})")
    sock.sendall(bytes([SOCKS5, 0]))  # no authentication
    version, command, _, kind = _read(sock, 4)
    if kind == IPV4:
        host = socket.inet_ntop(socket.AF_INET, _read(sock, 4))
    elif kind == IPV6:
        host = socket.inet_ntop(socket.AF_INET6, _read(sock, 16))
    elif kind == DOMAIN:
        host = _read(sock, _read(sock, 1)[0]).decode()
    else:
        raise ConnectionError(f"unknown address type {kind}")
    (port,) = struct.unpack("!H", _read(sock, 2))
    if command != CONNECT:
        sock.sendall(bytes([SOCKS5, 7, 0, IPV4, 0, 0, 0, 0, 0, 0]))  # command not supported
        raise ConnectionError(f"SOCKS command {command} is not CONNECT")
    return host, port


def _pump_in(sock: socket.socket, stdin: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            stdin.write(chunk)
            stdin.flush()
    with contextlib.suppress(OSError):
        stdin.close()


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            host, port = read_request(sock)
        except (ConnectionError, OSError, ValueError):
            return
        command = self.server.proxy_command.replace("%h", host).replace("%p", str(port))
        process = subprocess.Popen(
            shlex.split(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        assert process.stdin is not None and process.stdout is not None
        self.server.processes.add(process)
        try:
            sock.sendall(bytes([SOCKS5, 0, 0, IPV4, 0, 0, 0, 0, 0, 0]))  # granted
            threading.Thread(target=_pump_in, args=(sock, process.stdin), daemon=True).start()
            with contextlib.suppress(OSError):
                while chunk := process.stdout.read(65536):
                    sock.sendall(chunk)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            process.kill()
            process.wait()
            self.server.processes.discard(process)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy_command: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy_command = proxy_command
        self.processes: set[subprocess.Popen[bytes]] = set()


@contextlib.contextmanager
def socks_for_proxy_command(proxy_command: str) -> Iterator[int]:
    """A SOCKS5 server on 127.0.0.1 for the block; yields its port."""
    server = _Server(proxy_command)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        for process in list(server.processes):
            process.kill()
