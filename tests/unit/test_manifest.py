import json
import multiprocessing
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from imagekit import suites
from imagekit.config import load_config
from imagekit.instances import SshAddress
from imagekit.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    Manifest,
    SuiteResult,
    json_schema,
    new_build_id,
    read_package_list,
)
from imagekit.roles import ELEMENTS_DIR
from tests.unit.manifests import make_manifest


def _manifest(role: str, build_id: str, status: str) -> Manifest:
    return make_manifest(
        role=role,
        build_id=build_id,
        status=status,
        elements=["debian-minimal", "vm", f"imagekit-{role}"],
    )


def test_build_ids_sort_and_never_collide(tmp_path: Path) -> None:
    first = new_build_id(tmp_path)
    (tmp_path / first).mkdir()
    second = new_build_id(tmp_path)
    assert second != first and second >= first


def test_the_package_list_reads_what_the_element_script_writes(tmp_path: Path) -> None:
    """imagekit-finish's imagekit-package-list, run on this (Debian) host, read back (the
    suites depend on the host's apt lists: the functional build test checks those)."""
    script = ELEMENTS_DIR / "imagekit-finish" / "bin" / "imagekit-package-list"
    path = tmp_path / "packages.tsv"
    path.write_text(subprocess.run([script], capture_output=True, text=True, check=True).stdout)
    packages = {p.name: p for p in read_package_list(path)}
    assert packages["dpkg"].source == "dpkg" and packages["dpkg"].arch == "amd64"
    assert packages["libssl3"].source == "openssl"
    assert (
        packages["dpkg"].version
        == subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "dpkg"], capture_output=True, text=True
        ).stdout
    )


def test_security_updates_are_told_by_their_suite(tmp_path: Path) -> None:
    path = tmp_path / "packages.tsv"
    path.write_text(
        "libssl3\t3.0.17-1~deb12u2\tamd64\topenssl\t3.0.17-1~deb12u2\tbookworm-security\n"
        "bash\t5.2.15-2+b8\tamd64\tbash\t5.2.15-2\tbookworm\n"
        "local-thing\t1.0\tall\tlocal-thing\t1.0\t\n"
    )
    libssl3, bash, local = read_package_list(path)
    assert libssl3.security and not bash.security and not local.security
    assert (bash.source, bash.source_version, local.suite) == ("bash", "5.2.15-2", "")


def _append_tests(build_dir: Path, count: int) -> None:
    for n in range(count):

        def add(manifest: Manifest, n: int = n) -> None:
            manifest.tests.append(SuiteResult(when=f"{os.getpid()}-{n}", passed=True))

        Manifest.update(build_dir, add)


def test_concurrent_updates_lose_no_record(tmp_path: Path) -> None:
    build_dir = tmp_path / "web" / "20260101T000000Z"
    build_dir.mkdir(parents=True)
    _manifest("web", build_dir.name, "built").write(build_dir)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_tests, args=(build_dir, 50)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    whens = [test.when for test in Manifest.read(build_dir).tests]
    assert len(whens) == len(set(whens)) == 100
    assert {p.name for p in build_dir.iterdir()} == {MANIFEST, MANIFEST + ".lock"}, "no temp file"


def test_the_suites_expect_what_the_build_recorded_not_todays_config(
    write_config: Callable[[str], Path],
) -> None:
    """Edit the config between build and test: a good image still passes."""
    config = load_config(write_config("ssh_keys: [{key}]\nadmin_user: ops\npackages: [less]\n"))
    recorded = make_manifest(
        admin_user="admin",
        authorized_keys=["ssh-ed25519 AAAArecorded build@host"],
        requested_packages=["curl", "nginx-light"],
        datasources=["ConfigDrive"],
    )
    address = SshAddress("127.0.0.1", 2222, "admin", "/k")
    context = suites.suite_context(config, "web", address, recorded)
    assert context["admin_user"] == "admin"
    assert context["authorized_keys"] == ["ssh-ed25519 AAAArecorded build@host"]
    assert context["packages"] == ["curl", "nginx-light"]
    assert context["datasources"] == ["ConfigDrive"]
    # A bare image (no build): the config is all there is (and the element's defaults).
    bare = suites.suite_context(config, "web", address)
    assert bare["admin_user"] == "ops" and "less" in bare["packages"]  # type: ignore[operator]
    assert bare["datasources"] == ["NoCloud", "ConfigDrive", "OpenStack"]


def test_manifests_validate_against_the_generated_json_schema() -> None:
    manifest = make_manifest(
        tests=[SuiteResult(when="t", passed=True, tests=3)],
        authorized_keys=["ssh-ed25519 AAAA x"],
    )
    schema = json_schema()
    assert schema["properties"]["schema_version"]["default"] == SCHEMA_VERSION
    jsonschema.validate(json.loads(manifest.model_dump_json()), schema)
    broken = {**json.loads(manifest.model_dump_json()), "status": "half"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
