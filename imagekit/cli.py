"""The `imagekit` command: a thin layer over the Python API."""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shlex
import signal
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TextIO

import openstack.config
import shtab
import yaml
from openstack.connection import Connection

from imagekit import changes, clouds, doctor, host, pipeline, processes, progress, runs, verify
from imagekit.builders import STOP_GRACE_S, dib, packer, recover_builds
from imagekit.clouds import cloud_errors, connect, delete_run_leftovers
from imagekit.config import DEFAULT_CONFIG, Config, load_config
from imagekit.devcloud import DevCloud
from imagekit.errors import ImagekitError, Interrupted, UserError
from imagekit.files import write_private
from imagekit.instances import SshAddress, factories
from imagekit.manifest import check_qcow2
from imagekit.publishing import provenance, rotation, sharing
from imagekit.publishing import publish as publishing
from imagekit.roles import ROLES, ROLES_HELP, get_role, resolve_roles
from imagekit.site import run as site_run
from imagekit.site.model import DEFAULT_SITE, load_site
from imagekit.store import Build, Store, describe
from imagekit.userdata import ROLE_VALUES, load_values, render_user_data


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every bad input."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see: {self.prog} --help)")


def _project(value: str) -> str:
    # An empty name would be looked up (or stored as a member id) as is.
    if not value.strip() or value != value.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: not a project name or id")
    return value


EXIT_STATUSES = """exit status:
  0    done
  1    a failure: a build, a suite, a cloud's error, or an internal error
  2    bad input: one line on stderr names what and where; nothing was made
  3    another imagekit run holds what this one needs (the same role's build, the pipeline)
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP): what was made was removed"""


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 up, not '{text}'")
    return int(text)


def _format_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-f",
        "--format",
        choices=["table", "json", "yaml", "value"],
        default="table",
        help="table (for people, the default); json or yaml (one document on stdout); value "
        "(the values only, a line per row, as the openstack client prints them)",
    )
    command.add_argument(
        "-c",
        "--column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="only this field (repeatable; json, yaml and value)",
    )


def _emit(document: dict[str, Any] | list[dict[str, Any]], args: argparse.Namespace) -> None:
    """A result for programs, in -f json/yaml/value, with only the -c columns if given."""
    rows = document if isinstance(document, list) else [document]
    for column in args.column:
        if rows and column not in rows[0]:
            raise UserError(f"-c {column}: no such column (choose from {', '.join(rows[0])})")
    if args.column:
        rows = [{column: row[column] for column in args.column} for row in rows]
    chosen: Any = rows if isinstance(document, list) else rows[0]
    if args.format == "json":
        print(json.dumps(chosen, indent=2))
    elif args.format == "yaml":
        print(yaml.safe_dump(chosen, sort_keys=False), end="")
    else:  # value: nested values as compact JSON
        for row in rows:
            values = [v if isinstance(v, str) else json.dumps(v) for v in row.values()]
            print(" ".join(values) if isinstance(document, list) else "\n".join(values))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imagekit",
        description="Build golden OpenStack images of the lb, web, dns and db roles.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version('imagekit')}"
    )
    # `imagekit --print-completion bash > /etc/bash_completion.d/imagekit` (or zsh, tcsh)
    shtab.add_argument_to(parser, ["--print-completion"])
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (an internal error is one line without it) and "
        "the HTTP requests to clouds (tokens hashed, passwords and user data as ***)",
    )
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument(
        "-v", "--verbose", action="store_true", help="progress: every step, not only stages"
    )
    chatter.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines: results and errors only"
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="also append what imagekit says on stderr (progress, errors) to PATH",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"configuration file (default: $IMAGEKIT_CONFIG, else ./imagekit.yaml, else "
        f"{DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    build = commands.add_parser(
        "build",
        help="build role images with diskimage-builder",
        description="Build the golden image of each ROLE (or all) into OUTPUT/ROLE/BUILD_ID/.",
    )
    build.add_argument("roles", nargs="+", metavar="ROLE", help=ROLES_HELP)
    build.add_argument(
        "--with",
        dest="builder",
        choices=["dib", "packer"],
        default="dib",
        help="diskimage-builder (default), or Packer's qemu builder on a DIB base image",
    )
    build.add_argument(
        "--cloud",
        "--os-cloud",
        metavar="NAME",
        help="with packer: build on this clouds.yaml cloud (Packer's openstack source, from "
        "the DIB base image uploaded to its Glance; servers from the config's openstack:)",
    )
    build.add_argument(
        "--base",
        type=Path,
        metavar="QCOW2",
        help="with packer: start from this image (default: the newest DIB base build)",
    )
    build.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of installing missing host packages with apt",
    )
    _format_option(build)  # json/yaml: each build made, as `builds` lists it, and its image

    test = commands.add_parser(
        "test",
        help="boot images in throwaway instances and run their role suites",
        description="Boot the latest build of each ROLE (or --image/--build) in a throwaway "
        "local qemu VM, run the role's testinfra suite over SSH, write a JUnit report beside "
        "the build, record the result in its manifest, and destroy the VM.",
    )
    test.add_argument("roles", nargs="+", metavar="ROLE", help=ROLES_HELP)
    which = test.add_mutually_exclusive_group()
    which.add_argument("--image", type=Path, metavar="PATH", help="test this qcow2 instead")
    which.add_argument("--build", metavar="ID", help="test this build id instead of the latest")
    test.add_argument(
        "--keep", action="store_true", help="leave the instance running and print how to SSH in"
    )
    test.add_argument(
        "--cloud",
        "--os-cloud",
        default=os.environ.get("OS_CLOUD"),
        metavar="NAME",
        help="boot a server on this clouds.yaml cloud instead of a local VM (default: "
        "$OS_CLOUD, else a local VM; the build's image as publish named it; settings from "
        "the config's openstack:)",
    )
    test.add_argument(
        "--local", action="store_true", help="a local qemu VM even when OS_CLOUD is set"
    )
    test.add_argument(
        "--cpus",
        type=_positive_int,
        metavar="N",
        help="the local VM's vCPUs (default: 2 where the host has two cores; the pipeline "
        "gives each test one, as a build runs beside it)",
    )
    _format_option(test)

    userdata = commands.add_parser(
        "userdata",
        help="render the cloud-init user data of one instance of a role",
        description="Render cloud-init/ROLE.yaml.j2 (plus the shared part) with the given "
        "values, validate it against cloud-init's schema, and print it (or --output FILE).",
    )
    userdata.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))
    userdata.add_argument(
        "--values",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file of variables (repeatable; later files win)",
    )
    userdata.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="assignments",
        help="one variable (repeatable; wins over --values; the value is YAML)",
    )
    userdata.add_argument("--output", type=Path, metavar="FILE", help="write here (mode 0600)")
    userdata.add_argument(
        "--list", action="store_true", help="list the role's variables and their defaults"
    )

    def cloud_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--cloud",
            "--os-cloud",  # as the openstack client names it
            default=os.environ.get("OS_CLOUD"),
            metavar="NAME",
            help="clouds.yaml entry (default: $OS_CLOUD)",
        )

    publish = commands.add_parser(
        "publish",
        help="upload tested builds to Glance, share them, rotate old images",
        description="Upload the newest tested build of each ROLE to the cloud's Glance, verify "
        "its sha512, set the conventional properties, share it with the configured projects "
        "(and --share), and rotate the role's older images.",
    )
    publish.add_argument("roles", nargs="+", metavar="ROLE", help=ROLES_HELP)
    cloud_option(publish)
    _format_option(publish)
    publish.add_argument("--build", metavar="ID", help="publish this build (one role)")
    publish.add_argument(
        "--share",
        action="append",
        default=[],
        type=_project,
        metavar="PROJECT",
        help="also share with this project (name or id; repeatable)",
    )
    publish.add_argument(
        "--force", action="store_true", help="publish even without a passing test (recorded)"
    )
    publish.add_argument(
        "--dry-run", action="store_true", help="show what would be uploaded, shared, rotated"
    )

    accept = commands.add_parser(
        "accept",
        help="accept an image shared with your project",
        description="As a member project: accept a shared image so that it lists and boots.",
    )
    accept.add_argument("image", metavar="IMAGE", help="image id, or name")
    cloud_option(accept)

    images = commands.add_parser(
        "images",
        help="list a role's published images",
        description="List the role's images in the cloud: build, date, status, members.",
    )
    images.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))
    cloud_option(images)
    _format_option(images)

    checked = commands.add_parser(
        "verify",
        help="check that a Glance image is the one imagekit built (a member can run it)",
        description="Download IMAGE (a name or an id) from the cloud, check its bytes against "
        "Glance's sha512 (os_hash_value) and the sha256 the build recorded, check its "
        "signature if it is signed, and print who built it from which commit. Exit 1 if the "
        "image is not what was published or its signature does not match.",
    )
    checked.add_argument("image", metavar="IMAGE", help="the image's name or id")
    checked.add_argument(
        "--certificate",
        type=Path,
        metavar="PEM",
        help="the signer's certificate (default: the one the image names in the cloud's key "
        "manager, which another project usually cannot read)",
    )
    cloud_option(checked)
    _format_option(checked)

    nightly = commands.add_parser(
        "pipeline",
        help="build, test, site-test, publish, share and rotate every role (the nightly job)",
        description="For each ROLE (default: all): build, test in a throwaway VM, then test "
        "the whole site with the builds that passed, publish only what passed the site test, "
        "share with the configured members, rotate old images. A failing role does not stop "
        "the others; a re-run resumes unfinished builds and publications. Exit status 0 "
        "only if every role's image was uploaded, shared and rotated in this run; a role that "
        "only finished an earlier run's build is marked 'resumed' (no new build).",
    )
    nightly.add_argument("roles", nargs="*", metavar="ROLE", help=ROLES_HELP)
    cloud_option(nightly)
    nightly.add_argument("--dry-run", action="store_true", help="print the plan only")
    nightly.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the site the tested builds must pass before they are published "
        f"(default: {DEFAULT_SITE})",
    )
    nightly.add_argument(
        "--test-jobs",
        type=int,
        default=pipeline.default_test_jobs(),
        metavar="N",
        help="throwaway VMs at once (default from this host's cores and memory: %(default)s)",
    )
    _format_option(nightly)  # json/yaml: the run's summary (as in OUTPUT/pipeline/RUN.json)

    devcloud = commands.add_parser(
        "devcloud",
        help="a local Keystone + Glance on 127.0.0.1 to try publish and share",
        description="Run a real OpenStack image service (Keystone + Glance from PyPI) on "
        "127.0.0.1 with an image-building project (cloud 'devcloud') and two other projects "
        "('devcloud-alpha', 'devcloud-beta'). 'env' prints the shell exports that use it.",
    )
    devcloud.add_argument("action", choices=["up", "down", "env", "ssh"])
    devcloud.add_argument("server", nargs="?", metavar="SERVER", help="for ssh: name or ID")
    devcloud.add_argument(
        "--as",
        dest="cloud",
        metavar="CLOUD",
        help="for env and ssh: devcloud (default), devcloud-alpha, devcloud-beta or devcloud-admin",
    )
    devcloud.add_argument(
        "--compute",
        action="store_true",
        help="for up: also Placement, Nova (libvirt) and Neutron (Open vSwitch), with a "
        "'public' network inside the network namespace 'imagekit-devcloud' (root, ~5 GB RAM)",
    )
    devcloud.add_argument(
        "--login", metavar="USER", help="for ssh: the user (default: the config's admin_user)"
    )

    site = commands.add_parser(
        "site",
        help="boot the whole site (lb, web, dns, db) from the golden images and test it",
        description="'test' boots one instance per entry of the site description from the "
        "newest tested build of its role, all at once in a network namespace of their own "
        "(or, with --cloud, as servers on that cloud) wired as the real site, runs the site "
        "suite, records the result in every build's "
        "manifest, and removes everything. 'down' removes kept sites. 'userdata' writes the "
        "user data of every instance.",
    )
    site.add_argument("action", choices=["test", "down", "userdata"])
    site.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"site description (default: {DEFAULT_SITE})",
    )
    site.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="ROLE=ID",
        dest="builds",
        help="test: use this build of a role (repeatable; default: the newest tested)",
    )
    site.add_argument(
        "--keep", action="store_true", help="test: leave the site up and print how to reach it"
    )
    site.add_argument(
        "--cloud",
        metavar="NAME",
        help="test: boot the site as servers on this cloud (clouds.yaml) from the builds' "
        "published images, wired with Neutron, instead of as local VMs",
    )
    site.add_argument(
        "--identity",
        type=Path,
        metavar="KEY",
        help="test: also prove that this private key (one of the baked keys) reaches every "
        "instance through the lb",
    )
    site.add_argument("--output", type=Path, metavar="DIR", help="userdata: write files here")
    _format_option(site)  # test, json/yaml: the site test's record and each check's outcome

    commands.add_parser(
        "cleanup",
        help="remove what crashed runs left (VMs, mounts, loop devices, uploads, servers)",
        description="Find imagekit runs that died (kill -9, out of memory, power loss) and "
        "remove what they left: qemu VMs and their temp dirs, DIB mounts and loop devices, "
        "half images (their builds are marked failed), unfinished Glance uploads and "
        "throwaway servers, keypairs and floating IPs in the clouds they used. Every "
        "command does this for the host (and its --cloud) when it starts.",
    )

    listing = commands.add_parser(
        "builds",
        help="list local builds: status, tests, site tests, publications",
        description="The builds of each ROLE (default: all) in the output directory, oldest "
        "first, as their manifests record them.",
    )
    listing.add_argument("roles", nargs="*", metavar="ROLE", help=f"{ROLES_HELP} (default)")
    _format_option(listing)

    diff = commands.add_parser(
        "diff",
        help="what changed between two builds of a role: packages (security marked), size",
        description="Packages added, removed and upgraded (old -> new, security updates "
        "marked) between two builds of ROLE, and the image's size change, as their manifests "
        "record them. Default: the two newest finished builds; OLD alone: OLD vs the newest.",
    )
    diff.add_argument("role", metavar="ROLE", help=ROLES_HELP)
    diff.add_argument("old", nargs="?", metavar="OLD", help="a build id")
    diff.add_argument("new", nargs="?", metavar="NEW", help="a build id")
    _format_option(diff)

    check = commands.add_parser(
        "doctor",
        help="check the builder host (and install what is missing)",
        description="Say what builds need that this host lacks; --fix installs it with apt.",
    )
    check.add_argument("--fix", action="store_true", help="apt-get install what is missing")
    _format_option(check)
    return parser


def _begin(config: Config, cloud: str | None = None) -> None:
    """Register this run, and remove what dead runs left on the host (and in `cloud`)."""
    runs.start(config.cache_dir)
    clouds = {cloud} if cloud else set()
    for line in _recover(config, clouds):
        print(f"imagekit: cleanup: {line}", file=sys.stderr)


def _recover(config: Config, clouds: set[str] | None) -> list[str]:
    done = runs.recover(config.cache_dir, delete_run_leftovers, clouds)
    sites = [f"removed {ns}, left by a site test that died" for ns in site_run.down_all(True)]
    return done + recover_builds(config) + sites


def _build(args: argparse.Namespace) -> int:
    roles = resolve_roles(args.roles)
    config = load_config(args.config)
    config.resolved_mirrors()  # a config problem is exit 2 before anything installs
    needs = host.BUILD_REQUIREMENTS
    if args.builder == "packer":
        needs += packer.PACKER_REQUIREMENTS
        if args.base is not None:
            check_qcow2(args.base, "--base")
        if args.base is not None and args.cloud:
            raise UserError("--base goes with a local Packer build, not --cloud")
    elif args.base is not None or args.cloud:
        raise UserError(f"{'--base' if args.base else '--cloud'} goes with --with packer")
    cloud = _cloud(args) if args.cloud else None
    _begin(config, cloud)
    installed = host.ensure_requirements(needs, install=not args.no_install)
    if installed:
        print(f"installed host packages: {' '.join(installed)}", file=sys.stderr)

    def build_one(role: str) -> Path:
        if cloud:
            return packer.build_on_cloud(config, role, cloud)
        if args.builder == "packer":
            return packer.build(config, role, args.base)
        return dib.build(config, role)

    documents, failed = [], []
    for role in roles:
        try:
            build = Build(role, build_one(role))
        except Interrupted:
            raise
        except ImagekitError as err:
            if len(roles) == 1:
                raise
            # Several roles: a failing one does not stop the others.
            print(f"imagekit: {err}", file=sys.stderr)
            failed.append(role)
            continue
        if args.format == "table":
            print(build.image)
        manifest = build.manifest()
        assert manifest.image is not None  # a finished build
        documents.append(
            {
                **dataclasses.asdict(describe(build, manifest)),
                "image": str(build.image),
                "sha256": manifest.image.sha256,
                "duration_s": manifest.duration_s,
            }
        )
    if args.format != "table":
        _emit(documents, args)
    if failed:
        raise ImagekitError(f"{len(failed)} of {len(roles)} builds failed: {', '.join(failed)}")
    return 0


def _test(args: argparse.Namespace) -> int:
    roles = resolve_roles(args.roles)
    if (args.image or args.build) and len(roles) > 1:
        raise UserError("--image and --build take exactly one role")
    if args.cloud and not args.local and args.image:  # before any cloud is asked
        raise UserError(factories.LOCAL_IMAGE_ON_CLOUD)
    config = load_config(args.config)
    cloud = _cloud(args) if args.cloud and not args.local else None
    if cloud:
        make_instance = factories.openstack_instances(config, cloud, args.keep)
    else:
        make_instance = factories.qemu_instances(config, keep=args.keep, cpus=args.cpus)
    # A bad --image/--build is exit 2 before any key, seed or VM is made.
    targets = [verify.find_target(config, role, args.image, args.build) for role in roles]
    _begin(config, cloud)
    if not cloud:
        host.ensure_requirements(host.TEST_REQUIREMENTS, install=True)

    def on_ready(address: SshAddress) -> None:
        if args.keep:
            print(f"instance up; log in with: {address.command}", file=sys.stderr)

    failed, documents = [], []
    for target in targets:
        print(f"[{target.role}] booting {target.image}", file=sys.stderr)
        with cloud_errors(cloud, "the test server") if cloud else contextlib.nullcontext():
            result = verify.test_image(config, target, make_instance, args.keep, on_ready)
        report = target.report_dir / (result.report or "-")
        build_id = target.build_dir.name if target.build_dir else None
        documents.append(
            {
                "role": target.role,
                "build_id": build_id,
                **result.model_dump(),
                "report": str(report),
            }
        )
        timings = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in result.timings.items())
        if args.format == "table":
            print(
                f"{target.role}: {'PASSED' if result.passed else 'FAILED'} "
                f"{result.tests - result.failures - result.errors - result.skipped}/"
                f"{result.tests} checks ({timings}, suite {result.suite_s:.0f}s, total "
                f"{result.total_s:.0f}s, {result.accelerator}); report: {report}"
            )
        if not result.passed:
            failed.append(target.role)
    if args.format != "table":
        _emit(documents, args)
    if failed:
        raise ImagekitError(f"suite failed for: {', '.join(failed)}")
    return 0


def _userdata(args: argparse.Namespace) -> int:
    model = ROLE_VALUES[args.role]
    if args.list and (args.values or args.assignments):
        raise UserError("--list shows the variables; it takes no --values or --set")
    if args.list:
        for name, field in model.model_fields.items():
            default = "(required)" if field.is_required() else f"default: {field.default}"
            print(f"{name:22} {default:30} {field.description or ''}")
        return 0
    config = load_config(args.config)
    values = load_values(args.role, args.values, args.assignments)
    text = render_user_data(args.role, values, config.cache_dir)
    if args.output:
        write_private(args.output, text)
    else:
        sys.stdout.write(text)
    # After the output: a refused --output stays one line.
    if values.secrets():
        print(
            f"imagekit: warning: this user data holds secrets ({', '.join(values.secrets())}): "
            "the instance's metadata service serves it to anything on the instance and to "
            "anyone with API access to the server",
            file=sys.stderr,
        )
    return 0


def _cloud(args: argparse.Namespace) -> str:
    """The cloud named by --cloud or OS_CLOUD; the local dev cloud only when named."""
    if not args.cloud:
        raise UserError("no cloud: give --cloud NAME or set OS_CLOUD (the local one: devcloud)")
    cloud = str(args.cloud)
    local = DevCloud()
    if (
        cloud.startswith("devcloud")
        and "OS_CLIENT_CONFIG_FILE" not in os.environ
        and local.clouds_yaml.is_file()
        and cloud not in openstack.config.OpenStackConfig().get_cloud_names()
    ):
        os.environ["OS_CLIENT_CONFIG_FILE"] = str(local.clouds_yaml)  # children find it too
    return cloud


def _preflight(config: Config, cloud: str, install: bool = True) -> None:
    """What a pipeline needs, checked before its first build: a typo costs seconds, not a night.

    The cloud and its members, room on disk, the host's tools for every stage
    (installed now, or named when `install` is off)."""
    conn = connect(cloud, authenticate=True)
    identity = (
        connect(config.publish.identity_cloud, authenticate=True)
        if config.publish.identity_cloud
        else conn
    )
    with cloud_errors(config.publish.identity_cloud or cloud, "resolving publish.members"):
        sharing.resolve_projects(identity, config.publish.members)
    for name, need_gib in host.DISK_NEEDS_GIB.items():
        directory: Path = getattr(config, name)
        free_gib = host.free_gib(directory)
        if free_gib < need_gib:
            raise ImagekitError(
                f"{directory}: {free_gib:.1f} GiB free, a pipeline needs at least {need_gib} GiB"
            )
    host.ensure_requirements(host.BUILD_REQUIREMENTS + host.SITE_REQUIREMENTS, install=install)


def _pipeline(args: argparse.Namespace) -> int:
    roles = resolve_roles(args.roles or ["all"])
    config = load_config(args.config)
    if args.test_jobs < 1:
        raise UserError("--test-jobs must be at least 1")
    site = args.site or DEFAULT_SITE
    load_site(site)  # a bad site description is exit 2 before the first build
    cloud = _cloud(args)
    _preflight(config, cloud, install=not args.dry_run)  # a dry run changes nothing
    run = pipeline.Pipeline(config, roles, cloud, args.test_jobs, site)
    if args.dry_run:
        print(pipeline.dry_run(run))
        return 0
    _begin(config, cloud)
    results = run.run()
    summary = config.output_dir / "pipeline" / (run.run_id + ".json")
    if args.format != "table":
        _emit(json.loads(summary.read_text()), args)
    else:
        print(pipeline.table(results))
        print(f"summary: {summary}")
    for resumed in (r for r in results if r.resumed and r.passed):
        print(
            f"imagekit: {resumed.role}: finished build {resumed.build_id} of an earlier run; "
            "no new build of it in this run",
            file=sys.stderr,
        )
    failed = [r.role for r in results if not r.passed]
    if failed:
        raise ImagekitError(f"pipeline failed for: {', '.join(failed)}")
    return 0


def _devcloud(args: argparse.Namespace) -> int:
    if args.cloud is not None and args.action not in ("env", "ssh"):
        raise UserError(f"--as goes with 'devcloud env' or 'ssh', not 'devcloud {args.action}'")
    if args.compute and args.action != "up":
        raise UserError(f"--compute goes with 'devcloud up', not 'devcloud {args.action}'")
    if args.action == "ssh" and args.server is None:
        raise UserError("'devcloud ssh' needs a SERVER (name or ID)")
    if args.action != "ssh" and (args.server is not None or args.login is not None):
        raise UserError(f"a SERVER and --login go with 'devcloud ssh', not '{args.action}'")
    local = DevCloud()
    if args.action == "up":
        started = time.monotonic()
        local.up(compute=args.compute)
        print(f"dev cloud up in {time.monotonic() - started:.0f}s; clouds: {local.clouds_yaml}")
        print('use it with: eval "$(imagekit devcloud env)"', file=sys.stderr)
    elif args.action == "down":
        local.down()
    elif args.action == "ssh":
        login = args.login or load_config(args.config).admin_user
        command = local.compute.ssh_command(args.server, args.cloud or "devcloud", login)
        print(" ".join(command), file=sys.stderr)
        os.execvp(command[0], command)
    else:
        for name, value in local.env(args.cloud or "devcloud").items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    roles = resolve_roles(args.roles)
    if args.build and len(roles) > 1:
        raise UserError("--build takes exactly one role")
    config = load_config(args.config)
    cloud = _cloud(args)
    for role in roles:  # bad input is exit 2 before anything is made or removed
        publishing.find_publishable(config, role, args.build, args.force)
    if not args.dry_run:  # a dry run changes nothing, leftovers included
        _begin(config, cloud)
    documents = []
    for role in roles:
        with cloud_errors(cloud, f"publishing '{role}'"):
            result = publishing.publish(
                config, role, cloud, args.build, args.share, args.force, args.dry_run
            )
        documents.append({"cloud": cloud, "dry_run": args.dry_run, **dataclasses.asdict(result)})
        if args.format == "table":
            _print_publication(result, role, args.dry_run)
    if args.format != "table":
        _emit(documents, args)
    return 0


def _print_publication(result: publishing.PublishResult, role: str, dry_run: bool) -> None:
    mib = result.size_bytes / 2**20
    if result.uploaded:
        rate = mib / result.upload_s if result.upload_s else 0
        what = f"uploaded {result.name} as {result.image_id} ({mib:.0f} MiB in "
        what += f"{result.upload_s:.1f}s, {rate:.0f} MiB/s, sha512 verified)"
    elif result.image_id:
        what = f"{result.name} already published as {result.image_id}: nothing uploaded"
    else:
        what = f"would upload {result.name} ({mib:.0f} MiB)"
    print(f"{role}: {what}")
    for member, status in result.members.items():
        print(f"  member {member}: {status}")
    plan = result.rotation
    verb = "would " if dry_run else ""
    print(
        f"  rotation: {verb}keep {len(plan.keep)}, {verb}hide {len(plan.hide)}"
        f"{' ' + ' '.join(plan.hide) if plan.hide else ''}, {verb}delete {len(plan.delete)}"
        f"{' ' + ' '.join(plan.delete) if plan.delete else ''}"
    )


def _accept(args: argparse.Namespace) -> int:
    cloud = _cloud(args)
    with cloud_errors(cloud, "accepting the image"):
        image_id, status = sharing.accept(connect(cloud), args.image)
    print(f"{image_id}: {status}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    found = provenance.verify_image(_cloud(args), args.image, args.certificate)
    if args.format != "table":
        _emit({**dataclasses.asdict(found), "ok": found.ok}, args)
    else:
        print(provenance.report(found))
    return 0 if found.ok else 1


def _images(args: argparse.Namespace) -> int:
    cloud = _cloud(args)
    with cloud_errors(cloud, "listing images"):
        rows = _image_rows(connect(cloud), args.role)
    if args.format != "table":
        _emit(rows, args)
        return 0
    print(f"{'build':18} {'created':20} {'status':8} {'visibility':10} {'hidden':6} members")
    for row in rows:
        listed = ", ".join(f"{m}:{s}" for m, s in row["members"].items()) or "-"
        print(
            f"{row['build']:18} {row['created']:20} {row['status']:8} {row['visibility']:10} "
            f"{'yes' if row['hidden'] else 'no':6} {listed}  {row['id']}"
            + ("  <- current" if row["current"] else "")
        )
    return 0


def _image_rows(conn: Connection, role: str) -> list[dict[str, Any]]:
    """The role's images, newest first: the current one is what members boot."""
    found = rotation.role_images(conn, role)
    current = next((i.id for i in found if i.status == "active" and not i.is_hidden), None)
    return [
        {
            "build": (image.properties or {}).get("imagekit_build_id", "?"),
            "created": image.created_at,
            "status": image.status,
            "visibility": image.visibility,
            "hidden": bool(image.is_hidden),
            "members": (
                sharing.member_status(conn, image.id) if image.visibility == "shared" else {}
            ),
            "id": image.id,
            "current": image.id == current,
        }
        for image in found
    ]


def _builds(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = Store(config.output_dir)
    rows = []
    for role in resolve_roles(args.roles or ["all"]):
        for build in store.builds(role):
            try:
                rows.append(describe(build, build.manifest()))
            except UserError as err:  # listed as unreadable: it blocks nothing else
                _say(f"imagekit: warning: {err}")
    if args.format != "table":
        _emit([dataclasses.asdict(row) for row in rows], args)
        return 0
    print(f"{'role':4} {'build':18} {'status':8} {'builder':7} {'MiB':>5} tested site  published")
    for row in rows:
        mib = str(row.size_bytes >> 20) if row.size_bytes is not None else "-"
        print(
            f"{row.role:4} {row.build_id:18} {row.status:8} {row.builder:7} {mib:>5} "
            f"{'yes' if row.tested else 'no':6} {'yes' if row.site_tested else 'no':5} "
            f"{', '.join(row.published) or '-'}"
        )
    return 0


def _diff(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    role = get_role(args.role).name
    store = Store(config.output_dir)
    finished = [build for build, m in store.readable(role) if m.status == "built"]
    if args.new:
        new = store.get(role, args.new, "NEW ")
    elif finished:
        new = finished[-1]
    else:
        raise UserError(f"no finished build of '{role}' to compare")
    if args.old:
        old = store.get(role, args.old, "OLD ")
    else:
        older = [build for build in finished if build.id < new.id]
        if not older:
            raise UserError(f"no build of '{role}' older than {new.id} to compare it with")
        old = older[-1]
    if old.id == new.id:
        raise UserError(f"OLD and NEW are the same build ({new.id}) of '{role}'")
    found = changes.compare(old.manifest(), new.manifest())
    if args.format != "table":
        _emit({**dataclasses.asdict(found), "summary": found.summary()}, args)
    else:
        print(changes.table(found))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    runs.start(config.cache_dir)
    done = _recover(config, None)  # every cloud the dead runs recorded
    for line in done:
        print(line)
    if not done:
        print("nothing left behind by earlier runs")
    # What is still there could not be removed (a cloud unreachable): not done yet.
    return 1 if runs.dead_runs(config.cache_dir) else 0


def _doctor(args: argparse.Namespace) -> int:
    found = doctor.checks(args.config)
    packages = doctor.missing_packages(found)
    if args.fix and packages:
        host.install_packages(packages)
        print(f"installed: {' '.join(packages)}")
        found = doctor.checks(args.config)
    if args.format != "table":
        _emit([dataclasses.asdict(check) for check in found], args)
    else:
        for check in found:
            print(f"{check.status:8} {check.name:18} {check.detail}")
    bad = [c for c in found if c.status in ("missing", "error")]
    if bad and not args.fix and doctor.missing_packages(found):
        _say("run 'imagekit doctor --fix' to install what is missing")
    return 1 if bad else 0


def _site(args: argparse.Namespace) -> int:
    if args.action == "down":
        for namespace in site_run.down_all():
            print(f"removed {namespace}")
        return 0
    config = load_config(args.config)
    path = args.site or DEFAULT_SITE
    described = load_site(path)
    if args.action == "userdata":
        if args.output is None:
            raise UserError("site userdata needs --output DIR")
        for file in site_run.write_user_data(config, described, args.output):
            print(file)
        return 0
    if args.identity is not None and not args.identity.is_file():
        raise UserError(f"--identity {args.identity}: no such file")
    if args.cloud is not None and config.openstack is None:
        raise UserError(f"{config.source}: openstack: section missing (needed by --cloud)")
    builds = site_run.choose_builds(config, described, site_run.parse_builds(args.builds))
    _begin(config, args.cloud)  # what a cloud site makes carries this run's id
    host.ensure_requirements(host.SITE_REQUIREMENTS, install=True)
    result = site_run.site_test(
        config, described, path, builds, args.keep, args.identity, cloud=args.cloud
    )
    if args.format == "table":
        print(site_run.summary(result))
    else:
        _emit(site_run.document(result), args)
    if args.keep:
        # With -f json, stdout holds the document alone.
        print(
            site_run.how_to_reach(result), file=sys.stdout if args.format == "table" else sys.stderr
        )
    if not result.record.passed:
        raise ImagekitError(f"site test failed; report: {result.report}")
    return 0


# A dropped SSH session (SIGHUP) stops imagekit as Ctrl-C and SIGTERM do.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _OrderlyStop:
    """The one signal handler: the first stop signal unwinds, later ones are ignored.

    The first raises KeyboardInterrupt, so every clean-up path runs (children get
    their own stop signal and their grace period); if a clean-up is already under
    way (after an error), it is held until that clean-up is over. A second or third signal must
    not interrupt that clean-up and orphan a child halfway through its own: it is
    noted, said once, and otherwise ignored.
    """

    def __init__(self) -> None:
        self.stopping: float | None = None  # when the first signal came
        self.later = 0

    def __call__(self, signum: int, frame: object) -> None:
        if self.stopping is None:
            self.stopping = time.monotonic()
            if processes.hold_stop():
                _say("imagekit: stopping once the clean-up under way is done")
                return
            raise KeyboardInterrupt
        self.later += 1
        if self.later == 1:
            _say("imagekit: still cleaning up")
        else:  # the longest a child's stop can take: a build's grace, then SIGKILL
            left = STOP_GRACE_S + processes.KILL_WAIT_S - (time.monotonic() - self.stopping)
            _say(f"imagekit: still cleaning up, at most {max(left, 0):.0f} s left")


class _Tee(io.TextIOBase):
    """stderr, and a copy of it in --log-file."""

    def __init__(self, terminal: TextIO, log: TextIO) -> None:
        self.terminal, self.log = terminal, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.terminal.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()


def _open_log(path: Path) -> TextIO:
    try:
        return path.open("a", buffering=1)  # line by line: a killed run's log is whole
    except OSError as err:
        raise UserError(f"--log-file {path}: {err.strerror}") from None


def _say(line: str) -> None:
    # After a hang-up stderr may be gone; that must not turn a clean stop into a crash.
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    handler = _OrderlyStop()
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    debug = False
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit:
            # argparse and shtab print, then exit: flush here, where a reader that went away
            # is still ours to handle.
            sys.stdout.flush()
            raise
        debug = args.debug
        if debug:
            clouds.log_http(sys.stderr)
        progress.set_verbosity(
            progress.QUIET if args.quiet else progress.VERBOSE if args.verbose else progress.NORMAL
        )
        if args.log_file is not None:
            sys.stderr = _Tee(sys.stderr, _open_log(args.log_file))
        handlers = {
            "build": _build,
            "test": _test,
            "userdata": _userdata,
            "publish": _publish,
            "accept": _accept,
            "images": _images,
            "pipeline": _pipeline,
            "devcloud": _devcloud,
            "builds": _builds,
            "diff": _diff,
            "verify": _verify,
            "cleanup": _cleanup,
            "doctor": _doctor,
            "site": _site,
        }
        status = handlers[args.command](args)
        sys.stdout.flush()
        return status
    except ImagekitError as err:
        if debug:
            traceback.print_exc()
        _say(f"imagekit: error: {err}")
        return err.exit_status
    except KeyboardInterrupt:
        _say("imagekit: interrupted")
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`imagekit builds | head`): stop quietly, and
        # let the interpreter's last flush go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as err:
        if debug:
            traceback.print_exc()
            return 1
        problem = " ".join(f"{type(err).__name__}: {err}".split())
        _say(f"imagekit: internal error: {problem} (re-run with --debug for the traceback)")
        return 1
    finally:
        runs.end()
        if handler.stopping is not None:
            # We are on our way out after a stop. While the interpreter shuts down,
            # Python's handlers are gone and a signal still arriving would kill us and turn
            # a clean 130 into death by that signal.
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        if isinstance(sys.stderr, _Tee):  # main() called in-process (tests) gets stderr back
            sys.stderr.log.close()
            sys.stderr = sys.stderr.terminal
