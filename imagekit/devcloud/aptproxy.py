"""The dev cloud's apt proxy: Debian's archive for servers that may reach nothing else.

The dev cloud's servers have no route out of the machine. Builds on the cloud
(Packer's openstack source) still need packages: this HTTP proxy listens on the
public network's gateway address inside the dev cloud's namespace, and fetches
from the host's own network, only from the Debian mirrors in the host's apt
sources (GET and HEAD, plain http, as apt asks a proxy).

Run by the dev cloud as a daemon:
    python -m imagekit.devcloud.aptproxy NAMESPACE ADDRESS PORT HOST [HOST...]
"""

import ctypes
import http.client
import os
import shutil
import socket
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLONE_NEWNET = 0x40000000
# What goes to the mirror and comes back (hop-by-hop headers stay here).
REQUEST_HEADERS = ("Range", "If-Modified-Since", "If-Range", "If-None-Match", "Cache-Control")
RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Last-Modified",
    "ETag",
    "Accept-Ranges",
)


def listen_in_namespace(namespace: str, address: str, port: int) -> socket.socket:
    """A listening socket in that namespace; the caller stays in its own for the rest."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            return socket.create_server((address, port))
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


class Proxy(BaseHTTPRequestHandler):
    allowed: frozenset[str] = frozenset()

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.allowed:
            self.send_error(403, f"only {', '.join(sorted(self.allowed))}")
            return
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        try:
            headers = {k: v for k in REQUEST_HEADERS if (v := self.headers.get(k))}
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream.request(self.command, path or "/", headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status, response.reason)
            for name in RESPONSE_HEADERS:
                if value := response.getheader(name):
                    self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "GET":
                shutil.copyfileobj(response, self.wfile, 1 << 16)
        except OSError as error:
            self.log_error("upstream %s: %s", url.hostname, error)
        finally:
            upstream.close()


def main(argv: list[str]) -> None:
    namespace, address, port, *hosts = argv
    Proxy.allowed = frozenset(hosts)
    listener = listen_in_namespace(namespace, address, int(port))
    server = ThreadingHTTPServer((address, int(port)), Proxy, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
