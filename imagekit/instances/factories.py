"""How `imagekit test` gets an instance for a target: a local qemu VM (the default)
or a server on a cloud, booted with the role's example user data."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagekit import runs
from imagekit.clouds import connect
from imagekit.config import Config
from imagekit.errors import UserError
from imagekit.host import vm_cpus
from imagekit.instances import Instance
from imagekit.instances.openstack import OpenStackInstance, ServerSettings
from imagekit.instances.qemu import QemuInstance
from imagekit.manifest import Manifest
from imagekit.publishing.attributes import image_name
from imagekit.userdata import example_values, render_user_data
from imagekit.userdata.values import Common


@dataclass(frozen=True)
class Target:
    """What to test: an image file, and the build it belongs to (if any)."""

    role: str
    image: Path
    build_dir: Path | None

    @property
    def report_dir(self) -> Path:
        return self.build_dir or self.image.parent

    @property
    def report_prefix(self) -> str:
        return "test" if self.build_dir else f"{self.image.name}.test"


def login_user(config: Config, target: Target) -> str:
    """Who the instance lets in: the admin user the build baked (the config's only for a
    bare --image), so that a config edited since the build still tests it."""
    return Manifest.read(target.build_dir).admin_user if target.build_dir else config.admin_user


InstanceFactory = Callable[[Target, Path], Instance]
# A cloud boots published builds only (the CLI says so before it contacts the cloud).
LOCAL_IMAGE_ON_CLOUD = "--image is a local file: with --cloud, test a build (--build ID)"


def instance_values(role: str, private_nic_by_cloud: bool = False) -> Common:
    """What every test instance boots with, whatever the backend: the role's example values.

    private_nic_by_cloud: the cloud's network config sets the private address
    (a port with a fixed IP) on a NIC named as the cloud's hardware has it, so the
    user data does not.
    """
    values = example_values(role)
    if private_nic_by_cloud:
        values = values.model_copy(update={"configure_private_interface": False})
    return values


def instance_user_data(config: Config, role: str, private_nic_by_cloud: bool = False) -> str:
    return render_user_data(role, instance_values(role, private_nic_by_cloud), config.cache_dir)


def qemu_instances(
    config: Config, prefix: str = "imagekit-test", keep: bool = False, cpus: int | None = None
) -> InstanceFactory:
    """The default backend: a local qemu VM per target, its console log beside the report.

    Unless kept, the VM dies with us and is recorded in our run (if one was
    started: imagekit.runs), so that the next command removes it if we die.
    """

    def make(target: Target, console: Path) -> Instance:
        return QemuInstance(
            target.image,
            login_user(config, target),
            f"{prefix}-{target.role}",
            instance_user_data(config, target.role),
            cpus=cpus or vm_cpus(),
            console_log=console,
            stop_with_us=not keep,
        )

    return make


def published_image(config: Config, cloud: str, build_dir: Path) -> str:
    """The build's image in that cloud: the id its publication recorded, else publish's name."""
    manifest = Manifest.read(build_dir)
    publication = manifest.publication(cloud)
    return publication.image_id if publication else image_name(config, manifest)


def openstack_instances(config: Config, cloud: str, keep: bool = False) -> InstanceFactory:
    """A server per target on the cloud, booted from the build's published Glance image."""
    if config.openstack is None:
        raise UserError(f"{config.source}: openstack: section missing (needed by --cloud)")
    if config.openstack.private_network is None:
        raise UserError(
            f"{config.source}: openstack.private_network missing (test servers need a NIC "
            "on the private network, whose address the role suites check)"
        )
    conn = connect(cloud, authenticate=True)
    settings = ServerSettings(
        **config.openstack.model_dump(exclude={"apt_proxy", "outside_namespace"})
    )

    def make(target: Target, console: Path) -> Instance:
        if target.build_dir is None:
            raise UserError(LOCAL_IMAGE_ON_CLOUD)
        # Tagged with our run's id: the next command deletes what we leave if we die.
        run = runs.current()
        if run is not None and not keep:
            run.note_cloud(cloud, "servers")
        return OpenStackInstance(
            conn,
            published_image(config, cloud, target.build_dir),
            login_user(config, target),
            f"imagekit-test-{target.role}" + (f"-{run.id}" if run else ""),
            settings,
            instance_user_data(config, target.role, private_nic_by_cloud=True),
            run_id=run.id if run else None,
            private_address=str(example_values(target.role).private_address.ip),
            scratch_dir=run.directory if run is not None and not keep else None,
        )

    return make
