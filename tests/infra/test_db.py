"""MariaDB with secure defaults."""

from testinfra.host import Host


def sql(host: Host, query: str) -> str:
    with host.sudo():
        return str(host.check_output(f'mariadb --batch --skip-column-names -e "{query}"'))


def test_mariadb_is_running_on_loopback_only(host: Host) -> None:
    assert host.service("mariadb").is_running
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":3306")]
    assert listening and all("127.0.0.1" in s for s in listening), listening


def test_no_anonymous_users(host: Host) -> None:
    assert sql(host, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = ''") == "0"


def test_no_remote_root(host: Host) -> None:
    hosts = sql(host, "SELECT Host FROM mysql.global_priv WHERE User = 'root'").split()
    assert set(hosts) <= {"localhost", "127.0.0.1", "::1"}


def test_no_test_database(host: Host) -> None:
    assert sql(host, "SHOW DATABASES LIKE 'test'") == ""
