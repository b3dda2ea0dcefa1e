"""The roles imagekit builds and the DIB elements that make them."""

from pathlib import Path

from imagekit.errors import UserError

ROLES: tuple[str, ...] = ("lb", "web", "dns", "db")

# The checkout holds the elements next to the package (editable install).
CHECKOUT = Path(__file__).resolve().parent.parent
ELEMENTS_DIR = CHECKOUT / "elements"

# The distribution's own elements that every role image starts from.
DISTRO_ELEMENTS: dict[str, tuple[str, ...]] = {"debian": ("debian-minimal", "vm")}


def role_element(role: str) -> str:
    return f"imagekit-{role}"


def resolve_roles(names: list[str]) -> list[str]:
    """Turn CLI role names (or "all") into an ordered, de-duplicated list."""
    if not names:
        raise UserError("no role given: choose from " + ", ".join(ROLES) + " or all")
    wanted: list[str] = []
    for name in names:
        if name == "all":
            picked = list(ROLES)
        elif name in ROLES:
            picked = [name]
        else:
            raise UserError(f"unknown role '{name}': choose from {', '.join(ROLES)} or all")
        wanted += [r for r in picked if r not in wanted]
    return wanted
