"""The roles imagekit builds: the one registry every other module reads."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from imagekit.errors import UserError

# The checkout holds the elements and suites next to the package (editable install).
CHECKOUT = Path(__file__).resolve().parent.parent
ELEMENTS_DIR = CHECKOUT / "elements"
SUITES_DIR = CHECKOUT / "tests" / "infra"
TEMPLATES_DIR = CHECKOUT / "cloud-init"
BASE_ENVIRONMENT = ELEMENTS_DIR / "imagekit-base" / "environment.d" / "10-imagekit-base.bash"


def element_default(name: str) -> str:
    """A DIB_* setting's default, as imagekit-base's environment.d sets it for every build
    (`export NAME=${NAME:-"VALUE"}`): the element is the one place it is written."""
    pattern = rf'^export {name}=\${{{name}:-"?([^"}}]*)"?}}$'
    match = re.search(pattern, BASE_ENVIRONMENT.read_text(), re.M)
    if not match:
        raise LookupError(f"{BASE_ENVIRONMENT} sets no default for {name}")
    return match.group(1)


def cloud_init_datasources() -> list[str]:
    """The datasources a build bakes now: DIB_CLOUD_INIT_DATASOURCES as DIB will read it
    (the environment, else imagekit-base's default)."""
    name = "DIB_CLOUD_INIT_DATASOURCES"
    value = os.environ.get(name) or element_default(name)
    return [d.strip() for d in value.split(",") if d.strip()]


@dataclass(frozen=True)
class Role:
    """A role: its DIB element, its testinfra suite, its user-data template and example.

    The role's user-data variables are `imagekit.userdata.values.ROLE_VALUES[name]`
    (a model per role, checked against this registry there).
    """

    name: str
    summary: str

    @property
    def element(self) -> str:
        return role_element(self.name)

    @property
    def suite(self) -> Path:
        return SUITES_DIR / f"test_{self.name}.py"

    @property
    def template(self) -> Path:
        return TEMPLATES_DIR / f"{self.name}.yaml.j2"

    @property
    def example_values(self) -> Path:
        return TEMPLATES_DIR / "examples" / f"{self.name}.yaml"


REGISTRY: tuple[Role, ...] = (
    Role("lb", "load balancer: HAProxy with TLS, gateway and NAT of the private network"),
    Role("web", "web server: Nginx + PHP-FPM"),
    Role("dns", "name server of the private network: Unbound"),
    Role("db", "database server: MariaDB"),
)
ROLES: tuple[str, ...] = tuple(role.name for role in REGISTRY)
# How the CLI names them in its help.
ROLES_HELP = f"{', '.join(ROLES)} or all"


def get_role(name: str) -> Role:
    for role in REGISTRY:
        if role.name == name:
            return role
    raise UserError(f"unknown role '{name}': choose from {', '.join(ROLES)}")


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
