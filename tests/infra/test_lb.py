"""Load balancer and gateway of the private network."""

from testinfra.host import Host


def test_haproxy_installed_running_and_config_valid(host: Host) -> None:
    assert host.package("haproxy").is_installed
    assert host.service("haproxy").is_running
    with host.sudo():
        check = host.run("haproxy -c -f /etc/haproxy/haproxy.cfg")
    assert check.rc == 0, check.stdout + check.stderr


def test_ip_forwarding_is_on(host: Host) -> None:
    assert host.sysctl("net.ipv4.ip_forward") == 1


def test_nftables_ready_for_nat(host: Host) -> None:
    assert host.package("nftables").is_installed
    assert host.service("nftables").is_enabled
    with host.sudo():
        nat = host.check_output("nft list table ip nat")
    assert "type nat hook postrouting" in nat
