import hashlib
import json
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from imagekit import sbom
from imagekit.manifest import ImageFile, Manifest, Package, Source
from imagekit.store import Build
from tests.unit.manifests import make_manifest

PACKAGES = [
    Package(
        name="libssl3",
        version="3.0.17-1~deb12u2",
        arch="amd64",
        source="openssl",
        source_version="3.0.17-1~deb12u2",
        suite="bookworm-security",
    ),
    Package(
        name="bash",
        version="5.2.15-2+b8",
        arch="amd64",
        source="bash",
        source_version="5.2.15-2",
        suite="bookworm",
    ),
    Package(name="nginx-light", version="1.22.1-9", arch="amd64", source="nginx", suite="bookworm"),
]


def built_manifest() -> Manifest:
    return make_manifest(
        builder="diskimage-builder",
        source=Source(commit="0123abc", dirty=True),
        elements=["debian-minimal", "imagekit-web"],
        image=ImageFile(
            file="web.qcow2", format="qcow2", size_bytes=1, virtual_size_bytes=2, sha256="ab" * 32
        ),
        packages=PACKAGES,
    )


def test_the_sbom_is_valid_cyclonedx_and_lists_every_package(tmp_path: Path) -> None:
    build = Build("web", tmp_path)
    manifest = built_manifest()
    digest = sbom.write(build, manifest)
    text = build.sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    data = json.loads(text)
    main = data["metadata"]["component"]
    assert (main["name"], main["version"]) == ("imagekit-web", "20261125T040000Z")
    assert main["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    provenance = {p["name"]: p["value"] for p in main["properties"]}
    assert provenance["imagekit:git-commit"] == "0123abc"
    assert provenance["imagekit:git-dirty"] == "true"
    assert provenance["imagekit:suites"] == "bookworm bookworm-security"
    assert provenance["imagekit:builder"] == "diskimage-builder 3.43.0"
    assert provenance["imagekit:elements"] == "debian-minimal imagekit-web"
    assert provenance["imagekit:distribution"] == "debian bookworm"
    purls = {c["name"]: c["purl"] for c in data["components"]}
    tail = "?arch=amd64&distro=bookworm&upstream="
    assert purls == {
        "libssl3": f"pkg:deb/debian/libssl3@3.0.17-1~deb12u2{tail}openssl",
        "bash": f"pkg:deb/debian/bash@5.2.15-2%2Bb8{tail}bash%405.2.15-2",
        "nginx-light": f"pkg:deb/debian/nginx-light@1.22.1-9{tail}nginx",
    }
    libssl3 = next(c for c in data["components"] if c["name"] == "libssl3")
    assert {"name": "imagekit:suite", "value": "bookworm-security"} in libssl3["properties"]
    (deps,) = [d for d in data["dependencies"] if d["ref"] == main["bom-ref"]]
    assert len(deps["dependsOn"]) == 3
