"""Nginx + PHP-FPM serving a page rendered by PHP."""

from typing import Any

from testinfra.host import Host


def test_nginx_and_php_fpm_are_running(host: Host) -> None:
    assert host.service("nginx").is_running
    fpm = host.check_output("systemctl list-units --type=service --state=running 'php*-fpm*'")
    assert "-fpm.service" in fpm


def test_http_request_returns_a_page_rendered_by_php(host: Host) -> None:
    page = host.check_output("curl -fsS http://127.0.0.1/")
    # index.php prints PHP_VERSION: only PHP can have filled it in.
    assert page.startswith("imagekit web: PHP 8.")
    assert "<?php" not in page


def test_server_name_and_app_settings_from_user_data(host: Host, expected: dict[str, Any]) -> None:
    values = expected["values"]
    with host.sudo():
        assert f"server_name {values['server_name']};" in host.check_output("nginx -T 2>/dev/null")
    page = host.check_output(f"curl -fsS -H 'Host: {values['server_name']}' http://127.0.0.1/")
    assert f"database: {values['db_user']}@{values['db_host']}/{values['db_name']}" in page
    assert values["db_password"] not in page


def test_app_secrets_are_not_world_readable(host: Host) -> None:
    with host.sudo():
        settings = host.file("/etc/imagekit/app.ini")
        assert settings.user == "root" and settings.group == "www-data"
        assert settings.mode == 0o640
