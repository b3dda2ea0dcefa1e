"""imagekit.yaml: one validated model of everything a build needs."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from imagekit.errors import UserError
from imagekit.mirrors import check_image_mirror, check_mirror, host_debian_mirrors
from imagekit.roles import CHECKOUT, ROLES
from imagekit.sshkeys import KEY_TYPES, PublicKey, parse_public_keys
from imagekit.yamlfile import load_yaml

DEFAULT_CONFIG = CHECKOUT / "imagekit.yaml"

PackageName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")]


def _known_role(name: str) -> str:
    if name not in ROLES:
        raise ValueError(f"unknown role '{name}' ({', '.join(ROLES)})")
    return name


RoleName = Annotated[str, AfterValidator(_known_role)]


@dataclass(frozen=True)
class KeySource:
    """One `ssh_keys` entry: an inline key or a file of keys, already parsed."""

    origin: str
    keys: tuple[PublicKey, ...]


def _load_key_source(value: Any, info: ValidationInfo) -> KeySource:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a public key ('ssh-ed25519 AAAA...') or a path to a .pub file")
    text = value.strip()
    origin = "inline key"
    inline = "\n" in text or "PRIVATE KEY" in text or text.split(None, 1)[0] in KEY_TYPES
    if not inline:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (info.context or {}).get("base_dir", Path.cwd()) / path
        if not path.is_file():
            raise ValueError(f"key file not found: {path}")
        origin, text = str(path), path.read_text(errors="replace")
    try:
        return KeySource(origin, tuple(parse_public_keys(text)))
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


MirrorUrl = Annotated[str, AfterValidator(check_mirror)]
ImageMirrorUrl = Annotated[str, AfterValidator(check_image_mirror)]


class Mirrors(StrictModel):
    """Where builds fetch packages (unset: what the host uses), and what images keep."""

    main: MirrorUrl | None = None
    security: MirrorUrl | None = None
    # The image's own /etc/apt/sources.list: never the build's (maybe private) mirrors.
    image_main: ImageMirrorUrl = "http://deb.debian.org/debian"
    image_security: ImageMirrorUrl = "http://security.debian.org/debian-security"


class RoleSettings(StrictModel):
    packages: list[PackageName] = []


class OpenStackSettings(StrictModel):
    """Servers on a cloud: throwaway test servers (`imagekit test --cloud NAME`) and
    Packer's build servers (`imagekit build ROLE --with packer --cloud NAME`)."""

    flavor: str
    network: str
    floating_ip_network: str | None = None
    security_groups: list[str] = []
    # The second NIC's network: the private network whose addresses the role suites check
    # (each server gets a port with its role's example private address).
    private_network: str | None = None
    # ssh's ProxyCommand (%h, %p) when the builder cannot route to the servers' addresses
    # (a bastion; the dev cloud's namespace: ip netns exec imagekit-devcloud nc %h %p).
    ssh_proxy_command: str | None = None
    # The network namespace this host reaches the floating IPs from (the dev cloud's:
    # imagekit-devcloud); `site test --cloud` runs its suite there, as the outside world.
    outside_namespace: str | None = None
    # An HTTP proxy for apt in build servers that reach no mirror themselves (the dev cloud's).
    apt_proxy: ImageMirrorUrl | None = None


class SigningSettings(StrictModel):
    """Sign published images as Glance verifies them (img_signature*): the private key
    stays on this host (never uploaded, never logged); the certificate goes to the
    cloud's key manager (Barbican)."""

    key: Path  # PEM private key, RSA (signed with RSA-PSS) or EC P-384/P-521
    certificate: Path  # PEM X.509 certificate of that key

    @field_validator("key", "certificate")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        base: Path = (info.context or {}).get("base_dir", Path.cwd())
        path = (base / value.expanduser()).resolve()
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        return path


class PublishSettings(StrictModel):
    """How builds reach Glance and who they are shared with."""

    name_format: str = Field(default="imagekit-{role}-{build_id}", pattern=r"\{build_id\}")
    members: list[Annotated[str, Field(pattern=r"^\S(.*\S)?$")]] = []
    identity_cloud: str | None = None
    keep: int = Field(default=3, ge=1)
    delete_after_days: int = Field(default=30, ge=1)
    min_ram_mb: int = Field(default=512, ge=64)
    signing: SigningSettings | None = None

    @field_validator("name_format")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(role="web", build_id="20260101T000000Z")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"only {{role}} and {{build_id}} may be used ({err})") from None
        return value


class Config(StrictModel):
    distribution: Literal["debian"] = "debian"
    release: str = Field(default="bookworm", pattern=r"^[a-z]+$")
    architecture: Literal["amd64"] = "amd64"
    mirrors: Mirrors = Mirrors()
    admin_user: str = Field(default="admin", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_keys: list[Annotated[KeySource, BeforeValidator(_load_key_source)]] = Field(min_length=1)
    packages: list[PackageName] = []
    roles: dict[RoleName, RoleSettings] = {}
    openstack: OpenStackSettings | None = None
    publish: PublishSettings = PublishSettings()
    # The qcow2's compression: zlib opens on any cloud; zstd is smaller and faster to
    # read but needs QEMU >= 5.1 wherever the image is opened (the cloud's compute hosts).
    image_compression: Literal["zlib", "zstd"] = "zlib"
    output_dir: Path = Field(default=Path("images"), validate_default=True)
    cache_dir: Path = Field(default=Path("cache"), validate_default=True)
    source: Path = Field(default=DEFAULT_CONFIG, exclude=True)

    @field_validator("admin_user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        if value == "root":
            raise ValueError("the admin user may not be root (root logins are refused)")
        return value

    @field_validator("output_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path, info: ValidationInfo) -> Path:
        base: Path = (info.context or {}).get("base_dir", Path.cwd())
        path = (base / value.expanduser()).resolve()
        # Made on first use: whatever is on the way there must be a directory.
        for part in (path, *path.parents):
            if part.exists() and not part.is_dir():
                raise ValueError(f"{part} is not a directory")
        return path

    @property
    def public_keys(self) -> list[PublicKey]:
        return [key for source in self.ssh_keys for key in source.keys]

    def role_packages(self, role: str) -> list[str]:
        """The shared packages, then the role's own, without repeats."""
        extra = self.roles[role].packages if role in self.roles else []
        return list(dict.fromkeys([*self.packages, *extra]))

    def resolved_mirrors(self) -> tuple[str, str]:
        """(main, security): configured, or else read from the host's apt sources."""
        host_main, host_security = host_debian_mirrors()
        main = self.mirrors.main or host_main
        security = self.mirrors.security or host_security
        if main is None or security is None:
            missing = "mirrors.main" if main is None else "mirrors.security"
            raise UserError(
                f"{self.source}: {missing}: not set and not found in the host's apt sources "
                "(/etc/apt/sources.list*); set it in the config"
            )
        return main, security


def find_config(given: Path | None = None) -> Path:
    """--config, else $IMAGEKIT_CONFIG, else ./imagekit.yaml, else the checkout's."""
    if given is not None:
        return given
    if named := os.environ.get("IMAGEKIT_CONFIG"):
        return Path(named)
    here = Path.cwd() / "imagekit.yaml"
    return here if here.is_file() else DEFAULT_CONFIG


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file; any problem is a one-line UserError."""
    path = find_config(path).expanduser()
    data = load_yaml(path, "config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of keys to values")
    data = {**data, "source": path.resolve()}
    try:
        return Config.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as err:
        raise UserError(f"{path}: {_first_problem(err)}") from None


def _first_problem(err: ValidationError) -> str:
    problem = err.errors()[0]
    where = ""
    for part in problem["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    message = {
        "extra_forbidden": "unknown key",
        "missing": "required key is missing",
    }.get(problem["type"], problem["msg"].removeprefix("Value error, "))
    more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
