"""Rotation: the newest images of a role stay visible, older ones are hidden, old ones deleted."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from openstack.connection import Connection

from imagekit.clouds import glance
from imagekit.publishing.attributes import role_tag


@dataclass
class RotationPlan:
    keep: list[str] = field(default_factory=list)
    unhide: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def role_images(conn: Connection, role: str) -> list[Any]:
    """This project's images of the role, hidden ones included, newest build first."""
    owner = conn.current_project_id
    seen = {}
    for hidden in (False, True):
        for image in glance(conn).images(tag=role_tag(role), owner=owner, is_hidden=hidden):
            seen[image.id] = image
    return sorted(
        seen.values(),
        key=lambda i: (i.properties or {}).get("imagekit_build_id") or i.created_at,
        reverse=True,
    )


def plan(
    images: list[Any], current: str, keep: int, delete_after_days: int, now: datetime
) -> RotationPlan:
    """images: newest first. The current image and the newest `keep` stay visible."""
    result = RotationPlan()
    cutoff = now - timedelta(days=delete_after_days)
    for rank, image in enumerate(images):
        created = datetime.fromisoformat(image.created_at.replace("Z", "+00:00"))
        if image.id == current or rank < keep:
            result.keep.append(image.id)
            if image.is_hidden:  # e.g. a newer one was deleted by hand
                result.unhide.append(image.id)
        elif created < cutoff:
            result.delete.append(image.id)
        elif not image.is_hidden:
            result.hide.append(image.id)
        else:
            result.keep.append(image.id)  # already hidden, not old enough to delete
    return result


def rotate(
    conn: Connection, role: str, current: str, keep: int, delete_after_days: int, dry_run: bool
) -> RotationPlan:
    images = role_images(conn, role)
    result = plan(images, current, keep, delete_after_days, datetime.now(UTC))
    if not dry_run:
        for image_id in result.unhide:
            glance(conn).update_image(image_id, is_hidden=False)
        for image_id in result.hide:
            glance(conn).update_image(image_id, is_hidden=True)
        for image_id in result.delete:
            glance(conn).delete_image(image_id, ignore_missing=True)
    return result
