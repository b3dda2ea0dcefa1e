"""The private network's name server answers."""

from testinfra.host import Host


def test_unbound_is_running(host: Host) -> None:
    assert host.service("unbound").is_running


def test_it_answers_a_query(host: Host) -> None:
    answer = host.run("dig +time=3 +tries=2 @127.0.0.1 localhost A")
    assert answer.rc == 0, answer.stderr
    assert "status: NOERROR" in answer.stdout
    assert "127.0.0.1" in host.check_output("dig +short @127.0.0.1 localhost A")
