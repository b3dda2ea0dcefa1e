"""Connections to clouds from clouds.yaml (openstacksdk conventions: OS_CLOUD, search path)."""

import openstack
from openstack.connection import Connection
from openstack.exceptions import ConfigException
from openstack.identity.v3._proxy import Proxy as KeystoneV3
from openstack.image.v2._proxy import Proxy as GlanceV2

from imagekit.errors import ImagekitError, UserError


def connect(cloud: str) -> Connection:
    """A connection to a clouds.yaml entry; an unknown cloud is bad input."""
    try:
        return openstack.connect(cloud=cloud)
    except ConfigException as err:
        raise UserError(f"--cloud {cloud}: {str(err).splitlines()[0]}") from None


def glance(conn: Connection) -> GlanceV2:
    """The cloud's image service; imagekit speaks Glance v2 only."""
    proxy = conn.image
    if not isinstance(proxy, GlanceV2):
        raise ImagekitError("the cloud's image service does not offer the Glance v2 API")
    return proxy


def keystone(conn: Connection) -> KeystoneV3:
    proxy = conn.identity
    if not isinstance(proxy, KeystoneV3):
        raise ImagekitError("the cloud's identity service does not offer the Keystone v3 API")
    return proxy
