"""MariaDB with secure defaults, and the application's database from user data."""

from typing import Any

from testinfra.host import Host


def sql(host: Host, query: str) -> str:
    with host.sudo():
        return str(host.check_output(f'mariadb --batch --skip-column-names -e "{query}"'))


def test_mariadb_listens_on_the_bind_address_only(host: Host, expected: dict[str, Any]) -> None:
    assert host.service("mariadb").is_running
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":3306")]
    assert listening == [f"tcp://{expected['values']['bind_address']}:3306"], listening


def test_no_anonymous_users(host: Host) -> None:
    assert sql(host, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = ''") == "0"


def test_no_remote_root(host: Host) -> None:
    hosts = sql(host, "SELECT Host FROM mysql.global_priv WHERE User = 'root'").split()
    assert set(hosts) <= {"localhost", "127.0.0.1", "::1"}


def test_no_test_database(host: Host) -> None:
    assert sql(host, "SHOW DATABASES LIKE 'test'") == ""


def test_application_user_logs_in_with_its_password(host: Host, expected: dict[str, Any]) -> None:
    values = expected["values"]
    result = host.run(
        f"mariadb -h {values['bind_address']} -u {values['db_user']} "
        f"-p{values['db_password']} {values['db_name']} --batch --skip-column-names "
        "-e 'SELECT DATABASE()'"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == values["db_name"]


def test_setup_sql_with_the_password_is_gone(host: Host) -> None:
    with host.sudo():
        assert not host.file("/root/imagekit-db-setup.sql").exists
