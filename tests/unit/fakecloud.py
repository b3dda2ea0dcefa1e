"""A fake OpenStack (Keystone, Nova, Neutron, Glance) at the HTTP boundary, for requests_mock.

Only what imagekit calls is answered; anything else is HTTP 599 so that a new
call shows up as a test failure instead of passing silently.
"""

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import requests_mock

AUTH = "http://keystone.test/v3"
NOVA = "http://nova.test/v2.1"
NEUTRON = "http://neutron.test"
GLANCE = "http://glance.test"


def _endpoint(kind: str, url: str) -> dict[str, Any]:
    return {
        "type": kind,
        "name": kind,
        "id": kind,
        "endpoints": [
            {
                "id": kind,
                "interface": "public",
                "region": "RegionOne",
                "region_id": "RegionOne",
                "url": url,
            }
        ],
    }


TOKEN = {
    "token": {
        "methods": ["password"],
        "expires_at": "2099-01-01T00:00:00Z",
        "issued_at": "2026-01-01T00:00:00Z",
        "user": {"id": "u1", "name": "builder", "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p1", "name": "images", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "member"}],
        "catalog": [
            _endpoint("compute", NOVA),
            _endpoint("network", NEUTRON),
            _endpoint("image", GLANCE),
        ],
    }
}


class FakeCloud:
    """In-memory servers, keypairs and floating IPs behind the real REST paths."""

    def __init__(
        self,
        mocker: requests_mock.Mocker,
        server_status: str = "ACTIVE",
        images: list[dict[str, str]] | None = None,
    ) -> None:
        self.server_status = server_status
        self.images = images or [{"id": "img-1", "name": "imagekit-web-1"}]
        self.keypairs: dict[str, dict[str, Any]] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        # Every server create request body, as Nova received it.
        self.server_requests: list[dict[str, Any]] = []
        self.floating_ips: dict[str, dict[str, Any]] = {}
        self.ip_requests: list[dict[str, Any]] = []  # each create body, as Neutron got it
        # Ports made by the client (a server's own NIC ports are Nova's: port-1).
        self.ports: dict[str, dict[str, Any]] = {}
        self.port_requests: list[dict[str, Any]] = []
        self.networks = [
            {"id": "net-private", "name": "private"},
            {"id": "net-public", "name": "public"},
            {"id": "net-site", "name": "site-private"},
        ]
        # Networks and subnets the client made: (kind, create body as Neutron got it).
        self.made: list[tuple[str, dict[str, Any]]] = []
        self.created: list[str] = []
        self.deleted: list[str] = []
        mocker.register_uri(requests_mock.ANY, requests_mock.ANY, status_code=599, json={})
        mocker.post(
            f"{AUTH}/auth/tokens", json=TOKEN, headers={"X-Subject-Token": "t"}, status_code=201
        )
        mocker.get(
            AUTH,
            json={
                "version": {
                    "id": "v3.14",
                    "status": "stable",
                    "links": [{"rel": "self", "href": f"{AUTH}/"}],
                }
            },
        )
        mocker.register_uri(
            requests_mock.ANY,
            re.compile(r"^http://(nova|neutron|glance)\.test"),
            json=self._dispatch,
        )

    def _dispatch(self, request: Any, context: Any) -> Any:
        method, path = request.method, request.path
        body = json.loads(request.body) if request.body else {}
        routes: list[tuple[str, str, Callable[[re.Match[str]], Any]]] = [
            ("GET", r"^/?$", lambda m: self._versions(request)),
            (
                "GET",
                r"^/v2.1/?$",
                lambda m: {
                    "version": {
                        "id": "v2.1",
                        "status": "CURRENT",
                        "version": "2.1",
                        "min_version": "2.1",
                        "links": [{"rel": "self", "href": f"{NOVA}/"}],
                    }
                },
            ),
            ("GET", r"^/v2/images/(.+)$", lambda m: self._not_found(context)),
            (
                "GET",
                r"^/v2/images$",
                lambda m: {"images": self.images},
            ),
            ("GET", r"^/v2.1/flavors/(?!detail$)(.+)$", lambda m: self._not_found(context)),
            (
                "GET",
                r"^/v2.1/flavors(/detail)?$",
                lambda m: {"flavors": [{"id": "f1", "name": "m1.small"}]},
            ),
            ("GET", r"^/v2.0/networks/(.+)$", lambda m: self._not_found(context)),
            (
                "GET",
                r"^/v2.0/networks$",
                lambda m: {
                    "networks": [
                        n for n in self.networks if n["name"] in request.qs.get("name", [n["name"]])
                    ]
                },
            ),
            ("POST", r"^/v2.1/os-keypairs$", lambda m: self._create_keypair(body)),
            (
                "DELETE",
                r"^/v2.1/os-keypairs/(.+)$",
                lambda m: self._delete("keypair", m[1], self.keypairs, context),
            ),
            ("POST", r"^/v2.1/servers$", lambda m: self._create_server(body, context)),
            ("GET", r"^/v2.1/servers/([^/]+)$", lambda m: self._get_server(m[1], context)),
            (
                "DELETE",
                r"^/v2.1/servers/([^/]+)$",
                lambda m: self._delete("server", m[1], self.servers, context),
            ),
            ("POST", r"^/v2.1/servers/([^/]+)/action$", lambda m: {"output": "login: "}),
            ("GET", r"^/v2.0/ports$", lambda m: self._list_ports(request)),
            ("POST", r"^/v2.0/ports$", lambda m: self._create_port(body, context)),
            (
                "DELETE",
                r"^/v2.0/ports/(.+)$",
                lambda m: self._delete("port", m[1], self.ports, context),
            ),
            ("GET", r"^/v2.0/security-groups/(.+)$", lambda m: self._not_found(context)),
            (
                "GET",
                r"^/v2.0/security-groups$",
                lambda m: {"security_groups": [{"id": "sg-1", "name": "default"}]},
            ),
            ("POST", r"^/v2.0/networks$", lambda m: self._create("network", body, context)),
            ("POST", r"^/v2.0/subnets$", lambda m: self._create("subnet", body, context)),
            ("POST", r"^/v2.0/floatingips$", lambda m: self._create_ip(body, context)),
            (
                "DELETE",
                r"^/v2.0/floatingips/(.+)$",
                lambda m: self._delete("floating_ip", m[1], self.floating_ips, context),
            ),
        ]
        for route_method, pattern, handler in routes:
            match = re.match(pattern, path)
            if method == route_method and match:
                return handler(match)
        context.status_code = 599
        return {"error": f"fake cloud: no route for {method} {path}"}

    def _versions(self, request: Any) -> Any:
        if "glance" in request.netloc:
            return {
                "versions": [
                    {
                        "id": "v2.15",
                        "status": "CURRENT",
                        "links": [{"rel": "self", "href": f"{GLANCE}/v2/"}],
                    }
                ]
            }
        return {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{NEUTRON}/v2.0/"}],
                }
            ]
        }

    @staticmethod
    def _not_found(context: Any) -> Any:
        context.status_code = 404
        return {"itemNotFound": {"code": 404, "message": "not found"}}

    def _create_keypair(self, body: dict[str, Any]) -> Any:
        keypair = {**body["keypair"], "fingerprint": "fp"}
        self.keypairs[keypair["name"]] = keypair
        self.created.append(f"keypair {keypair['name']}")
        return {"keypair": keypair}

    def _create_server(self, body: dict[str, Any], context: Any) -> Any:
        server = body["server"]
        self.server_requests.append(server)
        server_id = str(uuid.uuid4())
        self.servers[server_id] = {
            **server,
            "id": server_id,
            "status": self.server_status,
            "fault": {"message": "No valid host was found"}
            if self.server_status == "ERROR"
            else None,
            "addresses": {"private": [{"version": 4, "addr": "10.12.0.7"}]},
        }
        self.created.append(f"server {server_id}")
        context.status_code = 202
        return {"server": {"id": server_id}}

    def _get_server(self, server_id: str, context: Any) -> Any:
        if server_id not in self.servers:
            return self._not_found(context)
        return {"server": self.servers[server_id]}

    def _list_ports(self, request: Any) -> Any:
        """The server's own port on its first network, and the ports made by the client."""
        ports = [{"id": "port-1", "network_id": "net-private"}, *self.ports.values()]
        wanted = request.qs.get("network_id")
        return {"ports": [p for p in ports if not wanted or p["network_id"] in wanted]}

    def _create_port(self, body: dict[str, Any], context: Any) -> Any:
        self.port_requests.append(body["port"])
        port = {**body["port"], "id": f"port-{len(self.created) + 2}"}
        self.ports[port["id"]] = port
        self.created.append(f"port {port['id']}")
        context.status_code = 201
        return {"port": port}

    def _create(self, kind: str, body: dict[str, Any], context: Any) -> Any:
        made = {**body[kind], "id": f"{kind}-{len(self.made) + 1}"}
        self.made.append((kind, body[kind]))
        self.created.append(f"{kind} {made['id']}")
        context.status_code = 201
        return {kind: made}

    def _create_ip(self, body: dict[str, Any], context: Any) -> Any:
        self.ip_requests.append(body["floatingip"])
        ip = {**body["floatingip"], "id": "fip-1", "floating_ip_address": "127.0.0.1"}
        self.floating_ips[ip["id"]] = ip
        self.created.append("floating_ip fip-1")
        context.status_code = 201
        return {"floatingip": ip}

    def _delete(self, kind: str, key: str, store: dict[str, Any], context: Any) -> Any:
        store.pop(key, None)
        self.deleted.append(f"{kind} {key}")
        context.status_code = 204
        return None
