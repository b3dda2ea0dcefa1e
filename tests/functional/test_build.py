"""`imagekit build` for real: the image, its manifest, what is (not) inside it."""

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from imagekit.builders import compress, dib
from imagekit.config import Config
from imagekit.manifest import MANIFEST, Manifest, describe_image, json_schema
from imagekit.roles import CHECKOUT, ROLES
from tests.functional.imagefs import apt_source_uris, mbr_partitions, mounted_root, read_head


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_the_qcow2_has_the_configured_compression(
    config: Config, tmp_path: Path, compression: str
) -> None:
    """What every builder's last step makes (Packer's compressed copy; DIB's own with the
    same qemu-img option): the same bytes, compressed as configured and recorded so."""
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as disk:
        disk.truncate(64 << 20)
        disk.seek(1 << 20)
        disk.write(b"imagekit " * (1 << 20))
    image = tmp_path / "disk.qcow2"
    compress(config.model_copy(update={"image_compression": compression}), raw, image)
    assert describe_image(image).compression == compression
    assert image.stat().st_size < 1 << 20  # 9 MiB of text, compressed
    same = subprocess.run(["qemu-img", "compare", str(raw), str(image)], capture_output=True)
    assert same.returncode == 0, same.stdout


def test_manifest_matches_the_image(web_build: Path, config: Config, tmp_path: Path) -> None:
    manifest = Manifest.read(web_build)
    jsonschema.validate(json.loads((web_build / MANIFEST).read_text()), json_schema())
    # What the suites read later: the build's own record, not the config of the day.
    assert manifest.authorized_keys == [key.line for key in config.public_keys]
    assert manifest.requested_packages == config.role_packages("web")
    assert manifest.status == "built"
    assert manifest.role == "web"
    assert manifest.build_id == web_build.name
    assert manifest.image is not None
    image = web_build / manifest.image.file

    sha256 = hashlib.sha256(image.read_bytes()).hexdigest()
    assert manifest.image.sha256 == sha256
    assert (web_build / "web.qcow2.sha256").read_text() == f"{sha256}  web.qcow2\n"
    assert manifest.image.size_bytes == image.stat().st_size

    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == manifest.image.format == "qcow2"
    assert info["virtual-size"] == manifest.image.virtual_size_bytes

    partitions = mbr_partitions(read_head(image, tmp_path))
    assert [kind for kind, _, _ in partitions] == [0x83], "one Linux partition in an MBR"
    _, start, sectors = partitions[0]
    assert (start + sectors) * 512 <= manifest.image.virtual_size_bytes

    packages = {p.name: p.version for p in manifest.packages}
    assert "nginx-light" in packages and "php-fpm" in packages
    assert "linux-image-cloud-amd64" in packages
    assert "linux-image-amd64" not in packages
    # The role is built on the base layer: the base's work is not done again.
    assert manifest.base_layer is not None
    log = (web_build / "build.log").read_text(errors="replace")
    assert "root.d/08-imagekit-layer" in log and "08-debootstrap" not in log
    assert not re.search(r"Unpacking linux-image-", log)
    base = Manifest.read(Path(manifest.base_layer.build_dir))
    assert base.status == "built" and base.role == "base"
    assert base.elements == ["debian-minimal", "vm", "imagekit-base"]
    # Every package of the base is in the role image, at the base's version.
    assert {p.name: p.version for p in base.packages}.items() <= packages.items()
    # debian-minimal's generic kernel is never installed (not installed, then purged).
    base_log = (Path(manifest.base_layer.build_dir) / "build.log").read_text(errors="replace")
    assert re.search(r"Unpacking linux-image-[0-9.]+-[0-9]+-cloud-amd64 ", base_log)
    assert not re.search(r"Unpacking linux-image-[0-9.]+-[0-9]+-amd64 ", base_log)

    head_commit = subprocess.run(
        ["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert manifest.source.commit == head_commit
    assert manifest.builder_version
    assert manifest.elements == ["vm", "imagekit-web"]
    assert (web_build / "build.log").stat().st_size > 0


def test_the_sbom_lists_what_the_image_carries(web_build: Path) -> None:
    """sbom.cdx.json: valid CycloneDX, every installed package with its source and suite,
    the image's sha256; the manifest knows which packages are security updates."""
    manifest = Manifest.read(web_build)
    text = (web_build / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert manifest.sbom_sha256 == hashlib.sha256(text.encode()).hexdigest()
    sbom = json.loads(text)
    assert manifest.image is not None
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == manifest.image.sha256
    listed = {c["name"]: c for c in sbom["components"]}
    assert set(listed) == {p.name for p in manifest.packages}
    nginx = next(p for p in manifest.packages if p.name == "nginx-light")
    assert nginx.source == "nginx" and nginx.suite.startswith(manifest.release)
    purl = PackageURL.from_string(listed["nginx-light"]["purl"])
    assert (purl.type, purl.namespace, purl.name) == ("deb", "debian", "nginx-light")
    assert (purl.version, purl.qualifiers["arch"]) == (nginx.version, nginx.arch)
    # Every package's version came from an index of the build's mirrors.
    assert [p.name for p in manifest.packages if not p.suite] == []
    print(f"security updates in the image: {[p.name for p in manifest.packages if p.security]}")


@pytest.fixture(scope="module", params=ROLES)
def image_root(
    request: pytest.FixtureRequest,
    built: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """Each role's image, mounted read-only once for every offline check of it."""
    role = request.param
    with mounted_root(built(role) / f"{role}.qcow2", tmp_path_factory.mktemp(role)) as root:
        yield root


def test_image_holds_keys_but_no_secrets_or_instance_state(
    image_root: Path, config: Config
) -> None:
    root = image_root
    keys = (root / "home/admin/.ssh/authorized_keys").read_text()
    assert keys.strip() == config.public_keys[0].line

    assert not list((root / "etc/ssh").glob("ssh_host_*")), "no SSH host keys"
    # Empty (machine-id(5)): a new id at the first boot, which is not systemd's "first boot".
    assert (root / "etc/machine-id").read_text() == ""
    # What imagekit-base keeps off the boot (post-install.d/90, install.d/63).
    assert os.readlink(root / "etc/systemd/system/cloud-config.service") == "/dev/null"
    masked = {p.name for p in (root / "etc/systemd/system-generators").iterdir()}
    assert "systemd-gpt-auto-generator" in masked and "systemd-fstab-generator" not in masked
    assert not [p for p in (root / "var/lib/apt/lists").iterdir() if p.name != "partial"]
    assert not (root / "etc/dib-manifests").exists()

    for line in (root / "etc/shadow").read_text().splitlines():
        user, password = line.split(":")[:2]
        assert password in ("*", "!", "!*", "!!") or password.startswith("!*"), (
            f"{user} has a password hash"
        )
    found = subprocess.run(
        ["grep", "-rlI", "--exclude-dir=proc", "PRIVATE KEY-----", "etc", "home", "root"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.split()
    # ssl-cert's snakeoil key is made at package install; it must not be baked either.
    assert found == [], f"private keys in the image: {found}"

    sshd = (root / "etc/ssh/sshd_config.d/50-imagekit.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd
    datasources = (root / "etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg").read_text()
    assert "NoCloud, ConfigDrive, OpenStack, None" in datasources
    assert "name: admin" in (root / "etc/cloud/cloud.cfg.d/80-imagekit.cfg").read_text()
    assert not list((root / "usr/share/man").iterdir()), "no man pages"
    assert not list((root / "usr/lib/udev/hwdb.d").glob("*.hwdb")), "no hardware database"
    assert not (root / "usr/lib/udev/hwdb.bin").exists()
    assert not (root / "root/.ssh/authorized_keys").exists()
    # The image's apt sources, not the build mirrors (maybe file:// or private).
    assert apt_source_uris(root) == {
        config.mirrors.image_main,
        config.mirrors.image_security,
    }


# What the image holds is read here, on the host, in seconds: the same checks inside a
# booted guest took most of a minute per role under TCG.


def _dpkg_installed(root: Path, *names: str) -> dict[str, bool]:
    listed = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f",
            "${Package} ${db:Status-Abbrev}\n",
            *names,
        ],
        capture_output=True,
        text=True,
    ).stdout
    state = dict(line.split(" ", 1) for line in listed.splitlines())
    return {name: state.get(name, "").startswith("ii") for name in names}


def _kernel_version(root: Path) -> str:
    (version,) = [p.name for p in (root / "lib/modules").iterdir()]
    return version


def _module_name(path: str) -> str:
    """kernel/drivers/block/virtio_blk.ko(.xz) -> virtio_blk (modprobe's spelling: _ not -)."""
    return path.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")


def _module_list(text: str) -> list[str]:
    """The names of an initramfs-tools module list, comments and blank lines dropped."""
    return [name for line in text.splitlines() if (name := line.split("#")[0].strip())]


def test_initramfs_is_zstd_with_the_vm_storage_drivers_only(image_root: Path) -> None:
    """imagekit-base's pre-install.d/07: MODULES=list, zstd. Only the listed drivers, what
    they depend on, and what initramfs-tools' own hooks add (dm-mod for dmsetup, fan for
    thermal); no btrfs, xfs, nfs, infiniband or network drivers of MODULES=most. Only the
    config drive's CD-ROM driver is loaded at every boot (conf/modules): udev loads the disk
    drivers the VM's devices match."""
    root, version = image_root, _kernel_version(image_root)
    initrd = root / f"boot/initrd.img-{version}"
    assert initrd.read_bytes()[:4] == b"\x28\xb5\x2f\xfd", "not one zstd archive"
    text = (root / "usr/share/imagekit/initramfs-drivers").read_text()
    text += (root / "usr/share/initramfs-tools/modules.d/imagekit-config-drive").read_text()
    listed = _module_list(text)
    depends = subprocess.run(
        [
            "modprobe",
            "-d",
            str(root),
            "-S",
            version,
            "--show-depends",
            "--ignore-install",
            "-a",
            *listed,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    allowed = {name.replace("-", "_") for name in listed} | {"dm_mod", "fan"}
    allowed |= {_module_name(line.split()[1]) for line in depends.splitlines() if ".ko" in line}
    archive = subprocess.run(["zstd", "-dc", str(initrd)], check=True, capture_output=True).stdout
    unpacked = subprocess.run(
        ["cpio", "-t", "--quiet"], input=archive, check=True, capture_output=True
    ).stdout.decode()
    packed = {_module_name(p) for p in unpacked.splitlines() if ".ko" in p.rsplit("/", 1)[-1]}
    assert {"virtio_blk", "virtio_scsi", "virtio_pci", "sd_mod", "sr_mod"} <= packed
    assert packed <= allowed, sorted(packed - allowed)
    forced = subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", "conf/modules"],
        input=archive,
        check=True,
        capture_output=True,
    ).stdout.decode()
    assert _module_list(forced) == ["sr_mod"], forced


def test_grub_has_no_font_or_media_making_tools(image_root: Path) -> None:
    """imagekit-base's pre-install.d/08: the serial and text consoles load no font; no tools
    for other boot media; what grub-install and update-grub use is there."""
    root = image_root
    for path in ("usr/share/grub", "boot/grub", "boot/grub/fonts"):
        assert not (root / path / "unicode.pf2").exists(), path
    assert "loadfont" not in (root / "boot/grub/grub.cfg").read_text()
    for tool in ("bin/grub-mkrescue", "bin/grub-mkstandalone", "bin/grub-fstest", "bin/grub-mount"):
        assert not (root / "usr" / tool).exists(), tool
    for tool in ("sbin/grub-install", "sbin/grub-mkconfig", "sbin/grub-probe", "bin/grub-mkimage"):
        assert (root / "usr" / tool).is_file(), tool


def test_locales_only_en_us_and_c_utf8(image_root: Path) -> None:
    """imagekit-base's pre-install.d/09: /usr/share/i18n keeps what localedef reads for
    en_US.UTF-8 and C.UTF-8 (install.d/92 checks that en_US.UTF-8 compiles from them)."""
    i18n = image_root / "usr/share/i18n"
    assert [p.name for p in (i18n / "charmaps").iterdir()] == ["UTF-8.gz"]
    locales = {p.name for p in (i18n / "locales").iterdir()}
    assert {"C", "en_US", "i18n", "iso14651_t1"} <= locales
    assert not {"de_DE", "fr_FR", "zh_CN"} & locales
    archive = subprocess.run(
        ["localedef", "--list-archive", str(image_root / "usr/lib/locale/locale-archive")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert archive == ["en_US.utf8"]
    assert (image_root / "usr/lib/locale/C.utf8/LC_CTYPE").is_file()


def test_no_drivers_for_desk_hardware(image_root: Path) -> None:
    """imagekit-base's pre-install.d/06: no modules for what only a physical machine has
    (DAQ cards, Surface laptops, vendor HID quirks); the generic and VM ones stay."""
    modules = image_root / "lib/modules" / _kernel_version(image_root) / "kernel"
    found = [
        p.name
        for folder in ("drivers/comedi", "drivers/platform/surface", "drivers/hid")
        for p in (modules / folder).rglob("*.ko*")
    ]
    assert sorted(found) == ["hid-generic.ko", "hid-hyperv.ko", "hid.ko", "uhid.ko"]
    for kept in ("drivers/net/virtio_net.ko", "drivers/infiniband", "fs/xfs/xfs.ko"):
        assert (modules / kept).exists(), kept


def test_gnupg_keeps_what_apt_and_cloud_init_use(image_root: Path) -> None:
    """imagekit-base's pre-install.d/50: gpg and dirmngr (cloud-init's apt keys) stay, and
    apt autoremove would not take them; S/MIME, WKS and the gnupg meta packages are gone."""
    kept = ("gpgv", "gpg", "gpg-agent", "dirmngr")
    gone = ("gnupg", "gnupg2", "gpgsm", "gpg-wks-server", "gnupg-utils")
    assert _dpkg_installed(image_root, *kept, *gone) == {
        **dict.fromkeys(kept, True),
        **dict.fromkeys(gone, False),
    }
    states = (image_root / "var/lib/apt/extended_states").read_text().split("\n\n")
    auto = {s.split()[1] for s in states if "Auto-Installed: 1" in s}
    assert not {"gpg", "gpg-agent", "dirmngr"} & auto


def test_no_boot_units_or_login_managers_for_what_a_server_vm_lacks(image_root: Path) -> None:
    """imagekit-base's install.d/63 and pre-install.d/51: no binfmt, DRM, EFI pstore or repart
    units at every boot; no systemd user manager per login, but logind stays (ACPI power
    button) with the system bus."""
    units = image_root / "etc/systemd/system"
    for unit in ("systemd-binfmt.service", "modprobe@drm.service", "systemd-repart.service"):
        assert os.readlink(units / unit) == "/dev/null", unit
    assert not list(units.glob("*.wants/systemd-pstore.service"))
    gone = ("libpam-systemd", "dbus-user-session")
    assert _dpkg_installed(image_root, *gone, "dbus", "systemd") == {
        **dict.fromkeys(gone, False),
        "dbus": True,
        "systemd": True,
    }
    pam = (image_root / "etc/pam.d/common-session").read_text()
    assert "pam_systemd" not in pam


def test_no_python_doc_topics_or_test_runner(image_root: Path) -> None:
    """imagekit-base's pre-install.d/05 and finalise.d/95; the rest of the stdlib is there
    (the image's own python3, run in its read-only root)."""
    (stdlib,) = (image_root / "usr/lib").glob("python3.[0-9]*")
    assert not (stdlib / "pydoc_data").exists() and not (stdlib / "test").exists()
    imports = "import asyncio, email, json, sqlite3, unittest"
    subprocess.run(["chroot", str(image_root), "python3", "-c", imports], check=True)


def test_the_base_layer_is_built_once_and_is_a_clean_root(config: Config, tmp_path: Path) -> None:
    """Role builds share one layer per set of inputs; it is a root as a finished build leaves
    it: the real start-stop-daemon, no daemon block, no build manifests, no mounts."""
    first = dib.base_layer(config)
    assert dib.base_layer(config) == first, "found again, not built again"
    assert first.base.manifest().status == "built" and first.base.image.is_file()
    names = set(
        subprocess.run(
            ["tar", "-tf", str(first.tar)], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert "./usr/sbin/start-stop-daemon" in names
    for absent in ("./usr/sbin/policy-rc.d", "./usr/sbin/start-stop-daemon.REAL", "./proc/"):
        assert absent not in names
    assert not [n for n in names if n.startswith(("./etc/dib-manifests", "./sys/", "./dev/"))]
    subprocess.run(
        ["tar", "-C", str(tmp_path), "-xf", str(first.tar), "./usr/sbin/start-stop-daemon"],
        check=True,
    )
    assert (tmp_path / "usr/sbin/start-stop-daemon").read_bytes()[:4] == b"\x7fELF"


def test_rsync_only_where_a_package_depends_on_it(image_root: Path, config: Config) -> None:
    """imagekit-layer's post-install.d/90: DIB's install-static (web, db) copies a role's
    static/ files with rsync, which then stays only for a package that depends on it (db's
    mariadb-server), as in a Packer build of the role."""
    assert not [role for role in ROLES if "rsync" in config.role_packages(role)]
    listed = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={image_root}/var/lib/dpkg",
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Depends}, ${Pre-Depends}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dependents = [
        package
        for status, package, depends in (line.split("\t") for line in listed.splitlines())
        if status.startswith("ii") and re.search(r"(^|, )rsync\b", depends)
    ]
    installed = _dpkg_installed(image_root, "rsync")["rsync"]
    assert installed == bool(dependents), dependents
    assert (image_root / "etc/init.d/rsync").exists() == installed, "purged, not removed"
