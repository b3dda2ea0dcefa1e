"""The SOCKS front for ssh's ProxyCommand, and the dev cloud's apt proxy, on loopback."""

import socket
import struct
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imagekit.devcloud.aptproxy import Proxy
from imagekit.instances.socks import socks_for_proxy_command

# A ProxyCommand as ssh runs it: connect to %h:%p, relay stdin/stdout.
RELAY = """
import socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := sys.stdin.buffer.read1(65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := sock.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_socks_connect_runs_the_proxy_command(echo_server: int, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    with (
        socks_for_proxy_command(f"{sys.executable} {relay} %h %p") as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        client.sendall(bytes([5, 1, 0]))
        assert client.recv(2) == bytes([5, 0]), "no authentication"
        request = bytes([5, 1, 0, 1]) + socket.inet_aton("127.0.0.1")
        client.sendall(request + struct.pack("!H", echo_server))
        assert client.recv(10)[:2] == bytes([5, 0]), "granted"
        client.sendall(b"through the proxy command")
        assert client.recv(1024) == b"THROUGH THE PROXY COMMAND"


def test_socks_refuses_what_is_not_connect(tmp_path: Path) -> None:
    with (
        socks_for_proxy_command("true %h %p") as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        client.sendall(bytes([5, 1, 0]))
        client.recv(2)
        client.sendall(bytes([5, 2, 0, 1, 127, 0, 0, 1, 0, 80]))  # BIND
        assert client.recv(10)[:2] == bytes([5, 7]), "command not supported"


class _Mirror(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"package index at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_apt_proxy_fetches_only_from_the_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = _serve(_Mirror)
    monkeypatch.setattr(Proxy, "allowed", frozenset({"127.0.0.1"}))
    monkeypatch.setattr(Proxy, "log_message", lambda *args: None)
    proxy = _serve(Proxy)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy.server_address[1]}"})
    )
    try:
        url = f"http://127.0.0.1:{mirror.server_address[1]}/debian/dists/bookworm/Release"
        with opener.open(url, timeout=10) as response:
            assert response.read() == b"package index at /debian/dists/bookworm/Release"
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"http://localhost:{mirror.server_address[1]}/", timeout=10)
        assert refused.value.code == 403, "not a mirror of the host's apt sources"
    finally:
        mirror.shutdown()
        proxy.shutdown()
