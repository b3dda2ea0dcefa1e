"""User data: values validated, templates strict, output checked against cloud-init's schema."""

import json
from pathlib import Path

import pytest
import yaml

from imagekit.errors import UserError
from imagekit.roles import CHECKOUT, ROLES
from imagekit.userdata import load_values, render_user_data
from imagekit.userdata import render as render_module
from imagekit.userdata.schema import validate_cloud_config

EXAMPLES = CHECKOUT / "cloud-init" / "examples"
CACHE = CHECKOUT / "build" / "cache"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_renders_valid_cloud_config_from_its_example(role: str) -> None:
    text = render_user_data(role, load_values(role, [EXAMPLES / f"{role}.yaml"], []), CACHE)
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["hostname"] and data["write_files"]
    assert "ip addr replace" in data["bootcmd"][0][2]


@pytest.mark.parametrize("role", ROLES)
def test_first_boot_restarts_only_what_started_before_the_files(role: str) -> None:
    """write_files runs in cloud-init's init stage, before sysinit.target: every service
    but nftables (before the network) first starts with its files in place, and a
    restart or reload in runcmd would only cost first-boot time."""
    data = yaml.safe_load(
        render_user_data(role, load_values(role, [EXAMPLES / f"{role}.yaml"], []), CACHE)
    )
    restarts = [
        step[2]
        for step in data.get("runcmd", [])
        if step[:2] in (["systemctl", "restart"], ["systemctl", "reload"])
    ]
    assert restarts == (["nftables"] if role == "lb" else [])


def test_set_wins_over_values_and_parses_yaml() -> None:
    values = load_values(
        "lb",
        [EXAMPLES / "lb.yaml"],
        ["hostname=lb2", "web_backends=[{name: w9, address: 10.12.0.99, port: 8080}]"],
    )
    data = yaml.safe_load(render_user_data("lb", values, CACHE))
    assert data["hostname"] == "lb2"
    haproxy = next(f for f in data["write_files"] if f["path"] == "/etc/haproxy/haproxy.cfg")
    assert "server w9 10.12.0.99:8080 check" in haproxy["content"]


def test_secrets_are_written_private() -> None:
    values = load_values("web", [EXAMPLES / "web.yaml"], [])
    assert values.secrets() == ["db_password"]
    data = yaml.safe_load(render_user_data("web", values, CACHE))
    app = next(f for f in data["write_files"] if f["path"] == "/etc/imagekit/app.ini")
    assert app["permissions"] == "0640" and app["owner"] == "root:www-data"
    assert "example-only-Xk29vQ7d" in app["content"]
    assert "example-only" not in repr(values), "secrets never show in reprs or logs"


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize("indent", ["", "    "])
def test_given_tls_pair_is_used_and_private(tmp_path: Path, indent: str) -> None:
    """An indented paste (a YAML block, a copied file) still renders a valid pem."""
    values_file = tmp_path / "tls.yaml"
    values_file.write_text(
        "tls_certificate: |\n"
        + "".join(f"  {indent}{line}\n" for line in CERT.splitlines())
        + f"tls_key: {json.dumps(KEY.replace(chr(10), chr(10) + indent))}\n"
    )
    values = load_values("lb", [EXAMPLES / "lb.yaml", values_file], [])
    data = yaml.safe_load(render_user_data("lb", values, CACHE))
    pem = next(f for f in data["write_files"] if f["path"] == "/etc/haproxy/certs/site.pem")
    assert pem["permissions"] == "0600"
    # What haproxy reads: the certificate then the key, each line from column 0.
    assert pem["content"].strip() == f"{CERT}\n{KEY}"
    assert not any("openssl" in str(step) for step in data["bootcmd"]), "no self-signed one"


def test_without_a_tls_pair_the_lb_makes_one_before_haproxy_starts() -> None:
    """In bootcmd (cloud-init's init stage, before network-online.target and so before
    HAProxy): from runcmd, HAProxy would fail at boot into systemd's start limit."""
    data = yaml.safe_load(
        render_user_data("lb", load_values("lb", [EXAMPLES / "lb.yaml"], []), CACHE)
    )
    (make,) = [step for step in data["bootcmd"] if "openssl" in str(step)]
    assert "test -s /etc/haproxy/certs/site.pem ||" in make[2], "once per instance"
    assert "-newkey ec" in make[2]
    assert not any("openssl" in str(step) or "haproxy" in str(step) for step in data["runcmd"])


@pytest.mark.parametrize(
    ("role", "assignments", "message"),
    [
        ("lb", ["web_backend=[]"], "unknown variable 'web_backend'"),
        ("web", ["server_name=null"], "server_name"),
        ("lb", ["hostname=Bad_Name"], "hostname"),
        ("lb", ["private_address=192.168.1.1/24"], "outside private_network"),
        ("dns", ["records={ns1: 10.12.0.999}"], "records.ns1"),
        ("db", ["db_password=short"], "db_password: at least 12 characters"),
        ("db", ["db_password=it's-a-quote-inside"], "db_password"),
        ("lb", [f"tls_key={json.dumps(KEY)}"], "tls_certificate and tls_key go together"),
        ("lb", ["tls_key=x", f"tls_certificate={json.dumps(CERT)}"], "tls_key is not PEM"),
        ("lb", [f"tls_key={json.dumps(CERT)}", f"tls_certificate={json.dumps(CERT)}"], "tls_key"),
        ("lb", ["novalue"], "expected KEY=VALUE"),
    ],
)
def test_bad_values_are_one_line_errors(role: str, assignments: list[str], message: str) -> None:
    with pytest.raises(UserError) as caught:
        load_values(role, [EXAMPLES / f"{role}.yaml"], assignments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_misspelt_template_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "common.yaml.j2").write_text("hostname: {{ hostnme }}\n")
    (tmp_path / "web.yaml.j2").write_text("runcmd: []\n")
    monkeypatch.setattr(render_module, "_env", _env_for(tmp_path))
    values = load_values("web", [EXAMPLES / "web.yaml"], [])
    with pytest.raises(UserError, match="undefined variable: 'hostnme' is undefined"):
        render_user_data("web", values, CACHE)


def _env_for(directory: Path) -> object:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostname: x\n", "must start with '#cloud-config'"),
        ("#cloud-config\nwrite_file: []\n", "no cloud-init module reads: write_file"),
        ("#cloud-config\nruncmd: {a: 1}\n", "invalid for cloud-init: runcmd"),
        ("#cloud-config\nwrite_files: [{content: x}]\n", "write_files.0"),
        ("#cloud-config\npackage_update: maybe\n", "package_update"),
    ],
)
def test_schema_rejects_invalid_cloud_config(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        validate_cloud_config(text, CACHE)


def test_required_variable_missing() -> None:
    with pytest.raises(UserError, match="required variable 'web_backends' is missing"):
        load_values("lb", [], ["hostname=lb1"])


def test_readme_documents_every_variable() -> None:
    from imagekit.userdata import ROLE_VALUES

    readme = (CHECKOUT / "cloud-init" / "README.md").read_text()
    for model in ROLE_VALUES.values():
        for name in model.model_fields:
            assert f"`{name}`" in readme, name
