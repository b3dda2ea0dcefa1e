"""Placement, Nova and Neutron beside the dev cloud's Keystone + Glance (`devcloud up --compute`).

A complete small OpenStack on one host: Nova on libvirt (qemu/TCG, KVM only
where it really works), Neutron ML2/OVS on Open vSwitch's userspace datapath
(this kind of host has no kernel OVS), MariaDB and RabbitMQ, every daemon
started by us in its own process group (PID 1 need not be systemd). The
"public" provider network lives only inside a network namespace that we make,
wired to br-ex by a veth; nothing has an address in the root namespace and
nothing routes out. Floating IPs are reached with `ip netns exec`.

The first setup syncs the databases (~40 s); a copy of MariaDB's data dir
taken then (the snapshot) makes later starts warm. Every start is a fresh
cloud: servers, networks and ports of a previous run are gone.
"""

import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystoneauth1.exceptions import ClientException
from openstack.exceptions import SDKException

from imagekit.daemons import Daemon, port_is_free, uwsgi_command
from imagekit.errors import ImagekitError, UserError, one_line
from imagekit.files import remove_path, write_private
from imagekit.host import free_ports, install_packages, kvm_usable
from imagekit.mirrors import host_debian_mirrors
from imagekit.processes import stop_groups

if TYPE_CHECKING:
    from imagekit.devcloud import DevCloud

# One release series with keystone 30 / glance 33; nova 35 drops Debian 12's libvirt and QEMU.
COMPUTE_PINS = (
    "nova==34.0.0",
    "neutron==29.0.0",
    "openstack-placement==16.0.0",
    "PyMySQL==1.2.4",
    "libvirt-python==12.8.0",
)
APT_PACKAGES = (
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "libvirt-dev",  # libvirt-python builds against it
    "pkg-config",
    "openvswitch-switch",
    "genisoimage",
    "dnsmasq-base",
    "dnsmasq-utils",
    "iptables",
    "haproxy",
    "conntrack",
    "ipset",
    "iputils-arping",
    "iputils-ping",
    "netcat-openbsd",  # ssh's ProxyCommand into the namespace
    "ethtool",  # the agents turn offloads off on their veths
    "rabbitmq-server",
    "mariadb-server",
    "qemu-system-x86",
    "qemu-utils",
)
# Bump when the setup changes, so that older snapshots are not restored.
SETUP_VERSION = 1
HOST = "imagekit-devcloud"  # Nova's and Neutron's host: port binding needs the same name
REGION = "RegionOne"
APIS = {
    "placement": ("placement.wsgi.api:application", "placement", ""),
    "nova": ("nova.wsgi.osapi_compute:application", "compute", "v2.1"),
    "neutron": ("neutron.wsgi.api:application", "network", ""),
}
DATABASES = ("placement", "nova_api", "nova_cell0", "nova", "neutron")
OVS_RUN = Path("/var/run/openvswitch")
OVSDB = f"unix:{OVS_RUN}/db.sock"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
# libvirt kept re-probing QEMU while /dev/kvm belonged to another group (boots of
# 70-80 s); without cgroup controllers guests stay out of libvirt's /machine cgroups.
QEMU_CONF_LINES = 'user = "root"\ngroup = "root"\ncgroup_controllers = [ ]\n'
LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
LIBVIRT = "qemu:///system"

# The provider network: addresses only inside PUBLIC_NS (documentation range, RFC 5737).
PUBLIC_NS = "imagekit-devcloud"
PUBLIC_NETWORK = "public"
PUBLIC_CIDR = "203.0.113.0/24"
PUBLIC_GATEWAY = "203.0.113.1"
VETH_BRIDGE, VETH_NS = "ikdc-br-ex", "ikdc-public"
# Debian's archive for servers (builds on the cloud): an HTTP proxy on the gateway address.
APT_PROXY_PORT = 3142
APT_PROXY = f"http://{PUBLIC_GATEWAY}:{APT_PROXY_PORT}"
# What test servers use, found by name (the config's `openstack:` section).
NETWORK, SUBNET, ROUTER = "imagekit-net", "imagekit-subnet", "imagekit-router"
SECURITY_GROUP = "imagekit"
OPEN_PORTS = (22, 80, 443)
PROJECT_SUBNETS = {"images": "10.20.0.0/24", "alpha": "10.21.0.0/24"}
# The site's private network (second NICs of test servers): no gateway, no DHCP.
PRIVATE_NETWORK, PRIVATE_CIDR = "imagekit-private", "10.12.0.0/16"
FLAVORS = {"imagekit.small": (1, 1024, 4), "imagekit.tiny": (1, 640, 4)}  # vCPUs, MiB, GB
# Neutron's own namespaces (DHCP servers and routers) on this host.
NEUTRON_NAMESPACES = ("qdhcp-", "qrouter-")
AGENTS = ("neutron-openvswitch-agent", "neutron-dhcp-agent", "neutron-l3-agent")
READY_TIMEOUT = 300.0

AUTH = """\
auth_url = http://127.0.0.1:{keystone_port}
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
region_name = RegionOne
username = {user}
password = {password}
"""

PLACEMENT_CONF = """\
[placement_database]
connection = {db_placement}
[api]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{keystone_port}
{auth_placement}"""

NOVA_CONF = """\
[DEFAULT]
host = {host}
my_ip = 127.0.0.1
state_path = {state}/nova
transport_url = {transport_url}
compute_driver = libvirt.LibvirtDriver
# Guests get keys and user data from a config drive: no metadata service.
force_config_drive = True
mkisofs_cmd = genisoimage
[wsgi]
api_paste_config = {etc}/nova/api-paste.ini
[api]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{keystone_port}
{auth_nova}
[placement]
{auth_nova}
[neutron]
{auth_nova}
[service_user]
send_service_user_token = True
{auth_nova}
[libvirt]
virt_type = {virt_type}
cpu_mode = {cpu_mode}
[vnc]
enabled = False
[scheduler]
discover_hosts_in_cells_interval = 5
[oslo_concurrency]
lock_path = {state}/nova/lock
[oslo_messaging_notifications]
driver = noop
[os_vif_ovs]
ovsdb_connection = {ovsdb}
# The venv's privsep-helper, as root without sudo (its secure_path hides the venv).
[workarounds]
disable_rootwrap = True
[nova_sys_admin]
helper_command = {privsep}
[privsep_osbrick]
helper_command = {privsep}
[vif_plug_ovs_privileged]
helper_command = {privsep}
[vif_plug_linux_bridge_privileged]
helper_command = {privsep}
"""
# nova-compute gets no database access (as in devstack): only the others do.
NOVA_DATABASES = """\
[api_database]
connection = {db_nova_api}
[database]
connection = {db_nova}
"""

NEUTRON_CONF = """\
[DEFAULT]
host = {host}
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = {transport_url}
state_path = {state}/neutron
api_paste_config = {etc}/neutron/api-paste.ini
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
notify_nova_on_port_status_changes = True
notify_nova_on_port_data_changes = True
interface_driver = openvswitch
ovs_use_veth = True
# Config drives carry what a metadata service would.
enable_isolated_metadata = False
enable_metadata_proxy = False
[database]
connection = {db_neutron}
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{keystone_port}
{auth_neutron}
[nova]
{auth_neutron}
[oslo_concurrency]
lock_path = {state}/neutron/lock
[agent]
root_helper = env PATH={venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin
tunnel_types = vxlan
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1:1000
[ovs]
# No kernel datapath here: Open vSwitch's userspace one.
datapath_type = netdev
bridge_mappings = public:br-ex
local_ip = 127.0.0.1
ovsdb_connection = {ovsdb}
[securitygroup]
firewall_driver = openvswitch
"""

RABBITMQ_CONF = """\
listeners.tcp.default = 127.0.0.1:{port}
default_user = openstack
default_pass = {password}
"""


class ComputeCloud:
    """The compute half of a DevCloud; its state lives in state_dir/compute."""

    def __init__(self, base: "DevCloud") -> None:
        self.base = base
        self.dir = base.state_dir / "compute"
        self.etc = self.dir / "etc"
        self.logs = base.logs
        self.snapshot = self.dir / "snapshot"
        self.socket = self.dir / "run" / "mysqld.sock"
        self.host_backup = self.dir / "host-backup"

    # -- the life cycle ---------------------------------------------------------

    def check_host(self) -> None:
        """Root and the host packages: what `up` needs before anything else."""
        if os.geteuid() != 0:
            raise UserError("devcloud --compute needs root (libvirt, Open vSwitch, namespaces)")
        install_packages(missing_packages(APT_PACKAGES))

    def is_up(self) -> bool:
        return all(daemon.pid() is not None for daemon in self.daemons()) and self._ready()

    def up(self, fresh: bool = False) -> None:
        """Start on the running Keystone + Glance; base.up() calls this under its lock."""
        self.down()
        # libvirtd, Open vSwitch and the namespace are the host's: one compute cloud at a time.
        for socket_path in (LIBVIRT_SOCKET, OVS_RUN / "db.sock"):
            if socket_path.exists():
                raise ImagekitError(f"dev cloud: {socket_path} exists: libvirtd or OVS runs")
        for path in ("nova", "neutron", "rabbitmq", "run"):
            shutil.rmtree(self.dir / path, ignore_errors=True)
            (self.dir / path).mkdir(parents=True)
        (self.dir / "nova" / "instances").mkdir()
        warm = not fresh and self._restore()
        if not warm:
            self._prepare()
        self._write_config()
        self._patch_host()
        for name in ("mariadb", "rabbitmq"):
            self._start(name)
        self._wait_for(self.socket.exists, "mariadb")
        self._wait_for(lambda: _listening(self._ports()["rabbitmq"]), "rabbitmq")
        self._setup_ovs()
        self._start("apt-proxy")
        self._wait_for(_apt_proxy_answers, "apt-proxy")
        self._start("libvirtd")
        self._wait_for(LIBVIRT_SOCKET.exists, "libvirtd")
        if not warm:
            self._sync_databases()
        self._register()
        for name in APIS:
            self._start(name)
        # Nova's services exit when Placement does not answer yet.
        for name, port in self._ports().items():
            if name in APIS:
                self._wait_for(functools.partial(_answers, port), name)
        for name in self._services()[len(APIS) :]:
            if name == AGENTS[0]:
                # Agents whose first RPC call times out wait a minute before the next:
                # the RPC server has had the nova services' start-up to get ready.
                self._wait_for(self._compute_up, "nova-compute", READY_TIMEOUT)
            self._start(name)
        self._wait_ready()
        self._create_resources()

    def down(self) -> None:
        """Stop guests, services, OVS, libvirt, MQ and DB in order; remove what we made."""
        if not (self.dir / "run").is_dir():
            return  # not started (up makes run/, down removes it last)
        self._remove_guests()
        services = [self._daemon(name).pid() for name in self._services()]
        stop_groups([pid for pid in services if pid is not None])
        for name in self._services():
            self._daemon(name).pid_file.unlink(missing_ok=True)
        self._daemon("apt-proxy").stop()
        for namespace in _namespaces():
            if namespace.startswith(NEUTRON_NAMESPACES) or namespace == PUBLIC_NS:
                _delete_namespace(namespace)
        # The kernel destroys a deleted namespace (and the veth ends in it) later, on
        # its own time: delete our end of the public veth now, which takes both.
        subprocess.run(["ip", "link", "delete", VETH_BRIDGE], capture_output=True, check=False)
        self._daemon("libvirtd").stop()
        self._daemon("virtlogd").stop()
        self._delete_bridges()
        for name in ("ovs-vswitchd", "ovsdb-server", "rabbitmq"):
            self._daemon(name).stop()
        self._stop_epmd()
        self._daemon("mariadb").stop(timeout=60)  # a clean shutdown keeps the data dir whole
        (self.dir / "ovs" / "conf.db").unlink(missing_ok=True)
        # Created by ovsdb-server; empty once it stopped.
        with contextlib.suppress(OSError):
            OVS_RUN.rmdir()
        self._restore_host()
        shutil.rmtree(self.dir / "run")

    def ssh_command(self, server: str, cloud: str, user: str) -> list[str]:
        """ssh to a server's floating IP, from inside the public network's namespace."""
        conn = self.base.connect(cloud)
        try:
            found = conn.compute.find_server(server)
            if found is None:
                raise UserError(f"no server {server!r} in cloud {cloud}")
            addresses = [
                address["addr"]
                for network in (found.addresses or {}).values()
                for address in network
                if address.get("OS-EXT-IPS:type") == "floating"
            ]
        except (SDKException, ClientException) as error:
            raise ImagekitError(f"dev cloud: {one_line(error)}") from None
        finally:
            conn.close()
        if not addresses:
            raise UserError(f"server {server!r} has no floating IP")
        return [
            *("ip", "netns", "exec", PUBLIC_NS, "ssh"),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            f"{user}@{addresses[0]}",
        ]

    # -- set-up -----------------------------------------------------------------

    def _prepare(self) -> None:
        """A new installation: passwords, ports and an empty MariaDB data dir."""
        for entry in ("mysql", "secrets.json", "ports.json", "snapshot"):
            remove_path(self.dir / entry)
        users = ("placement", "nova", "neutron", "db", "rabbitmq")
        write_private(
            self.dir / "secrets.json",
            json.dumps({user: secrets.token_urlsafe(16) for user in users}),
        )
        names = ("placement", "nova", "neutron", "rabbitmq", "rabbitmq-dist", "epmd")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        (self.dir / "ports.json").write_text(json.dumps(ports))
        (self.dir / "mysql").mkdir()
        install_db = ["mariadb-install-db", "--no-defaults", f"--datadir={self.dir / 'mysql'}"]
        install_db += ["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"]
        self.base.run(install_db, "mariadb-install-db", self.logs / "compute-setup.log")

    def _sync_databases(self) -> None:
        log = self.logs / "compute-setup.log"
        password = self._secrets()["db"]
        sql = "".join(f"CREATE DATABASE {db};\n" for db in DATABASES)
        sql += f"CREATE USER 'openstack'@'localhost' IDENTIFIED BY '{password}';\n"
        sql += "".join(f"GRANT ALL ON {db}.* TO 'openstack'@'localhost';\n" for db in DATABASES)
        self._sql(sql, log)
        bin_dir = self.base.venv / "bin"
        nova = [str(bin_dir / "nova-manage"), "--config-file", str(self.etc / "nova" / "nova.conf")]
        for command in (
            [
                str(bin_dir / "placement-manage"),
                *("--config-file", str(self.etc / "placement" / "placement.conf")),
                *("db", "sync"),
            ],
            [*nova, "api_db", "sync"],
            [*nova, "cell_v2", "map_cell0"],
            [*nova, "cell_v2", "create_cell", "--name", "cell1"],
            [*nova, "db", "sync"],
            [
                str(bin_dir / "neutron-db-manage"),
                *("--config-file", str(self.etc / "neutron" / "neutron.conf")),
                *("upgrade", "heads"),
            ],
        ):
            self.base.run(command, f"{Path(command[0]).name} {' '.join(command[-2:])}", log)
        # MariaDB stopped, so that its data dir is consistent on disk.
        self._daemon("mariadb").stop(timeout=60)
        remove_path(self.snapshot)
        partial = self.dir / "snapshot.partial"
        remove_path(partial)
        partial.mkdir()
        shutil.copytree(self.dir / "mysql", partial / "mysql", symlinks=True)
        for entry in ("secrets.json", "ports.json"):
            shutil.copy2(self.dir / entry, partial / entry)
        (partial / "stamp").write_text(self._stamp())
        partial.rename(self.snapshot)
        self._start("mariadb")
        self._wait_for(self.socket.exists, "mariadb")

    def _stamp(self) -> str:
        return json.dumps(
            {"pins": COMPUTE_PINS, "setup": SETUP_VERSION, "dir": str(self.dir)}, sort_keys=True
        )

    def _restore(self) -> bool:
        """Put the snapshot's data dir back; False when there is none or its ports are taken."""
        stamp = self.snapshot / "stamp"
        if not stamp.exists() or stamp.read_text() != self._stamp():
            return False
        ports = json.loads((self.snapshot / "ports.json").read_text())
        if not all(port_is_free(port) for port in ports.values()):
            return False
        for entry in ("mysql", "secrets.json", "ports.json"):
            remove_path(self.dir / entry)
        shutil.copytree(self.snapshot / "mysql", self.dir / "mysql", symlinks=True)
        for entry in ("secrets.json", "ports.json"):
            shutil.copy2(self.snapshot / entry, self.dir / entry)
        return True

    def _write_config(self) -> None:
        ports, passwords = self._ports(), self._secrets()
        keystone_port = json.loads((self.base.state_dir / "ports.json").read_text())["keystone"]
        venv = self.base.venv

        def auth(user: str) -> str:
            return AUTH.format(keystone_port=keystone_port, user=user, password=passwords[user])

        kvm = kvm_usable()
        values = {
            "host": HOST,
            "state": self.dir,
            "etc": self.etc,
            "venv": venv,
            **{f"db_{name}": self._db_url(name) for name in DATABASES},
            "ovsdb": OVSDB,
            "keystone_port": keystone_port,
            "transport_url": (
                f"rabbit://openstack:{passwords['rabbitmq']}@127.0.0.1:{ports['rabbitmq']}/"
            ),
            "auth_placement": auth("placement"),
            "auth_nova": auth("nova"),
            "auth_neutron": auth("neutron"),
            "virt_type": "kvm" if kvm else "qemu",
            "cpu_mode": "host-model" if kvm else "none",
        }
        for directory in ("nova", "neutron", "placement"):
            (self.etc / directory).mkdir(parents=True, exist_ok=True)
        compute_conf = self.etc / "nova" / "nova-compute.conf"
        values["privsep"] = f"{venv}/bin/privsep-helper --config-file {compute_conf}"
        nova = NOVA_CONF.format(**values)
        write_private(self.etc / "nova" / "nova.conf", nova + NOVA_DATABASES.format(**values))
        write_private(compute_conf, nova)
        write_private(self.etc / "placement" / "placement.conf", PLACEMENT_CONF.format(**values))
        write_private(self.etc / "neutron" / "neutron.conf", NEUTRON_CONF.format(**values))
        for project in ("nova", "neutron"):
            shutil.copy(venv / "etc" / project / "api-paste.ini", self.etc / project)
        rabbit = RABBITMQ_CONF.format(port=ports["rabbitmq"], password=passwords["rabbitmq"])
        write_private(self.dir / "rabbitmq" / "rabbitmq.conf", rabbit)
        (self.dir / "rabbitmq" / "enabled_plugins").write_text("[].\n")

    def _patch_host(self) -> None:
        """Our lines in libvirt's qemu.conf, the original kept to be put back by down()."""
        self._restore_host()  # a crashed run's change first
        self.host_backup.mkdir(parents=True, exist_ok=True)
        original = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
        (self.host_backup / "qemu.conf").write_text(original)
        QEMU_CONF.write_text(original + "# imagekit devcloud (removed by devcloud down)\n")
        with QEMU_CONF.open("a") as conf:
            conf.write(QEMU_CONF_LINES)

    def _restore_host(self) -> None:
        backup = self.host_backup / "qemu.conf"
        if backup.exists():
            shutil.copy(backup, QEMU_CONF)
            backup.unlink()

    def _setup_ovs(self) -> None:
        ovs_dir = self.dir / "ovs"
        ovs_dir.mkdir(exist_ok=True)
        schema = "/usr/share/openvswitch/vswitch.ovsschema"
        self._host_run(["ovsdb-tool", "create", str(ovs_dir / "conf.db"), schema])
        self._start("ovsdb-server")
        self._wait_for(lambda: (OVS_RUN / "db.sock").exists(), "ovsdb-server")
        # Without TSO the userspace datapath left guests' TCP checksums wrong: SSH timed out.
        self._vsctl("--no-wait", "init")
        self._vsctl(
            "--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true"
        )
        self._start("ovs-vswitchd")
        self._vsctl(
            "--timeout=30",
            "add-br",
            "br-ex",
            "--",
            "set",
            "bridge",
            "br-ex",
            "datapath_type=netdev",
        )
        # The public side: a veth from br-ex into our namespace, which holds the gateway address.
        self._host_run(["ip", "netns", "add", PUBLIC_NS])
        self._host_run(
            [
                "ip",
                "link",
                "add",
                VETH_BRIDGE,
                "type",
                "veth",
                "peer",
                "name",
                VETH_NS,
                "netns",
                PUBLIC_NS,
            ]
        )
        self._vsctl("--timeout=30", "add-port", "br-ex", VETH_BRIDGE)
        for device in ("br-ex", VETH_BRIDGE):  # not even a link-local address outside
            Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6").write_text("1\n")
        for command in (
            # No segmentation offloads on the public veth: Open vSwitch's userspace datapath
            # drops the large segments they make (TCP into servers crawled, 2/3 resent).
            ["ethtool", "-K", VETH_BRIDGE, "tso", "off", "gso", "off", "gro", "off"],
            [
                *("ip", "netns", "exec", PUBLIC_NS, "ethtool", "-K", VETH_NS),
                *("tso", "off", "gso", "off", "gro", "off"),
            ],
            ["ip", "link", "set", VETH_BRIDGE, "up"],
            ["ip", "link", "set", "br-ex", "up"],
            ["ip", "netns", "exec", PUBLIC_NS, "ip", "link", "set", "lo", "up"],
            ["ip", "netns", "exec", PUBLIC_NS, "ip", "link", "set", VETH_NS, "up"],
            [
                "ip",
                "netns",
                "exec",
                PUBLIC_NS,
                "ip",
                "address",
                "add",
                f"{PUBLIC_GATEWAY}/24",
                "dev",
                VETH_NS,
            ],
        ):
            self._host_run(command)

    def _delete_bridges(self) -> None:
        """br-ex, br-int, br-tun: the userspace datapath leaves their taps behind otherwise."""
        if self._daemon("ovs-vswitchd").pid() is None:
            return
        ovs = ["ovs-vsctl", f"--db={OVSDB}", "--timeout=10"]
        listed = subprocess.run([*ovs, "list-br"], capture_output=True, text=True, check=False)
        for bridge in listed.stdout.split():
            subprocess.run(
                [*ovs, "--if-exists", "del-br", bridge], capture_output=True, check=False
            )

    def _register(self) -> None:
        """Service users, services and endpoints in Keystone (restored without them)."""
        ports, passwords = self._ports(), self._secrets()
        conn = self.base.connect("devcloud-admin")
        identity: Any = conn.identity
        try:
            service_project = identity.find_project("service", ignore_missing=False)
            admin = identity.find_role("admin", ignore_missing=False)
            # Tokens that services send on behalf of users need the `service` role
            # (keystonemiddleware rejects them otherwise: 401 from Neutron to Nova).
            service_role = identity.find_role("service") or identity.create_role(name="service")
            for name, (_, kind, path) in APIS.items():
                user = identity.find_user(name) or identity.create_user(
                    name=name, password=passwords[name], domain_id="default"
                )
                for role in (admin, service_role):
                    identity.assign_project_role_to_user(service_project, user, role)
                service = identity.find_service(name) or identity.create_service(
                    name=name, type=kind
                )
                url = f"http://127.0.0.1:{ports[name]}" + (f"/{path}" if path else "")
                for interface in ("public", "internal"):
                    identity.create_endpoint(
                        service_id=service.id, interface=interface, url=url, region_id=REGION
                    )
        except (SDKException, ClientException) as error:
            raise ImagekitError(f"dev cloud: compute accounts failed ({one_line(error)})") from None
        finally:
            conn.close()

    def _create_resources(self) -> None:
        """Flavors, the public network, and per test project networks, a router and a group."""
        conn = self.base.connect("devcloud-admin")
        try:
            for name, (vcpus, ram, disk) in FLAVORS.items():
                conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk)
            public = conn.network.create_network(
                name=PUBLIC_NETWORK,
                is_router_external=True,
                provider_network_type="flat",
                provider_physical_network="public",
            )
            conn.network.create_subnet(
                network_id=public.id,
                name=f"{PUBLIC_NETWORK}-subnet",
                ip_version=4,
                cidr=PUBLIC_CIDR,
                gateway_ip=PUBLIC_GATEWAY,
                allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.250"}],
                is_dhcp_enabled=False,
            )
            identity: Any = conn.identity
            for project_name, cidr in PROJECT_SUBNETS.items():
                project = identity.find_project(project_name, ignore_missing=False).id
                network = conn.network.create_network(name=NETWORK, project_id=project)
                subnet = conn.network.create_subnet(
                    network_id=network.id,
                    name=SUBNET,
                    ip_version=4,
                    cidr=cidr,
                    project_id=project,
                )
                router = conn.network.create_router(
                    name=ROUTER,
                    project_id=project,
                    external_gateway_info={"network_id": public.id},
                )
                conn.network.add_interface_to_router(router, subnet=subnet.id)
                private = conn.network.create_network(name=PRIVATE_NETWORK, project_id=project)
                conn.network.create_subnet(
                    network_id=private.id,
                    name=f"{PRIVATE_NETWORK}-subnet",
                    ip_version=4,
                    cidr=PRIVATE_CIDR,
                    gateway_ip=None,
                    is_dhcp_enabled=False,
                    project_id=project,
                )
                group = conn.network.create_security_group(name=SECURITY_GROUP, project_id=project)
                for port in OPEN_PORTS:
                    conn.network.create_security_group_rule(
                        security_group_id=group.id,
                        direction="ingress",
                        ethertype="IPv4",
                        protocol="tcp",
                        port_range_min=port,
                        port_range_max=port,
                        remote_ip_prefix="0.0.0.0/0",
                        project_id=project,
                    )
                conn.network.create_security_group_rule(
                    security_group_id=group.id,
                    direction="ingress",
                    ethertype="IPv4",
                    protocol="icmp",
                    remote_ip_prefix="0.0.0.0/0",
                    project_id=project,
                )
        except (SDKException, ClientException) as error:
            raise ImagekitError(
                f"dev cloud: compute resources failed ({one_line(error)})"
            ) from None
        finally:
            conn.close()

    # -- daemons ------------------------------------------------------------------

    def _services(self) -> list[str]:
        """OpenStack's services, in start order (stopped all at once)."""
        return [
            *APIS,
            "neutron-rpc-server",
            "neutron-periodic-workers",
            "nova-conductor",
            "nova-scheduler",
            "nova-compute",
            *AGENTS,
        ]

    def daemons(self) -> list[Daemon]:
        names = ["mariadb", "rabbitmq", "ovsdb-server", "ovs-vswitchd", "apt-proxy"]
        names += ["virtlogd", "libvirtd"]
        return [self._daemon(name) for name in names + self._services()]

    def _daemon(self, name: str) -> Daemon:
        return Daemon(name, self._command(name), self.dir / "run", self.logs)

    def _command(self, name: str) -> list[str]:
        bin_dir, etc = self.base.venv / "bin", self.etc
        if name in APIS:
            if not (self.dir / "ports.json").exists():
                return []
            return uwsgi_command(self.base.venv, self._ports()[name], APIS[name][0])
        if name.startswith("nova-"):
            conf = "nova-compute.conf" if name == "nova-compute" else "nova.conf"
            return [str(bin_dir / name), "--config-file", str(etc / "nova" / conf)]
        if name.startswith("neutron-"):
            return [str(bin_dir / name), "--config-file", str(etc / "neutron" / "neutron.conf")]
        mysql = self.dir / "mysql"
        return {
            "mariadb": [
                "mariadbd",
                "--no-defaults",
                f"--datadir={mysql}",
                f"--socket={self.socket}",
                "--skip-networking",  # a socket only: nothing listens on any address
                "--user=root",
                f"--pid-file={self.dir / 'run' / 'mysqld.pid'}",
                "--max-connections=1000",
                "--innodb-buffer-pool-size=64M",
            ],
            "rabbitmq": ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
            "ovsdb-server": [
                "ovsdb-server",
                str(self.dir / "ovs" / "conf.db"),
                f"--remote=punix:{OVS_RUN}/db.sock",
            ],
            "ovs-vswitchd": ["ovs-vswitchd", OVSDB],
            "apt-proxy": [
                *(sys.executable, "-m", "imagekit.devcloud.aptproxy", PUBLIC_NS, PUBLIC_GATEWAY),
                str(APT_PROXY_PORT),
                *mirror_hosts(),
            ],
            "virtlogd": ["virtlogd"],
            "libvirtd": ["libvirtd"],
        }[name]

    def _start(self, name: str) -> None:
        if name == "libvirtd":
            self._daemon("virtlogd").start(self._env(), self.dir)
        if name == "ovsdb-server":
            OVS_RUN.mkdir(parents=True, exist_ok=True)
        self._daemon(name).start(self._env(), self.dir)

    def _env(self) -> dict[str, str]:
        rabbit = self.dir / "rabbitmq"
        ports = self._ports() if (self.dir / "ports.json").exists() else {}
        env = self.base.process_env()
        env.update(
            {
                "OS_PLACEMENT_CONFIG_DIR": str(self.etc / "placement"),
                "OS_NOVA_CONFIG_DIR": str(self.etc / "nova"),
                "OS_NEUTRON_CONFIG_DIR": str(self.etc / "neutron"),
                "OS_NEUTRON_CONFIG_FILES": "neutron.conf",  # not also plugins/ml2/ml2_conf.ini
                # RabbitMQ and Erlang's port mapper: our files, our ports, loopback only.
                "HOME": str(rabbit),
                "RABBITMQ_NODENAME": "imagekit@localhost",
                "RABBITMQ_CONFIG_FILE": str(rabbit / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(rabbit / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
                "RABBITMQ_LOG_BASE": str(rabbit / "log"),
                "RABBITMQ_PID_FILE": str(rabbit / "rabbitmq.pid"),
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_DIST_PORT": str(ports.get("rabbitmq-dist", "")),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_EPMD_PORT": str(ports.get("epmd", "")),
            }
        )
        return env

    def _stop_epmd(self) -> None:
        """Erlang starts its port mapper as a daemon of its own: ours runs on our port."""
        if (self.dir / "ports.json").exists():
            subprocess.run(["epmd", "-kill"], env=self._env(), capture_output=True, check=False)

    def _remove_guests(self) -> None:
        """Nova's libvirt guests (instance-*), destroyed and undefined."""
        if self._daemon("libvirtd").pid() is None:
            return
        listed = subprocess.run(
            ["virsh", "-c", LIBVIRT, "list", "--all", "--name"],
            capture_output=True,
            text=True,
            check=False,
        )
        for name in listed.stdout.split():
            if name.startswith("instance-"):
                for action in ("destroy", "undefine"):
                    subprocess.run(
                        ["virsh", "-c", LIBVIRT, action, name], capture_output=True, check=False
                    )

    # -- readiness -------------------------------------------------------------------

    def _compute_up(self) -> bool:
        try:
            conn = self.base.connect("devcloud-admin", timeout=10)
            try:
                return any(
                    s.binary == "nova-compute" and s.state == "up" for s in conn.compute.services()
                )
            finally:
                conn.close()
        except (SDKException, ClientException, OSError):
            return False

    def _ready(self) -> bool:
        """nova-compute is up and a hypervisor found; the three Neutron agents are alive."""
        try:
            conn = self.base.connect("devcloud-admin", timeout=10)
            try:
                services = [s for s in conn.compute.services() if s.binary == "nova-compute"]
                hypervisors = list(conn.compute.hypervisors())
                agents = list(conn.network.agents())
            finally:
                conn.close()
        except (SDKException, ClientException, OSError):
            return False
        return (
            any(s.state == "up" for s in services)
            and bool(hypervisors)
            and len(agents) >= 3
            and all(agent.is_alive for agent in agents)
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready():
            for daemon in self.daemons():
                if daemon.pid() is None:
                    raise ImagekitError(
                        f"dev cloud: {daemon.name} exited while starting; see {daemon.log}"
                    )
            if time.monotonic() > deadline:
                raise ImagekitError(
                    f"dev cloud: compute not ready after {READY_TIMEOUT:.0f} s; see {self.logs}"
                )
            time.sleep(1)

    def _wait_for(self, ready: Callable[[], bool], name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            daemon = self._daemon(name)
            if daemon.pid() is None:
                raise ImagekitError(f"dev cloud: {name} exited while starting; see {daemon.log}")
            if time.monotonic() > deadline:
                raise ImagekitError(f"dev cloud: {name} not ready after {timeout:.0f} s")
            time.sleep(0.2)

    # -- small helpers ---------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        return dict(json.loads((self.dir / "ports.json").read_text()))

    def _secrets(self) -> dict[str, str]:
        return dict(json.loads((self.dir / "secrets.json").read_text()))

    def _db_url(self, database: str) -> str:
        password = self._secrets()["db"]
        return (
            f"mysql+pymysql://openstack:{password}@localhost/{database}?unix_socket={self.socket}"
        )

    def _sql(self, sql: str, log: Path) -> None:
        command = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root"]
        result = subprocess.run(command, input=sql, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            with log.open("a") as out:
                out.write(result.stderr)
            raise ImagekitError(f"dev cloud: creating the databases failed; see {log}")

    def _vsctl(self, *args: str) -> None:
        self._host_run(["ovs-vsctl", f"--db={OVSDB}", *args])

    def _host_run(self, command: list[str]) -> None:
        self.base.run(command, " ".join(command[:3]), self.logs / "compute-host.log")


def _apt_proxy_answers() -> bool:
    """The apt proxy accepts connections where the servers reach it (in our namespace)."""
    probe = f"import socket; socket.create_connection(({PUBLIC_GATEWAY!r}, {APT_PROXY_PORT}), 2)"
    inside = ["ip", "netns", "exec", PUBLIC_NS, sys.executable, "-c", probe]
    return subprocess.run(inside, capture_output=True, check=False).returncode == 0


def mirror_hosts() -> list[str]:
    """The hosts of the Debian mirrors in the host's own apt sources (the apt proxy's)."""
    urls = [url for url in host_debian_mirrors() if url]
    return sorted({host for url in urls if (host := urllib.parse.urlsplit(url).hostname)})


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """Which of these Debian packages are not installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")
    }
    return [package for package in packages if package not in installed]


def _namespaces() -> list[str]:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _delete_namespace(namespace: str) -> None:
    """Stop what runs in it (dnsmasq, ...), then delete it: its veths go with it."""
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 15)
    subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)


def _answers(port: int) -> bool:
    """An HTTP server answers on 127.0.0.1:port (any status)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
