"""Connections to clouds from clouds.yaml (openstacksdk conventions: OS_CLOUD, search path)."""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection
from openstack.exceptions import ConfigException

from imagekit.errors import ImagekitError, UserError

if TYPE_CHECKING:  # the SDK's proxy classes, for the type checker only (private modules)
    from openstack.identity.v3._proxy import Proxy as KeystoneV3
    from openstack.image.v2._proxy import Proxy as GlanceV2

TOOL_TAG = "imagekit"
# The property of an image that exists only during a build (Packer's snapshot).
INTERMEDIATE = "imagekit_intermediate"
# keystoneauth warns on stderr before failing; the failure itself says what matters.
logging.getLogger("keystoneauth").setLevel(logging.ERROR)
# What the SDK and keystoneauth raise (after their own retries) for a cloud's failure.
CLOUD_ERRORS = (ks_exceptions.ClientException, os_exceptions.SDKException)


# What the HTTP log must never show: secrets in request and response bodies (a server's
# user data holds the database password; Nova answers with adminPass). keystoneauth
# already replaces tokens in headers with their hash, and does not log the token request.
SECRET_FIELDS = re.compile(
    r'("(?:password|adminPass|user_data|secret|application_credential_secret|payload)"'
    r'\s*:\s*)"(?:[^"\\]|\\.)*"'
)


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = SECRET_FIELDS.sub(r'\1"***"', message), None
        return True


def log_http(stream: TextIO) -> logging.Handler:
    """--debug: openstacksdk's and keystoneauth's HTTP log (curl-like lines) to stream,
    with secrets in bodies replaced by ***; returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RedactSecrets())
    for name in ("keystoneauth", "openstack"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    return handler


def connect(cloud: str, authenticate: bool = False) -> Connection:
    """A connection to a clouds.yaml entry; an unknown cloud is bad input.

    authenticate: log in now, so that a wrong password or an unreachable
    Keystone is found before any work starts.
    """
    try:
        conn = openstack.connect(cloud=cloud)
    except ConfigException as err:
        raise UserError(f"--cloud {cloud}: {str(err).splitlines()[0]}") from None
    if authenticate:
        with cloud_errors(cloud, "authentication"):
            conn.authorize()
    return conn


def describe(err: BaseException) -> str:
    """One line for an error from a cloud: what kind, and its first line."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    # The SDK re-raises keystoneauth's errors as its own: the kind is in the chain.
    chain = [e for e in (err, err.__cause__, err.__context__) if e is not None]
    for cause in chain:
        status = getattr(cause, "status_code", None) or getattr(cause, "http_status", None)
        if isinstance(cause, ks_exceptions.Unauthorized) or status == 401:
            return f"refused the credentials: {first}"
        if status == 403:
            return f"forbidden: {first}"
        if isinstance(cause, ks_exceptions.ConnectionError):
            return f"unreachable: {first}"
        if status and status >= 500:
            return f"server error {status}: {first}"
    return first


@contextmanager
def cloud_errors(cloud: str, what: str) -> Iterator[None]:
    """Errors from the cloud become one line naming the cloud and what failed (exit 1)."""
    try:
        yield
    except CLOUD_ERRORS as err:
        raise ImagekitError(f"cloud '{cloud}': {what} failed: {describe(err)}") from err


def glance(conn: Connection) -> "GlanceV2":
    """The cloud's image service; imagekit speaks Glance v2 only (the proxy's public
    `api_version` tells)."""
    proxy = conn.image
    if proxy.api_version != "2":
        raise ImagekitError("the cloud's image service does not offer the Glance v2 API")
    return proxy


def keystone(conn: Connection) -> "KeystoneV3":
    proxy = conn.identity
    if proxy.api_version != "3":
        raise ImagekitError("the cloud's identity service does not offer the Keystone v3 API")
    return proxy


def run_description(run_id: str) -> str:
    """What marks a throwaway resource of a run (floating IP description, server metadata)."""
    return f"imagekit run {run_id}"


def delete_run_leftovers(cloud: str, run_id: str, kinds: list[str]) -> list[str]:
    """Delete what a dead run left in the cloud, found by its run id and checked before.

    Images: unfinished uploads (not active; an active one is verified or replaced
    by the next publish) and intermediates in any state (Packer's snapshot, which a
    build downloads and deletes). Servers, keypairs, floating IPs, ports: all of
    them, and networks (throwaway by definition).
    """
    conn = connect(cloud)
    done: list[str] = []
    with cloud_errors(cloud, f"clean-up of run {run_id}"):
        if "images" in kinds:
            for image in glance(conn).images(owner=conn.current_project_id, tag=TOOL_TAG):
                properties = image.properties or {}
                ours = properties.get("imagekit_run") == run_id
                if ours and (image.status != "active" or INTERMEDIATE in properties):
                    glance(conn).delete_image(image, ignore_missing=True)
                    done.append(f"deleted {image.status} image {image.id} in '{cloud}'")
        if "servers" in kinds:
            for server in conn.compute.servers(name=run_id):
                if (server.metadata or {}).get("imagekit_run") == run_id:
                    conn.compute.delete_server(server, ignore_missing=True)
                    conn.compute.wait_for_delete(server, wait=300)
                    done.append(f"deleted server {server.id} in '{cloud}'")
            for keypair in conn.compute.keypairs():
                if keypair.name.startswith("imagekit-") and run_id in keypair.name:
                    conn.compute.delete_keypair(keypair, ignore_missing=True)
                    done.append(f"deleted keypair {keypair.name} in '{cloud}'")
            for ip in conn.network.ips(description=run_description(run_id)):
                conn.network.delete_ip(ip, ignore_missing=True)
                done.append(f"deleted floating IP {ip.floating_ip_address} in '{cloud}'")
            for port in conn.network.ports(description=run_description(run_id)):
                conn.network.delete_port(port, ignore_missing=True)
                done.append(f"deleted port {port.id} in '{cloud}'")
            for network in conn.network.networks(description=run_description(run_id)):
                conn.network.delete_network(network, ignore_missing=True)  # and its subnet
                done.append(f"deleted network {network.name} in '{cloud}'")
    return done
