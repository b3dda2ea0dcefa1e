"""The build's SBOM: a CycloneDX document beside the image, from what the build recorded.

Every installed Debian package is a component (version, architecture, source
package, archive suite, a pkg:deb purl); the image is the main component, with
its sha256 and the build's provenance (commit, builder, elements, suites).
"""

import hashlib
from datetime import datetime
from importlib import metadata

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from imagekit.manifest import Manifest, Package
from imagekit.store import Build

PREFIX = "imagekit:"


def package_url(package: Package, release: str) -> PackageURL:
    qualifiers = {"arch": package.arch, "distro": release}
    same_version = package.source_version in ("", package.version)
    if package.source and not (package.source == package.name and same_version):
        qualifiers["upstream"] = (
            package.source if same_version else f"{package.source}@{package.source_version}"
        )
    return PackageURL(
        type="deb",
        namespace="debian",
        name=package.name,
        version=package.version,
        qualifiers=qualifiers,
    )


def _properties(values: dict[str, str]) -> list[Property]:
    return [Property(name=PREFIX + name, value=value) for name, value in values.items() if value]


def document(manifest: Manifest) -> str:
    """The SBOM of a built image, as CycloneDX 1.6 JSON."""
    if manifest.image is None:
        raise ValueError(f"build {manifest.build_id} has no image to describe")
    suites = sorted({p.suite for p in manifest.packages if p.suite})
    image = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=f"imagekit-{manifest.role}",
        version=manifest.build_id,
        bom_ref=f"image:{manifest.role}:{manifest.build_id}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=manifest.image.sha256)],
        properties=_properties(
            {
                "role": manifest.role,
                "file": manifest.image.file,
                "format": manifest.image.format,
                "git-commit": manifest.source.commit or "",
                "git-dirty": str(manifest.source.dirty).lower(),
                "builder": f"{manifest.builder} {manifest.builder_version}",
                "elements": " ".join(manifest.elements),
                "distribution": f"{manifest.distribution} {manifest.release}",
                "suites": " ".join(suites),
            }
        ),
    )
    packages = [
        Component(
            type=ComponentType.LIBRARY,
            name=package.name,
            version=package.version,
            bom_ref=f"deb:{package.name}:{package.arch}",
            purl=package_url(package, manifest.release),
            properties=_properties(
                {
                    "arch": package.arch,
                    "source-package": package.source,
                    "source-version": package.source_version,
                    "suite": package.suite,
                }
            ),
        )
        for package in manifest.packages
    ]
    bom = Bom(
        components=packages,
        metadata=BomMetaData(
            component=image,
            timestamp=datetime.fromisoformat(manifest.created),
            tools=ToolRepository(
                components=[
                    Component(
                        type=ComponentType.APPLICATION,
                        name="imagekit",
                        version=metadata.version("imagekit"),
                    )
                ]
            ),
        ),
    )
    # What Bom.register_dependency records (the image depends on every package, each
    # package on nothing), without its search of the whole set per package: O(n^2),
    # 0.7 s of a 1 s document for 300 packages.
    bom.dependencies.update(
        [
            Dependency(
                ref=image.bom_ref, dependencies=[Dependency(ref=p.bom_ref) for p in packages]
            ),
            *(Dependency(ref=p.bom_ref) for p in packages),
        ]
    )
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def write(build: Build, manifest: Manifest) -> str:
    """Write sbom.cdx.json beside the image; returns its sha256."""
    text = document(manifest)
    build.sbom.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()
