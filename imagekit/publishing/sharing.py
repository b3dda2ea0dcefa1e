"""Image members: resolve the projects to share with, then share."""

import re

from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from imagekit.clouds import glance, keystone
from imagekit.errors import UserError

PROJECT_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_projects(identity: Connection, wanted: list[str]) -> dict[str, str]:
    """{given name or id: project id}; an unknown project is an error before any upload.

    A project member may not look other projects up (Keystone forbids listing
    them): then only ids are accepted, as given.
    """
    resolved: dict[str, str] = {}
    for given in dict.fromkeys(wanted):
        try:
            project = keystone(identity).find_project(given, ignore_missing=True)
        except os_exceptions.ForbiddenException:
            if PROJECT_ID.match(given):
                resolved[given] = given
                continue
            raise UserError(
                f"project '{given}': these credentials may not look projects up; "
                "give its id, or set publish.identity_cloud to a cloud that may"
            ) from None
        if project is None:
            raise UserError(f"unknown project '{given}'")
        resolved[given] = project.id
    return resolved


def share(conn: Connection, image_id: str, project_ids: list[str]) -> dict[str, str]:
    """Make the image shared and add missing members; returns {project id: status}."""
    if not project_ids:
        shared = glance(conn).get_image(image_id).visibility == "shared"
        return member_status(conn, image_id) if shared else {}
    glance(conn).update_image(image_id, visibility="shared")
    present = member_status(conn, image_id)
    for project_id in project_ids:
        if project_id not in present:
            glance(conn).add_member(image_id, member_id=project_id)
    return member_status(conn, image_id)


def member_status(conn: Connection, image_id: str) -> dict[str, str]:
    return {m.member_id: m.status for m in glance(conn).members(image_id)}


def accept(conn: Connection, image: str) -> tuple[str, str]:
    """As a member project: accept a shared image (id, or name among images shared with us)."""
    project_id = str(conn.current_project_id)
    image_id = image
    if not PROJECT_ID.match(image.replace("-", "")):
        matches = [
            i.id
            for i in glance(conn).images(visibility="shared", member_status="all")
            if i.name == image
        ]
        if len(matches) != 1:
            raise UserError(f"image '{image}': {len(matches)} shared images have that name")
        image_id = matches[0]
    try:
        member = glance(conn).update_member(project_id, image_id, status="accepted")
    except os_exceptions.NotFoundException:
        raise UserError(f"image '{image}' is not shared with project {project_id}") from None
    return image_id, member.status
