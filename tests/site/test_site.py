"""The whole site, as its users and an attacker on the outside see it.

The checks run in this order; the fault-tolerance check powers a web instance
off, so it comes last.
"""

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from testinfra.host import Host

from tests.site.conftest import OUTSIDE_PORT, OutsideServer, names, request

VISIT = re.compile(r"^visit: (\d+) written by (\S+) and read back; (\d+) in total$", re.M)


def _connects(address: str, port: int, timeout: float = 3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _dns_answers(address: str, timeout: float = 3) -> bool:
    """Does anything answer a DNS query (for '.' NS) over UDP at address:53?"""
    query = bytes.fromhex("abcd010000010000000000000000020001")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (address, 53))
            sock.recvfrom(512)
        except OSError:
            return False
    return True


def _answered(probes: Mapping[str, Callable[[], bool]]) -> list[str]:
    """The probes that got an answer, run side by side: a dropped one costs its timeout."""
    with ThreadPoolExecutor(len(probes)) as pool:
        answers = pool.map(lambda probe: probe(), probes.values())
        return [name for name, answered in zip(probes, answers, strict=True) if answered]


@pytest.mark.local_site
def test_the_namespace_has_no_way_out() -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    kinds = {line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()}
    assert all(k == "lo" or k.startswith(("br-", "tap")) for k in kinds), kinds
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True)
    assert "default" not in routes.stdout
    assert not re.search(r"veth|@if", links.stdout)


def test_https_page_is_rendered_by_php_with_a_database_round_trip(site: dict[str, Any]) -> None:
    answer = request(site, "https")
    assert answer.status == 200, answer.body
    assert answer.body.startswith("imagekit web: PHP 8."), answer.body
    db = next(i for i in site["instances"] if i["role"] == "db")
    assert f"database: {site['db_user']}@{db['name']}.{site['domain']}/{site['db_name']}" in (
        answer.body
    )
    visit = VISIT.search(answer.body)
    assert visit, answer.body
    assert visit[2] in names(site, "web")


def test_every_web_instance_answers_and_visits_add_up(site: dict[str, Any]) -> None:
    webs = names(site, "web")
    visits = []
    for _ in range(3 * len(webs)):
        answer = request(site, "https")
        visit = VISIT.search(answer.body)
        assert answer.status == 200 and visit, answer.body
        visits.append((int(visit[1]), visit[2], int(visit[3])))
    assert {web for _, web, _ in visits} == set(webs)
    ids = [visit_id for visit_id, _, _ in visits]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # The total read back grows with every row written.
    assert visits[-1][2] >= visits[0][2] + len(visits) - 1


def test_the_database_holds_what_every_web_instance_wrote(
    site: dict[str, Any], hosts: dict[str, Host]
) -> None:
    db = hosts[names(site, "db")[0]]
    with db.sudo():
        writers = db.check_output(
            f"mariadb --batch --skip-column-names -e "
            f"'SELECT DISTINCT web FROM `{site['db_name']}`.visits'"
        ).split()
    assert set(names(site, "web")) <= set(writers)


def test_http_redirects_to_https(site: dict[str, Any]) -> None:
    answer = request(site, "http")
    assert answer.status == 301
    assert answer.headers["location"].startswith(f"https://{site['server_name']}/")


@pytest.mark.parametrize("role", ["web", "db", "dns"])
def test_private_instances_go_out_through_the_lb_and_its_nat(
    site: dict[str, Any], hosts: dict[str, Host], outside_server: OutsideServer, role: str
) -> None:
    lb = next(i for i in site["instances"] if i["role"] == "lb")
    for name in names(site, role):
        host = hosts[name]
        assert host.check_output("ip route show default").startswith(f"default via {lb['address']}")
        seen = host.check_output(
            f"curl -fsS --max-time 10 http://{site['outside']}:{OUTSIDE_PORT}/"
        )
        # The outside world sees the lb's public address, not the private one.
        assert seen == site["lb_public_address"], name
    assert outside_server.sources and set(outside_server.sources) == {site["lb_public_address"]}


def test_only_the_lb_services_answer_from_outside(site: dict[str, Any]) -> None:
    lb = site["lb_public_address"]
    assert [p for p in (22, 80, 443) if not _connects(lb, p)] == []
    closed = {f"tcp/{p}": partial(_connects, lb, p) for p in (53, 3306, 8080, 9000)}
    assert _answered({**closed, "dns": partial(_dns_answers, lb)}) == []


@pytest.fixture
def route_into_the_private_network(site: dict[str, Any]) -> Iterator[None]:
    """An attacker outside routes the private network to the lb's public address."""
    route = ["ip", "route", "add", site["private_network"], "via", site["lb_public_address"]]
    subprocess.run(route, check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "route", "del", site["private_network"]], check=True)


# On a cloud, the attacker is not on the lb's link: Neutron's router is, and routes nothing
# into a network it does not serve.
@pytest.mark.local_site
@pytest.mark.usefixtures("route_into_the_private_network")
def test_the_lb_forwards_nothing_into_the_private_network(site: dict[str, Any]) -> None:
    lb = next(i for i in site["instances"] if i["role"] == "lb")
    # The route works: the lb's own private address answers its SSH from here.
    assert _connects(lb["address"], 22)
    by_role = {i["role"]: i["address"] for i in site["instances"]}
    probes = {
        "db tcp/3306": partial(_connects, by_role["db"], 3306),
        "web tcp/80": partial(_connects, by_role["web"], 80),
        "dns tcp/53": partial(_connects, by_role["dns"], 53),
        "dns": partial(_dns_answers, by_role["dns"]),
    }
    assert _answered(probes) == []


def test_every_instance_resolves_every_name_and_address_through_the_dns_instance(
    site: dict[str, Any], hosts: dict[str, Host]
) -> None:
    dns = next(i for i in site["instances"] if i["role"] == "dns")
    script = "; ".join(
        f"getent hosts {i['name']}.{site['domain']}; getent hosts {i['address']}"
        for i in site["instances"]
    )
    for name, host in hosts.items():
        resolv = host.file("/etc/resolv.conf").content_string
        assert f"nameserver {dns['address']}" in resolv.splitlines(), name
        answers = host.check_output(script).splitlines()
        for i in site["instances"]:
            if i["name"] == name:
                continue  # its own name is in its /etc/hosts
            fqdn = f"{i['name']}.{site['domain']}"
            # Forward (A) and reverse (PTR) each give "ADDRESS NAME".
            matching = [a for a in answers if a.split()[:2] == [i["address"], fqdn]]
            assert len(matching) == 2, f"{name} resolving {fqdn}/{i['address']}: {answers}"


def test_the_admin_key_reaches_every_private_instance_through_the_lb(
    site: dict[str, Any],
) -> None:
    """Plain OpenSSH with one key and an explicit jump: nothing from the site's SSH config
    but the key, the user and the addresses."""
    keys = [site["run_key"], *([site["identity"]] if site["identity"] else [])]
    lb = site["lb_public_address"]
    for key in keys:
        options = [
            "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
        ]  # fmt: skip
        jump = " ".join(["ssh", *options, "-W", "%h:%p", f"{site['admin_user']}@{lb}"])
        for instance in site["instances"]:
            if instance["role"] == "lb":
                continue
            result = subprocess.run(
                ["ssh", *options, "-o", f"ProxyCommand={jump}",
                 f"{site['admin_user']}@{instance['address']}", "hostname"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert result.returncode == 0, f"{key} -> {instance['name']}: {result.stderr}"
            assert result.stdout.strip() == instance["name"]


def test_every_instance_has_its_own_host_keys_and_machine_id(hosts: dict[str, Host]) -> None:
    """Instances of one image (web1, web2) are clones: identity is made at first boot."""
    seen: dict[str, str] = {}
    for name, host in hosts.items():
        key = host.check_output("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        machine_id = host.file("/etc/machine-id").content_string.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id), f"{name}: {machine_id!r}"
        for value in (key, machine_id):
            assert value not in seen, f"{name} shares {value} with {seen.get(value)}"
            seen[value] = name


def test_the_site_survives_a_web_instance_powered_off(
    site: dict[str, Any], hosts: dict[str, Host]
) -> None:
    webs = names(site, "web")
    assert len(webs) >= 2, "fault tolerance needs two web instances"
    victim, survivors = webs[-1], set(webs[:-1])
    lb = hosts[site["lb"]]
    address = next(i["address"] for i in site["instances"] if i["name"] == victim)
    probe = f"curl -s -o /dev/null --max-time 3 http://{address}/health.php"
    assert lb.run(probe).rc == 0, f"{victim} answers the lb before the power-off"
    # A hard power-off, from inside: no clean stop of Nginx that HAProxy could notice.
    hosts[victim].run("sudo systemd-run --on-active=1 systemctl poweroff --force --force")
    # Off as the lb sees it. A request that was in flight to it at that moment may fail (as
    # on any load balancer): the check is about every request that follows.
    deadline = time.monotonic() + 60
    while lb.run(probe).rc == 0:
        assert time.monotonic() < deadline, f"{victim} still answers 60 s after its power-off"
        time.sleep(1)
    answered = []
    deadline = time.monotonic() + 20  # several health-check intervals (inter 2s, fall 2)
    while time.monotonic() < deadline:
        answer = request(site, "https")
        visit = VISIT.search(answer.body)
        assert answer.status == 200 and visit, f"after {victim} went down: {answer.body}"
        answered.append(visit[2])
    # The last answers came from the others: HAProxy has taken the victim out.
    assert set(answered[-5:]) <= survivors, answered
