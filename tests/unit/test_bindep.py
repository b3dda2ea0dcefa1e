"""bindep.txt (the OpenStack convention for host packages) says what the code installs."""

from imagekit import host
from imagekit.builders.packer import PACKER_REQUIREMENTS
from imagekit.devcloud.compute import APT_PACKAGES
from imagekit.roles import CHECKOUT


def test_bindep_lists_the_packages_the_code_installs_per_profile() -> None:
    listed: dict[str, set[str]] = {}
    for line in (CHECKOUT / "bindep.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, selectors = line.split(" ", 1)
            assert selectors.startswith("[platform:dpkg ") and selectors.endswith("]"), line
            listed[package] = set(selectors[len("[platform:dpkg ") : -1].split())
    wanted: dict[str, set[str]] = {}
    for profile, requirements in (
        ("build", host.BUILD_REQUIREMENTS),
        ("test", host.TEST_REQUIREMENTS),
        ("site", host.SITE_REQUIREMENTS),
        ("packer", PACKER_REQUIREMENTS),
    ):
        for requirement in requirements:
            wanted.setdefault(requirement.package, set()).add(profile)
    for package in APT_PACKAGES:
        wanted.setdefault(package, set()).add("devcloud-compute")
    assert listed == wanted
