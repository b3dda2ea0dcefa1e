"""The site description: validation, derived values, network config, CLI errors."""

from pathlib import Path

import pytest
import yaml

from imagekit.cli import main
from imagekit.errors import UserError
from imagekit.site.model import DEFAULT_SITE, Site, load_site
from imagekit.site.run import parse_builds, write_user_data
from imagekit.userdata.values import Db, Dns, Lb, Web

EXAMPLE = yaml.safe_load(DEFAULT_SITE.read_text())


def write_site(tmp_path: Path, change: dict[str, object] | None = None, **instance: object) -> Path:
    """The example site, with top-level changes and one instance's fields changed."""
    data = {**EXAMPLE, **(change or {})}
    if instance:
        data["instances"] = [
            {**i, **instance} if i["name"] == instance.get("name", "web2") else i
            for i in EXAMPLE["instances"]
        ]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_example_site_loads_with_five_instances() -> None:
    site = load_site(DEFAULT_SITE)
    assert [(i.name, i.role) for i in site.instances] == [
        ("lb1", "lb"), ("web1", "web"), ("web2", "web"), ("dns1", "dns"), ("db1", "db"),
    ]  # fmt: skip


def test_values_that_follow_from_the_site_are_derived() -> None:
    site = load_site(DEFAULT_SITE).with_secrets()
    by_name = {i.name: site.role_values(i) for i in site.instances}
    lb, web, dns, db = by_name["lb1"], by_name["web1"], by_name["dns1"], by_name["db1"]
    assert isinstance(lb, Lb) and isinstance(web, Web) and isinstance(dns, Dns)
    assert isinstance(db, Db)
    assert [(b.name, str(b.address), b.port) for b in lb.web_backends] == [
        ("web1", "10.12.0.11", 80),
        ("web2", "10.12.0.12", 80),
    ]
    assert lb.private_interface == "ens4"
    assert web.private_interface == "ens3" and not web.configure_private_interface
    assert {n: str(a) for n, a in dns.records.items()} == {
        "lb1": "10.12.0.1", "web1": "10.12.0.11", "web2": "10.12.0.12",
        "dns1": "10.12.0.53", "db1": "10.12.0.30",
    }  # fmt: skip
    assert web.db_host == "db1.internal"
    assert str(db.bind_address) == "10.12.0.30" and str(db.client_subnet) == "10.12.0.0/16"
    assert {str(v.resolver) for v in by_name.values()} == {"10.12.0.53"}
    # The user data routes every private instance out through the lb.
    assert lb.gateway is None
    assert {str(v.gateway) for n, v in by_name.items() if n != "lb1"} == {"10.12.0.1"}
    # One generated password, shared by the web instances and the database.
    password = db.db_password.get_secret_value()
    assert len(password) >= 20 and web.db_password.get_secret_value() == password


def test_each_run_generates_its_own_password_and_a_given_one_is_kept(tmp_path: Path) -> None:
    site = load_site(DEFAULT_SITE)
    assert site.db_password is None
    assert site.with_secrets().db_password != site.with_secrets().db_password
    given = load_site(write_site(tmp_path, {"db_password": "given-password-123"}))
    assert given.with_secrets().db_password == "given-password-123"


def test_an_instances_own_values_win_over_derived_ones(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, values={"db_password": "wrong-password-1"}))
    web2 = site.with_secrets().role_values(site.instances[2])
    assert isinstance(web2, Web) and web2.db_password.get_secret_value() == "wrong-password-1"


def test_network_config_gives_addresses_and_resolver_as_a_cloud_would() -> None:
    site = load_site(DEFAULT_SITE)
    web = site.network_config(site.instances[1])
    assert web["config"] == [
        {
            "type": "physical",
            "name": "ens3",
            "mac_address": "52:54:00:12:01:00",
            "subnets": [
                {
                    "type": "static",
                    "address": "10.12.0.11/16",
                    "dns_nameservers": ["10.12.0.53"],
                    "dns_search": ["internal"],
                }
            ],
        }
    ]
    lb = site.network_config(site.lb)["config"]
    assert [(nic["name"], nic["subnets"][0]["address"]) for nic in lb] == [
        ("ens3", "203.0.113.10/24"),
        ("ens4", "10.12.0.1/16"),
    ]
    assert lb[0]["subnets"][0]["gateway"] == "203.0.113.1"
    assert "gateway" not in lb[1]["subnets"][0]


@pytest.mark.parametrize(
    ("change", "instance", "message"),
    [
        ({}, {"role": "mail"}, "instance 'web2': unknown role 'mail'"),
        ({}, {"name": "web2", "address": "10.12.0.11"}, "duplicate address 10.12.0.11"),
        ({}, {"address": "10.13.0.5"}, "10.13.0.5 is not a host address of 10.12.0.0/16"),
        ({}, {"address": "10.12.255.255"}, "is not a host address"),
        ({}, {"public_address": "203.0.113.20"}, "public_address goes with the lb"),
        ({}, {"values": {"nonsense": 1}}, "instance 'web2': unknown variable 'nonsense'"),
        ({"server_name": None}, {}, "server_name"),
        (
            {"public_network": "10.12.200.0/24"},
            {},
            "private_network 10.12.0.0/16 overlaps public_network 10.12.200.0/24",
        ),
        (
            {},
            {
                "name": "lb1",
                "values": {"web_backends": [{"name": "web1", "address": "10.12.0.12"}]},
            },
            "web backend 'web1' is at 10.12.0.11, not 10.12.0.12",
        ),
        (
            {},
            {"values": {"db_host": "db9.internal"}},
            "db_host 'db9.internal' is not the site's db",
        ),
        ({}, {"values": {"gateway": "192.0.2.1"}}, "gateway 192.0.2.1 is outside private_network"),
        ({"color": "blue"}, {}, "unknown variable 'color'"),
        (
            {},
            {"name": "lb1", "values": {"web_backends": [{"name": "db1", "address": "10.12.0.30"}]}},
            "web backend 'db1' is not a web instance",
        ),
    ],
)
def test_bad_sites_are_one_line_naming_the_file(
    tmp_path: Path, change: dict[str, object], instance: dict[str, object], message: str
) -> None:
    path = write_site(tmp_path, change, **instance)
    with pytest.raises(UserError) as err:
        load_site(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_a_missing_value_is_named(tmp_path: Path) -> None:
    data = {key: value for key, value in EXAMPLE.items() if key != "server_name"}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r"site\.yaml: .*server_name.*(required|missing)"):
        load_site(tmp_path / "site.yaml")


def test_user_data_sets_the_default_route_through_the_gateway(
    tmp_path: Path, write_config: object
) -> None:
    config = write_config("ssh_keys: ['{key}']\n")  # type: ignore[operator]
    assert main(["--config", str(config), "site", "userdata", "--output", str(tmp_path / "o")]) == 0
    data = {path.stem: yaml.safe_load(path.read_text()) for path in (tmp_path / "o").iterdir()}
    assert ["ip", "route", "replace", "default", "via", "10.12.0.1"] in data["db1"]["bootcmd"]
    # The lb is the gateway: its default route is its public side's, and it finds its NICs.
    finds_nics, makes_certificate = data["lb1"]["bootcmd"]
    assert "40-imagekit-interfaces.nft" in finds_nics[-1] and "route replace" not in finds_nics[-1]
    assert "openssl req" in makes_certificate[-1]


def test_duplicate_names_and_missing_roles(tmp_path: Path) -> None:
    data = {**EXAMPLE, "instances": [*EXAMPLE["instances"], EXAMPLE["instances"][1]]}
    (tmp_path / "dup.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="instance 'web1': duplicate name"):
        load_site(tmp_path / "dup.yaml")
    data = {**EXAMPLE, "instances": [i for i in EXAMPLE["instances"] if i["role"] != "db"]}
    (tmp_path / "nodb.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="the site needs a db instance"):
        load_site(tmp_path / "nodb.yaml")


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("instances: [\n")
    with pytest.raises(UserError, match=r"bad\.yaml:.*malformed YAML"):
        load_site(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="site description file not found"):
        load_site(tmp_path / "missing.yaml")


def test_site_model_rejects_an_outside_address_taken_by_an_instance() -> None:
    data = {**EXAMPLE}
    data["instances"] = [
        {**i, "public_address": "203.0.113.1"} if i["role"] == "lb" else i
        for i in EXAMPLE["instances"]
    ]
    with pytest.raises(ValueError, match="outside world"):
        Site.model_validate(data)


def test_parse_builds_refuses_paths() -> None:
    assert parse_builds(["web=20261125T041148Z"]) == {"web": "20261125T041148Z"}
    for bad in ["web", "web=", "=x", "web=../lb/x", "web=/etc"]:
        with pytest.raises(UserError):
            parse_builds([bad])


def test_site_userdata_writes_every_instance_privately(
    tmp_path: Path, write_config: object, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("ssh_keys: ['{key}']\n")  # type: ignore[operator]
    output = tmp_path / "out"
    assert main(["--config", str(config), "site", "userdata", "--output", str(output)]) == 0
    files = sorted(p.name for p in output.iterdir())
    assert files == ["db1.yaml", "dns1.yaml", "lb1.yaml", "web1.yaml", "web2.yaml"]
    for path in output.iterdir():
        assert path.stat().st_mode & 0o077 == 0
        assert path.read_text().startswith("#cloud-config\n")
    web = yaml.safe_load((output / "web1.yaml").read_text())
    db = yaml.safe_load((output / "db1.yaml").read_text())
    password = next(
        line.split('"')[1]
        for f in web["write_files"]
        if f["path"] == "/etc/imagekit/app.ini"
        for line in f["content"].splitlines()
        if line.startswith("password")
    )
    setup = next(f for f in db["write_files"] if f["path"] == "/root/imagekit-db-setup.sql")
    assert f"IDENTIFIED BY '{password}'" in setup["content"]
    # The generated secret is never printed.
    assert password not in capsys.readouterr().out


def test_site_userdata_refuses_a_file_or_symlink_as_output(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    site = load_site(DEFAULT_SITE)
    for bad in ("file", "link"):
        with pytest.raises(UserError, match="not a directory"):
            write_user_data(None, site, tmp_path / bad)  # type: ignore[arg-type]


def test_a_cloud_site_needs_the_openstack_section(
    write_config: object, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("ssh_keys: ['{key}']\n")  # type: ignore[operator]
    assert main(["--config", str(config), "site", "test", "--cloud", "prod"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"imagekit: error: {config}: openstack: section missing (needed by --cloud)"
