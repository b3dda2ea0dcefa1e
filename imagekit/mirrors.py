"""Package mirrors, read from the builder host's own apt sources by default."""

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from imagekit.errors import UserError

# Schemes apt reads, and characters that are safe unquoted: mirror URLs reach
# `sh -c` inside DIB, so no whitespace, quotes, ; | & $ ` ( ) < > * ? # [ ] \\.
_MIRROR_URL = re.compile(r"(https?|file)://[A-Za-z0-9._~:/@%+,=-]+")


def check_mirror(url: str) -> str:
    """A build mirror: an http, https or file URL without shell metacharacters."""
    if not _MIRROR_URL.fullmatch(url):
        raise ValueError(
            f"{url!r} is not an http://, https:// or file:// URL of plain characters "
            "(no spaces, quotes or shell characters)"
        )
    return url


def check_image_mirror(url: str) -> str:
    """An apt source baked into images: reachable from any instance, holding no secret."""
    check_mirror(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        raise ValueError(f"{url!r}: a file:// path of the builder host means nothing in an image")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r}: credentials (user:password@) would be baked into the image")
    return url


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    origin: str = ""  # the file it came from


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every binary ("deb") source of the host, one-line and deb822 formats."""
    sources: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in files:
        if path.is_file():
            sources += _one_line_sources(path.read_text(errors="replace"), str(path))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        sources += _deb822_sources(path.read_text(errors="replace"), str(path))
    return sources


def _one_line_sources(text: str, origin: str) -> list[AptSource]:
    found = []
    for line in text.splitlines():
        # Drop comments and "[arch=... signed-by=...]" options.
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            found.append(AptSource(words[1].rstrip("/"), (words[2],), origin))
    return found


def _deb822_sources(text: str, origin: str) -> list[AptSource]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                suites = tuple(fields.get("suites", "").split())
                found.append(AptSource(uri.rstrip("/"), suites, origin))
    return found


def host_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    if not os_release.is_file():
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([\w-]+)", os_release.read_text(), re.M)
    return match.group(1) if match else None


def host_debian_mirrors(
    etc_apt: Path = Path("/etc/apt"), os_release: Path = Path("/etc/os-release")
) -> tuple[str | None, str | None]:
    """(main, security) mirror URIs that the host itself uses for Debian."""
    codename = host_codename(os_release)
    if codename is None:
        return None, None
    main = security = None
    for source in read_apt_sources(etc_apt):
        if security is None and f"{codename}-security" in source.suites:
            security = _checked(source)
        elif main is None and codename in source.suites:
            main = _checked(source)
    return main, security


def _checked(source: AptSource) -> str:
    try:
        return check_mirror(source.uri)
    except ValueError as err:
        raise UserError(f"{source.origin}: mirror {err}; set mirrors: in the config") from None
