"""The private network's name server answers for its zone, on the private address only."""

from typing import Any

from testinfra.host import Host


def test_unbound_is_running(host: Host) -> None:
    assert host.service("unbound").is_running


def test_it_answers_for_the_private_zone(host: Host, expected: dict[str, Any]) -> None:
    values = expected["values"]
    server = values["private_address"].split("/")[0]
    for name, address in values["records"].items():
        answer = host.check_output(f"dig +short +time=3 @{server} {name}.{values['zone']} A")
        assert answer == address
    reverse = host.check_output(f"dig +short @{server} -x {next(iter(values['records'].values()))}")
    assert reverse.endswith(f".{values['zone']}.")


def test_it_listens_on_the_private_address_only(host: Host, expected: dict[str, Any]) -> None:
    server = expected["values"]["private_address"].split("/")[0]
    listening = {s for s in host.socket.get_listening_sockets() if s.endswith(":53")}
    assert listening and all(f"//{server}:53" in s for s in listening), listening
