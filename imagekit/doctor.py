"""`imagekit doctor`: what the builder host has, lacks, and how builds will run."""

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import openstack
from openstack.config.loader import OpenStackConfig
from openstack.exceptions import ConfigException

from imagekit import host, runs
from imagekit.builders.packer import PACKER_REQUIREMENTS
from imagekit.clouds import CLOUD_ERRORS, describe
from imagekit.config import load_config
from imagekit.errors import ImagekitError, one_line


def _once(requirements: tuple[host.Requirement, ...]) -> tuple[host.Requirement, ...]:
    """Every tool once (builds, tests and Packer share some), in order, first reason first."""
    by_command: dict[str, host.Requirement] = {}
    for requirement in requirements:
        by_command.setdefault(requirement.command, requirement)
    return tuple(by_command.values())


ALL_REQUIREMENTS = _once(host.BUILD_REQUIREMENTS + host.SITE_REQUIREMENTS + PACKER_REQUIREMENTS)


@dataclass(frozen=True)
class Check:
    status: str  # "ok", "missing", "info", "warning" or "error"
    name: str
    detail: str


def checks(config_path: Path | None = None) -> list[Check]:
    found: list[Check] = []
    for req in ALL_REQUIREMENTS:
        path = host.which(req.command)
        found.append(
            Check("ok", req.command, path)
            if path
            else Check("missing", req.command, f"apt package {req.package}: {req.why}")
        )
    if host.has_device_mapper():
        found.append(Check("ok", "device-mapper", "kernel support present"))
    else:
        found.append(
            Check("info", "device-mapper", f"absent: builds use partx stand-ins ({host.SHIM_DIR})")
        )
    if host.kvm_usable():
        found.append(Check("ok", "kvm", "throwaway instances use KVM"))
    else:
        found.append(Check("info", "kvm", "not usable here: throwaway instances use TCG (slower)"))
    try:
        found.append(Check("ok", "diskimage-builder", version("diskimage-builder")))
    except PackageNotFoundError:
        found.append(Check("missing", "diskimage-builder", "pip install -e . in the checkout"))
    try:
        config = load_config(config_path)
        main, security = config.resolved_mirrors()
        found.append(Check("ok", "config", f"{config.source}"))
        found.append(Check("ok", "mirrors", f"main {main}, security {security}"))
        for name, need_gib in host.DISK_NEEDS_GIB.items():
            directory: Path = getattr(config, name)
            free_gib = host.free_gib(directory)
            found.append(
                Check(
                    "ok" if free_gib >= need_gib else "error",
                    f"disk {name}",
                    f"{free_gib:.1f} GiB free for {directory} (a pipeline needs {need_gib})",
                )
            )
        dead = runs.dead_runs(config.cache_dir)
        if dead:
            found.append(
                Check(
                    "error",
                    "leftovers",
                    f"{len(dead)} imagekit runs died without cleaning up "
                    f"({', '.join(dead)}): run 'imagekit cleanup'",
                )
            )
        else:
            found.append(Check("ok", "leftovers", "no crashed runs to clean up"))
    except ImagekitError as err:
        found.append(Check("error", "config", str(err)))
    return found + cloud_checks()


def cloud_checks(timeout: float = 10) -> list[Check]:
    """Can each clouds.yaml entry authenticate? A warning, not an error: a cloud that is
    down today must not stop builds (nor `tox`, which runs `doctor --fix` first)."""
    try:
        loader = OpenStackConfig()
        names = loader.get_cloud_names()
    except (ConfigException, OSError) as err:
        return [Check("warning", "clouds.yaml", f"unreadable: {one_line(err)}")]
    if loader.config_filename is None:  # the SDK then offers a "defaults" cloud: none
        return [Check("info", "clouds.yaml", "none found (publishing needs a cloud)")]
    found = [Check("ok", "clouds.yaml", str(loader.config_filename))]
    for name in names:
        try:
            with openstack.connect(cloud=name, api_timeout=timeout) as conn:
                conn.authorize()
            found.append(Check("ok", f"cloud {name}", "authenticates"))
        except (*CLOUD_ERRORS, ConfigException) as err:
            found.append(Check("warning", f"cloud {name}", describe(err)))
    return found


def missing_packages(found: list[Check]) -> list[str]:
    by_command = {r.command: r.package for r in ALL_REQUIREMENTS}
    return sorted(
        {by_command[c.name] for c in found if c.status == "missing" and c.name in by_command}
    )
