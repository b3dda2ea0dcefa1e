"""Load balancer and gateway of the private network."""

from typing import Any

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


def test_backends_from_user_data(host: Host, expected: dict[str, Any]) -> None:
    config = host.file("/etc/haproxy/haproxy.cfg").content_string
    for backend in expected["values"]["web_backends"]:
        assert f"server {backend['name']} {backend['address']}:{backend['port']} check" in config


def interfaces(host: Host, private_network: str) -> tuple[str, str]:
    """(private, public): the NIC with a private address, and the default route's."""
    private = host.check_output(f"ip -o -4 addr show to {private_network}").split()[1]
    public = host.check_output("ip -o -4 route show default").split()[4]
    return private, public


def test_private_network_is_masqueraded(host: Host, expected: dict[str, Any]) -> None:
    values = expected["values"]
    _, public = interfaces(host, values["private_network"])
    with host.sudo():
        nat = host.check_output("nft list table ip nat")
    assert f'ip saddr {values["private_network"]} oifname "{public}" masquerade' in nat


def test_http_redirects_to_https_with_a_private_certificate(host: Host) -> None:
    redirect = host.check_output(
        "curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1/"
    )
    assert redirect.startswith("301 https://")
    # TLS is up; no backend answers here, so HAProxy itself says 503.
    status = host.check_output("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/")
    assert status == "503"
    with host.sudo():
        pem = host.file("/etc/haproxy/certs/site.pem")
        assert pem.mode == 0o600 and pem.user == "root"
        assert not host.file("/etc/haproxy/certs/site.key").exists


def test_the_gateway_forwards_and_accepts_only_what_it_serves(
    host: Host, expected: dict[str, Any]
) -> None:
    values = expected["values"]
    with host.sudo():
        rules = host.check_output("nft list table inet filter")
    assert "hook input priority filter; policy drop;" in rules
    assert "hook forward priority filter; policy drop;" in rules
    assert "tcp dport { 22, 80, 443 } accept" in rules
    private, public = interfaces(host, values["private_network"])
    assert (
        f'iifname "{private}" ip saddr {values["private_network"]} oifname "{public}" accept'
        in rules
    )
