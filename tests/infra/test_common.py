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


def test_no_unit_failed_at_boot(host: Host) -> None:
    """Nothing the image leaves out (masked units, packages) is missed by what stays."""
    failed = host.check_output("systemctl list-units --failed --no-legend --plain")
    assert failed == ""


def test_a_login_starts_no_user_manager(host: Host) -> None:
    """imagekit-base's pre-install.d/51: this SSH session has no systemd --user behind it."""
    assert host.check_output("systemctl list-units --no-legend --plain 'user@*'") == ""


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
