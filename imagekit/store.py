"""Where builds live (OUTPUT/ROLE/BUILD_ID/), and the one place that finds them.

A `Build` owns a build's file names; its manifest is the record every stage
reads and updates (`Manifest.update`: locked, atomic). A `Store` answers "the
newest build of ROLE [that passed its tests / its site test / is published
to CLOUD / is older than BUILD]" and "build ID of ROLE", for every
command and the pipeline.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagekit import progress
from imagekit.errors import UserError
from imagekit.manifest import MANIFEST, Manifest, check_build_id

# Corrupt manifests already warned about.
_warned: set[Path] = set()


@dataclass(frozen=True)
class Build:
    role: str
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def image(self) -> Path:
        return self.dir / f"{self.role}.qcow2"

    @property
    def checksum_file(self) -> Path:
        return self.dir / f"{self.role}.qcow2.sha256"

    @property
    def sbom(self) -> Path:
        return self.dir / "sbom.cdx.json"

    @property
    def log(self) -> Path:
        return self.dir / "build.log"

    @property
    def manifest_file(self) -> Path:
        return self.dir / MANIFEST

    def report(self, prefix: str = "test") -> Path:
        """A suite's JUnit report beside the build."""
        return self.dir / f"{prefix}-report.xml"

    def console_log(self, prefix: str = "test") -> Path:
        return self.dir / f"{prefix}-console.log"

    def manifest(self) -> Manifest:
        return Manifest.read(self.dir)

    def update(self, change: Callable[[Manifest], None]) -> Manifest:
        return Manifest.update(self.dir, change)


class Store:
    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir

    def role_dir(self, role: str) -> Path:
        return self.output_dir / role

    def builds(self, role: str) -> list[Build]:
        """Every build of a role that has a manifest, oldest first."""
        role_dir = self.role_dir(role)
        if not role_dir.is_dir():
            return []
        found = sorted(p for p in role_dir.iterdir() if (p / MANIFEST).is_file())
        return [Build(role, path) for path in found]

    def readable(self, role: str) -> list[tuple[Build, Manifest]]:
        """(build, manifest) of each build whose manifest reads; a corrupt one blocks nothing."""
        found = []
        for build in self.builds(role):
            try:
                found.append((build, build.manifest()))
            except UserError as err:
                # Said once per command: the newest readable build is used instead.
                if build.dir not in _warned:
                    _warned.add(build.dir)
                    progress.say(f"imagekit: warning: {err}; skipped", warning=True)
        return found

    def newest(
        self,
        role: str,
        tested: bool = False,
        site_tested: bool = False,
        published_to: str | None = None,
        before: str | None = None,
    ) -> Build | None:
        """The newest build of a role that finished with an image (and passed its suite,
        its site test; was uploaded to a cloud; is older than a build id);
        never a corrupt one."""
        for build, manifest in reversed(self.readable(role)):
            if manifest.status != "built" or (before is not None and build.id >= before):
                continue
            if (tested and not manifest.tested) or (site_tested and not manifest.site_tested):
                continue
            if published_to is not None and manifest.publication(published_to) is None:
                continue
            return build
        return None

    def get(self, role: str, build_id: str, option: str = "--build ") -> Build:
        """A finished build named on the command line; one line if there is none."""
        build = Build(role, self.role_dir(role) / check_build_id(build_id, option))
        given = f"{option}{build_id}"
        if not build.manifest_file.is_file():
            raise UserError(f"{given}: no finished build of '{role}' in {self.role_dir(role)}")
        if build.manifest().status != "built":
            raise UserError(f"{given}: that build of '{role}' did not finish")
        return build

    def newest_or_fail(self, role: str, tested: bool = False) -> Build:
        """The newest (tested) build, or a line that says how to make one."""
        build = self.newest(role, tested=tested)
        if build is not None:
            return build
        if tested and self.newest(role) is not None:
            raise UserError(
                f"no tested build of '{role}' in {self.role_dir(role)} (run: imagekit test {role})"
            )
        raise UserError(
            f"no finished build of '{role}' in {self.role_dir(role)}; run: imagekit build {role}"
        )


@dataclass(frozen=True)
class BuildSummary:
    """One build as `imagekit builds` lists it (and its JSON form)."""

    role: str
    build_id: str
    status: str
    builder: str
    created: str
    size_bytes: int | None
    tested: bool
    site_tested: bool
    published: list[str]


def describe(build: Build, manifest: Manifest) -> BuildSummary:
    return BuildSummary(
        role=build.role,
        build_id=build.id,
        status=manifest.status,
        builder=manifest.builder,
        created=manifest.created,
        size_bytes=manifest.image.size_bytes if manifest.image else None,
        tested=manifest.tested,
        site_tested=manifest.site_tested,
        published=sorted({p.cloud for p in manifest.publications if p.complete}),
    )
