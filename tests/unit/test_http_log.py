"""--debug's HTTP log: what a request to a cloud looked like, never its secrets."""

import io
import logging
from collections.abc import Iterator

import pytest
import requests_mock
from keystoneauth1 import session

from imagekit import clouds


@pytest.fixture
def http_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = clouds.log_http(out)
    yield out
    for name in ("keystoneauth", "openstack"):
        logging.getLogger(name).removeHandler(handler)
    logging.getLogger("keystoneauth").setLevel(logging.ERROR)


def test_requests_are_logged_with_secrets_replaced(http_log: io.StringIO) -> None:
    """A server create as `imagekit test --cloud` sends it: user data (the database
    password is in it) and Nova's adminPass in the answer never reach the log."""
    body = {"server": {"name": "imagekit-test-web", "user_data": "I2Nsb3VkLWNvbmZpZw=="}}
    with requests_mock.Mocker() as mock:
        mock.post(
            "http://nova.example/v2.1/servers",
            json={"server": {"id": "s1", "adminPass": "Kp9vQ2xz"}},
            headers={"Content-Type": "application/json"},
            status_code=202,
        )
        session.Session().post(
            "http://nova.example/v2.1/servers",
            json=body,
            headers={"X-Auth-Token": "gAAAAAtoken"},
            authenticated=False,
        )
    text = http_log.getvalue()
    assert "POST http://nova.example/v2.1/servers" in text
    assert '"name": "imagekit-test-web"' in text
    assert '"user_data": "***"' in text and "I2Nsb3VkLWNvbmZpZw" not in text
    assert '"adminPass": "***"' in text and "Kp9vQ2xz" not in text
    assert "gAAAAAtoken" not in text and "{SHA256}" in text
