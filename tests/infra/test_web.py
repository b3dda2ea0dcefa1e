"""Nginx + PHP-FPM serving a page rendered by PHP."""

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
