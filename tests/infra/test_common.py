"""What every role image must be once booted."""

import json
import re
import socket
from typing import Any

import paramiko
import pytest
from testinfra.host import Host


def _key_ids(text: str) -> set[str]:
    """(type, base64) of each key line; comments and options do not matter."""
    ids = set()
    for line in text.splitlines():
        fields = line.split()
        for i, field in enumerate(fields[:-1]):
            if field.startswith(("ssh-", "ecdsa-", "sk-")):
                ids.add(f"{field} {fields[i + 1]}")
                break
    return ids


def test_baked_admin_keys_are_authorized(host: Host, expected: dict[str, Any]) -> None:
    user = expected["admin_user"]
    keys = host.file(f"/home/{user}/.ssh/authorized_keys")
    assert keys.exists and keys.user == user and keys.mode == 0o600
    assert _key_ids("\n".join(expected["authorized_keys"])) <= _key_ids(keys.content_string)


def test_root_keeps_no_key_from_the_build(host: Host, expected: dict[str, Any]) -> None:
    """The image ships no root authorized_keys; cloud-init may add this boot's keys for
    root, behind a forced command that refuses the login, and nothing else."""
    with host.sudo():
        keys = host.file("/root/.ssh/authorized_keys")
        text = keys.content_string if keys.exists else ""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert not [line for line in lines if "imagekit-packer-build" in line], "Packer's build key"
    assert not _key_ids(text) & _key_ids("\n".join(expected["authorized_keys"])), "baked keys"
    # Each line starts with options (a plain key line starts with its type) incl. command=.
    usable = [line for line in lines if line.startswith(("ssh-", "ecdsa-", "sk-"))]
    assert usable == [] and all('command="' in line for line in lines), "a usable root key"


def test_sshd_refuses_passwords_and_root(host: Host) -> None:
    with host.sudo():
        config = host.check_output("sshd -T -C user=root,host=localhost,addr=127.0.0.1")
    settings = dict(line.split(" ", 1) for line in config.splitlines() if " " in line)
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitrootlogin"] == "no"


def connect_raw(address: str, port: int, proxy: str | None) -> Any:
    """A TCP connection to the SSH server, through the instance's ProxyCommand if any."""
    if proxy:
        return paramiko.ProxyCommand(proxy.replace("%h", address).replace("%p", str(port)))
    return socket.create_connection((address, port), timeout=20)


@pytest.mark.parametrize("user", ["root", "admin"])
def test_ssh_offers_public_keys_only(expected: dict[str, Any], user: str) -> None:
    """From outside, as a client sees it: the server offers no password method."""
    address, port = expected["ssh"].rsplit(":", 1)
    with connect_raw(address, int(port), expected.get("ssh_proxy_command")) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=20)
            with pytest.raises(paramiko.BadAuthenticationType) as refused:
                transport.auth_none(expected["admin_user"] if user == "admin" else user)
            assert refused.value.allowed_types == ["publickey"]
        finally:
            transport.close()


def test_ssh_host_keys_were_made_at_first_boot(host: Host) -> None:
    boot_time = int(re.search(r"^btime (\d+)", host.file("/proc/stat").content_string, re.M)[1])  # type: ignore[index]
    with host.sudo():
        for kind in ("ed25519", "ecdsa"):
            key = host.file(f"/etc/ssh/ssh_host_{kind}_key")
            assert key.exists, kind
            assert key.mtime.timestamp() >= boot_time - 5, f"{kind} host key predates this boot"
        for kind in ("rsa", "dsa"):  # not made: slow at first boot, and not needed
            assert not host.file(f"/etc/ssh/ssh_host_{kind}_key").exists, kind


def test_machine_id_is_this_instances(host: Host) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", host.file("/etc/machine-id").content_string.strip())


def test_cloud_init_finished_without_errors(host: Host) -> None:
    status = host.run("cloud-init status --long")
    assert status.rc == 0, status.stdout + status.stderr
    assert "status: done" in status.stdout
    result = json.loads(host.file("/run/cloud-init/result.json").content_string)
    assert result["v1"]["errors"] == []


def test_only_the_intended_datasources(host: Host, expected: dict[str, Any]) -> None:
    # The configured list, merged by cloud-init itself from cloud.cfg and cloud.cfg.d/.
    configured = host.check_output(
        "python3 -c 'from cloudinit.util import read_conf_with_confd as read; "
        'print(",".join(read("/etc/cloud/cloud.cfg")["datasource_list"]))\''
    )
    assert configured.split(",") == [*expected["datasources"], "None"]
    status = json.loads(host.file("/run/cloud-init/status.json").content_string)
    used = status["v1"]["datasource"].split()[0].removeprefix("DataSource")
    assert used in expected["datasources"]


def test_shared_packages_are_installed(host: Host, expected: dict[str, Any]) -> None:
    missing = [name for name in expected["packages"] if not host.package(name).is_installed]
    assert missing == []


def test_no_account_has_a_password(host: Host) -> None:
    with host.sudo():
        shadow = host.check_output("getent shadow")
    for line in shadow.splitlines():
        user, password = line.split(":")[:2]
        assert password.startswith(("!", "*")), f"{user} has a password"


def test_user_data_named_the_instance_and_its_private_address(
    host: Host, expected: dict[str, Any]
) -> None:
    values = expected["values"]
    assert host.check_output("hostname") == values["hostname"]
    assert host.check_output("hostname -f") == f"{values['hostname']}.{values['domain']}"
    if values["configure_private_interface"]:  # the user data set it up, on that NIC
        addresses = host.check_output(f"ip -4 -o addr show dev {values['private_interface']}")
    else:  # the cloud's network config did, on the NIC name the cloud's hardware gives
        addresses = host.check_output("ip -4 -o addr show")
    assert f"inet {values['private_address']} " in addresses
    assert f"nameserver {values['resolver']}" in host.file("/etc/resolv.conf").content_string


def _module_name(path: str) -> str:
    """kernel/drivers/block/virtio_blk.ko(.xz) -> virtio_blk (modprobe's spelling: _ not -)."""
    return path.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")


def test_initramfs_is_zstd_with_the_vm_storage_drivers_only(host: Host) -> None:
    """imagekit-base's pre-install.d/07: MODULES=list, zstd. Only the listed drivers, what
    they depend on, and what initramfs-tools' own hooks add (dm-mod for dmsetup, fan for
    thermal); no btrfs, xfs, nfs, infiniband or network drivers of MODULES=most."""
    initrd = f"/boot/initrd.img-{host.check_output('uname -r')}"
    assert host.check_output(f"od -An -tx1 -N4 {initrd}").replace(" ", "") == "28b52ffd"
    listed = [
        line.split("#")[0].strip()
        for line in host.file(
            "/usr/share/initramfs-tools/modules.d/imagekit-vm"
        ).content_string.splitlines()
    ]
    listed = [name for name in listed if name]
    depends = host.check_output(
        f"/usr/sbin/modprobe --show-depends --ignore-install -a {' '.join(listed)}"
    )
    allowed = {name.replace("-", "_") for name in listed} | {"dm_mod", "fan"}
    allowed |= {_module_name(line.split()[1]) for line in depends.splitlines() if ".ko" in line}
    packed = {
        _module_name(path)
        for path in host.check_output(f"lsinitramfs {initrd}").splitlines()
        if ".ko" in path.rsplit("/", 1)[-1]
    }
    assert {"virtio_blk", "virtio_scsi", "virtio_pci", "sd_mod"} <= packed
    assert packed <= allowed, sorted(packed - allowed)


def test_grub_has_no_font_or_media_making_tools(host: Host) -> None:
    """imagekit-base's pre-install.d/08: the serial and text consoles load no font; no tools
    for other boot media; what grub-install and update-grub use is there."""
    for path in ("/usr/share/grub", "/boot/grub", "/boot/grub/fonts"):
        assert not host.file(f"{path}/unicode.pf2").exists, path
    with host.sudo():
        assert "loadfont" not in host.file("/boot/grub/grub.cfg").content_string
    for tool in ("bin/grub-mkrescue", "bin/grub-mkstandalone", "bin/grub-fstest", "bin/grub-mount"):
        assert not host.file(f"/usr/{tool}").exists, tool
    for tool in ("sbin/grub-install", "sbin/grub-mkconfig", "sbin/grub-probe", "bin/grub-mkimage"):
        assert host.file(f"/usr/{tool}").is_file, tool


def test_locale_sources_kept_only_for_en_us_and_c_utf8(host: Host) -> None:
    """imagekit-base's pre-install.d/09: /usr/share/i18n keeps what localedef reads for
    en_US.UTF-8 and C.UTF-8. That en_US.UTF-8 compiles from them is checked where it is cheap,
    in the build (install.d/92, after locale-gen): localedef here took 16 s under TCG."""
    assert host.check_output("ls /usr/share/i18n/charmaps").split() == ["UTF-8.gz"]
    locales = set(host.check_output("ls /usr/share/i18n/locales").split())
    assert {"C", "en_US", "i18n", "iso14651_t1"} <= locales
    assert not {"de_DE", "fr_FR", "zh_CN"} & locales
    assert {"C.utf8", "en_US.utf8"} <= set(host.check_output("locale -a").split())


def test_no_drivers_for_desk_hardware(host: Host) -> None:
    """imagekit-base's pre-install.d/06: no modules for what only a physical machine has
    (DAQ cards, Surface laptops, vendor HID quirks); the generic and VM ones stay."""
    modules = f"/lib/modules/{host.check_output('uname -r')}/kernel"
    found = host.check_output(
        f"find {modules}/drivers/comedi {modules}/drivers/platform/surface {modules}/drivers/hid"
        " -name '*.ko*' -printf '%f\\n'"
    ).split()
    assert sorted(found) == ["hid-generic.ko", "hid-hyperv.ko", "hid.ko", "uhid.ko"]
    for kept in ("drivers/net/virtio_net.ko", "drivers/infiniband", "fs/xfs/xfs.ko"):
        assert host.file(f"{modules}/{kept}").exists, kept


def test_gnupg_keeps_what_apt_and_cloud_init_use(host: Host) -> None:
    """imagekit-base's pre-install.d/50: gpg and dirmngr (cloud-init's apt keys) stay, and
    apt autoremove would not take them; S/MIME, WKS and the gnupg meta packages are gone."""
    for package in ("gpgv", "gpg", "gpg-agent", "dirmngr"):
        assert host.package(package).is_installed, package
    assert {"gpg", "gpg-agent", "dirmngr"} <= set(host.check_output("apt-mark showmanual").split())
    for package in ("gnupg", "gnupg2", "gpgsm", "gpg-wks-server", "gnupg-utils"):
        assert not host.package(package).is_installed, package


def test_no_python_doc_topics_or_test_runner(host: Host) -> None:
    """imagekit-base's pre-install.d/05 and finalise.d/95; the rest of the stdlib is there."""
    python = host.check_output("python3 -c 'import sys; print(sys.version_info[1])'")
    assert not host.file(f"/usr/lib/python3.{python}/pydoc_data").exists
    assert not host.file(f"/usr/lib/python3.{python}/test").exists
    host.check_output("python3 -c 'import asyncio, email, json, sqlite3, unittest'")


def test_the_root_filesystem_grew_to_the_disk(host: Host) -> None:
    """A flavor's disk is bigger than the image (imagekit test boots it on a bigger one):
    cloud-init's growpart (cloud-guest-utils) grows the root partition to the disk, and
    resizefs its filesystem to the partition."""
    source = host.check_output("findmnt -no SOURCE /")
    disk = host.check_output(f"lsblk -no PKNAME {source}")
    disk_bytes = int(host.check_output(f"lsblk -bdno SIZE /dev/{disk}"))
    part_bytes = int(host.check_output(f"lsblk -bdno SIZE {source}"))
    with host.sudo():
        header = host.check_output(f"dumpe2fs -h {source} 2>/dev/null")
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
    slack = 8 << 20  # the partition's alignment, the filesystem's last partial group
    assert part_bytes > disk_bytes - slack, (part_bytes, disk_bytes)
    assert fs_bytes > part_bytes - slack, (fs_bytes, part_bytes)
