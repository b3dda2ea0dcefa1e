"""The site suite, run by `imagekit site test` inside the site's network namespace.

This process is the outside world: it reaches the lb on its public address,
and every other instance over SSH through the lb as a jump host. imagekit
passes the site (instances, addresses, the SSH config) in a JSON file named by
IMAGEKIT_SITE_CONTEXT.
"""

import http.client
import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.host import Host

OUTSIDE_PORT = 8000


def _context() -> dict[str, Any] | None:
    path = os.environ.get("IMAGEKIT_SITE_CONTEXT")
    if not path:
        return None
    context: dict[str, Any] = json.loads(Path(path).read_text())
    return context


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a cloud, the checks of the local wiring are not collected (not skipped: a skip
    would fail the site test)."""
    context = _context()
    if context is None or context["backend"] == "local":
        return
    local = [item for item in items if item.get_closest_marker("local_site")]
    if local:
        config.hook.pytest_deselected(items=local)
        items[:] = [item for item in items if item not in local]


@pytest.fixture(scope="session")
def site() -> dict[str, Any]:
    context = _context()
    if context is None:
        pytest.fail("this suite runs through 'imagekit site test' (IMAGEKIT_SITE_CONTEXT unset)")
    return context


@pytest.fixture(scope="session")
def hosts(site: dict[str, Any]) -> dict[str, Host]:
    """testinfra hosts by instance name, over SSH (private ones through the lb)."""
    return {
        i["name"]: testinfra.get_host(
            f"ssh://{i['name']}", ssh_config=site["ssh_config"], controlpersist=0
        )
        for i in site["instances"]
    }


def names(site: dict[str, Any], role: str) -> list[str]:
    return [i["name"] for i in site["instances"] if i["role"] == role]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def request(site: dict[str, Any], scheme: str, path: str = "/", timeout: float = 30) -> Response:
    """A request to the site's public name at the lb's public address."""
    address = site["lb_public_address"]
    if scheme == "https":
        # The lb's certificate is self-signed per instance: TLS, not trust, is tested here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            address, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(address, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": site["server_name"]})
        answer = conn.getresponse()
        return Response(answer.status, dict(answer.getheaders()), answer.read().decode())
    finally:
        conn.close()


@dataclass
class OutsideServer:
    """An HTTP server in the outside world that records who called it."""

    sources: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def outside_server(site: dict[str, Any]) -> Iterator[OutsideServer]:
    seen = OutsideServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.sources.append(self.client_address[0])
            body = f"{self.client_address[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((site["outside"], OUTSIDE_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
