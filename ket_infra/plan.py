"""The KET plan file (`kismatic-cluster.yaml`) as typed, immutable data.

Validates what KET itself validates where it touches networking, with the
same defaults, for plan files of KET v1.0 to v1.12:

- no `add_ons.cni` block means Calico, in the mode of the legacy
  `cluster.networking.type` or `overlay` (KET's own migration of old plans);
- a `cni` block that is present must name its provider, and Calico its mode;
- legacy `master.load_balanced_fqdn` stands for `master.load_balancer`;
- `cluster.ssh.ssh_port` is where the installer connects (22 when absent, as
  KET's generated plans say); `cluster.disconnected_installation`,
  `cluster.disable_package_installation` (legacy `allow_package_installation:
  false`) and `docker_registry.server` (legacy `address` and `port`) decide
  where the nodes download packages and images from while KET installs;
- one host listed in several groups is one node with several roles (host,
  ip and internalip must then agree, as KET requires of "the same node").

Node addresses must be IPv4: security-group rules here are IPv4 CIDRs.

Unknown keys are ignored, as KET ignores them; one a slip away from a key KET
reads (`internal_ip` for `internalip`) is a warning. The Weave password is read
only to know that encryption is on; it is never kept.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ket_infra import yamldoc
from ket_infra.errors import PlanError

ROLES: tuple[str, ...] = ("etcd", "master", "worker", "ingress", "storage")
REQUIRED_ROLES: tuple[str, ...] = ("etcd", "master", "worker")
# Every role that runs kubelet and the CNI agent (PORTS.md "kubelet nodes").
KUBELET_ROLES: tuple[str, ...] = ("master", "worker", "ingress", "storage")

CNI_PROVIDERS: tuple[str, ...] = ("calico", "weave", "contiv", "custom")
# RFC 1123 host names (Kubernetes node names; kubelet lowercases them): labels of letters, digits, '-'.
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
CALICO_MODES: tuple[str, ...] = ("overlay", "routed")


def spans_the_internet(cidr: str) -> bool:
    """A network this wide is the world, not one someone runs (pod CIDRs and environment CIDRs alike)."""
    return ipaddress.ip_network(cidr, strict=False).prefixlen < 8


def split_host_port(value: str) -> tuple[str, str | None]:
    """ "host:port", "[v6]:port" or a bare host, split the way Go's net.SplitHostPort reads them."""
    host, sep, port = value.rpartition(":")
    if not sep or (host.startswith("[") != host.endswith("]")) or (":" in host and not host.startswith("[")):
        return value, None
    return host.strip("[]"), port


def role_key(roles: frozenset[str] | set[str]) -> tuple[int, ...]:
    """Sort key putting role sets in KET's role order."""
    return tuple(ROLES.index(r) for r in ROLES if r in roles)


def group_name(roles: frozenset[str] | set[str]) -> str:
    """The name of the group of nodes holding exactly ROLES: `etcd-master`."""
    return "-".join(r for r in ROLES if r in roles)


@dataclass(frozen=True)
class Node:
    host: str
    ip: str
    internalip: str | None
    roles: frozenset[str]

    @property
    def address(self) -> str:
        """The address other nodes use: `internalip`, else `ip` (as KET does)."""
        return self.internalip or self.ip

    @property
    def group(self) -> str:
        return group_name(self.roles)


@dataclass(frozen=True)
class Cni:
    provider: str  # calico | weave | contiv | custom
    mode: str | None  # calico only: overlay | routed
    encrypted: bool  # weave only: options.weave.password is set
    disabled: bool  # add_ons.cni.disable: no CNI is installed


@dataclass(frozen=True)
class Registry:
    """A private image registry (`docker_registry.server`, "host:port")."""

    host: str
    port: int

    @property
    def address(self) -> str | None:
        """The registry's IPv4 address when the plan names one, else None (a DNS name)."""
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError:
            return None
        return str(addr) if addr.version == 4 else None


@dataclass(frozen=True)
class Install:
    """What `kismatic install` reaches outside the cluster (plan-file-reference.md)."""

    ssh_port: int  # cluster.ssh.ssh_port
    disconnected: bool  # cluster.disconnected_installation
    packages: bool  # KET installs OS packages (not cluster.disable_package_installation)
    registry: Registry | None  # docker_registry.server


@dataclass(frozen=True)
class Plan:
    path: str
    cluster: str
    pod_cidr: str
    service_cidr: str
    cni: Cni
    nodes: tuple[Node, ...]
    # Hosts per role in the order the plan lists them (master[0], worker[0] matter).
    members: tuple[tuple[str, tuple[str, ...]], ...]
    load_balancer: str | None
    install: Install = Install(22, False, True, None)
    typos: tuple[str, ...] = ()  # keys KET does not know that look like one it does (warnings)

    def hosts(self, role: str) -> tuple[str, ...]:
        return dict(self.members).get(role, ())

    def node(self, host: str) -> Node:
        for n in self.nodes:
            if n.host == host:
                return n
        raise KeyError(host)

    def first(self, role: str) -> Node | None:
        hosts = self.hosts(role)
        return self.node(hosts[0]) if hosts else None


def _cidr(doc: yamldoc.Doc, name: str) -> str:
    value = doc.text(name)
    if value is None:
        doc.fail(name, "is required", "set it to an IPv4 CIDR such as 172.16.0.0/16")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        doc.fail(name, f"{value!r} is not a valid CIDR", "use a CIDR such as 172.16.0.0/16")
    if net.version != 4:
        doc.fail(name, f"{value!r} is not an IPv4 CIDR", "KET clusters use IPv4; use a CIDR such as 172.16.0.0/16")
    if spans_the_internet(str(net)):
        # Calico routed mode opens all protocols from the pod CIDR: never the internet.
        doc.fail(
            name, f"{value!r} spans the internet, not a cluster network", "use a private range such as 172.16.0.0/16"
        )
    return str(net)


def _ip(doc: yamldoc.Doc, name: str, required: bool) -> str | None:
    value = doc.text(name)
    if value is None:
        if required:
            doc.fail(name, "is required", "set the node's IP address")
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        doc.fail(name, f"{value!r} is not a valid IP address", "use an IPv4 address such as 10.0.1.10")
    if addr.version != 4:
        doc.fail(name, f"{value!r} is not an IPv4 address", "use an IPv4 address such as 10.0.1.10")
    return str(addr)


def _cni(root: yamldoc.Doc, cluster: yamldoc.Doc) -> Cni:
    addons = root.mapping("add_ons")
    networking = cluster.mapping("networking")
    if not addons.has("cni"):
        # KET's migration of plans older than v1.5: Calico in the legacy mode.
        legacy_type = networking.text("type")
        if legacy_type is not None and legacy_type not in CALICO_MODES:
            networking.fail("type", f"{legacy_type!r} is not a valid networking type", "use overlay or routed")
        return Cni("calico", legacy_type or "overlay", False, False)
    cni = addons.mapping("cni")
    disabled = cni.flag("disable", False)
    provider = cni.text("provider")
    options = cni.mapping("options", secret=True)  # where the Weave password is: no value below is shown
    if disabled:
        return Cni(provider or "none", None, False, True)
    if provider is None:
        cni.fail("provider", "is required when add_ons.cni is present", f"use one of {', '.join(CNI_PROVIDERS)}")
    if provider not in CNI_PROVIDERS:
        cni.fail("provider", f"{provider!r} is not a valid CNI provider", f"use one of {', '.join(CNI_PROVIDERS)}")
    mode = None
    encrypted = False
    if provider == "calico":
        calico = options.mapping("calico")
        mode = calico.text("mode")
        if mode is None:
            calico.fail("mode", "is required for the calico provider", "use overlay or routed")
        if mode not in CALICO_MODES:
            calico.fail("mode", f"{mode!r} is not a valid Calico mode", "use overlay or routed")
    if provider == "weave":
        weave = options.mapping("weave")
        secret = weave.raw("password")  # never shown: not in errors, not kept
        if isinstance(secret, (dict, list, set, frozenset)):
            weave.fail("password", "must be a single value (not shown here)", "write the password as a quoted string")
        encrypted = secret is not None and secret not in ("", b"")
    return Cni(provider, mode, encrypted, False)


def _weave_password(data: Mapping[Any, Any]) -> str | None:
    """add_ons.cni.options.weave.password as text, when it is one value; only to keep it out of other keys."""
    section: Any = data
    for key in ("add_ons", "cni", "options", "weave"):
        section = section.get(key) if isinstance(section, dict) else None
    secret = section.get("password") if isinstance(section, dict) else None
    if secret is None or isinstance(secret, (dict, list, set, frozenset)) or yamldoc.is_huge(secret):
        return None
    return str(secret).strip() or None


def _group(root: yamldoc.Doc, role: str) -> list[tuple[str, str, str | None, str]]:
    """The (host, ip, internalip, key path) of each node of ROLE, checked."""
    group = root.mapping(role)
    nodes = group.seq("nodes")
    required = role in REQUIRED_ROLES
    if required and not nodes:
        group.fail("nodes", "at least one node is required", f"list the {role} nodes")
    expected = group.integer("expected_count")
    if required and (expected is None or expected <= 0):
        group.fail(
            "expected_count",
            "is required and must be greater than 0",
            f"set it to {len(nodes)}, the number of {role} nodes listed",
        )
    if expected is not None and expected != len(nodes) and (nodes or expected > 0):
        group.fail(
            "expected_count",
            f"is {expected} but {len(nodes)} node(s) are listed",
            "make expected_count match the nodes listed",
        )
    out = []
    for i, raw in enumerate(nodes):
        node = group.item("nodes", i, raw)
        host = node.text("host")
        if host is None:
            node.fail("host", "is required", "set the node's hostname")
        if not _HOSTNAME.fullmatch(host) or len(host) > 253:
            node.fail(
                "host",
                f"{yamldoc.describe(host)} is not a valid host name",
                "Kubernetes names nodes after it: use letters, digits and '-', in '.'-separated labels of at "
                "most 63 that start and end with a letter or digit (RFC 1123)",
            )
        ip = _ip(node, "ip", required=True)
        assert ip is not None
        out.append((host, ip, _ip(node, "internalip", required=False), node.prefix))
    return out


def _merge_nodes(path: str, listed: dict[str, list[tuple[str, str, str | None, str]]]) -> tuple[Node, ...]:
    by_host: dict[str, tuple[str, str | None, str, set[str]]] = {}
    for role in ROLES:
        for host, ip, internalip, key in listed[role]:
            if host in by_host:
                ip0, internal0, key0, roles = by_host[host]
                if (ip, internalip) != (ip0, internal0):
                    raise PlanError(
                        path,
                        key,
                        f"host {host!r} is also listed at {key0} with different addresses "
                        f"(ip {ip0}, internalip {internal0 or 'unset'})",
                        "one host is one node: give it the same ip and internalip in every group",
                    )
                roles.add(role)
            else:
                by_host[host] = (ip, internalip, key, {role})
    # An address names one node, whichever field holds it: another node's internalip equal to
    # this one's ip would make the two indistinguishable to every rule and to discovery.
    seen: dict[str, tuple[str, str, str]] = {}
    for host, (ip, internalip, key, _roles) in by_host.items():
        for field, value in (("ip", ip), ("internalip", internalip)):
            if value is None:
                continue
            other = seen.get(value)
            if other is not None and other[0] != host:
                raise PlanError(
                    path,
                    f"{key}.{field}",
                    f"{value} is also the {other[2]} of host {other[0]!r} ({other[1]})",
                    "two different nodes cannot share an address: fix the address or use the same host name",
                )
            seen[value] = (host, key, field)
    return tuple(Node(h, ip, internal, frozenset(roles)) for h, (ip, internal, _k, roles) in by_host.items())


def _host_port(doc: yamldoc.Doc, name: str, value: str, default_port: int) -> tuple[str, int]:
    host, port = split_host_port(value)
    if port is None:
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        doc.fail(name, f"{value!r} has no valid port after ':'", "write host:port with a port from 1 to 65535")
    return host, int(port)


def _install(root: yamldoc.Doc, cluster: yamldoc.Doc) -> Install:
    ssh = cluster.mapping("ssh")
    ssh_port = ssh.integer("ssh_port", default=22)
    assert ssh_port is not None
    if not 1 <= ssh_port <= 65535:
        ssh.fail("ssh_port", f"{ssh_port} is not a port", "use the port sshd listens on (1-65535), usually 22")
    # KET's migration (pkg/install/plan.go): a legacy allow_package_installation wins over disable_...
    packages = not cluster.flag("disable_package_installation", False)
    if cluster.has("allow_package_installation"):
        packages = cluster.flag("allow_package_installation", True)
    registry_doc = root.mapping("docker_registry")
    server = registry_doc.text("server")
    registry = None
    if server:
        host, port = _host_port(registry_doc, "server", server, 443)
        registry = Registry(host, port)
    else:
        # KET's migration of plans older than v1.7: address and port stand for server.
        address = registry_doc.text("address")
        legacy_port = registry_doc.integer("port")
        if address and legacy_port:
            if not 1 <= legacy_port <= 65535:
                registry_doc.fail("port", f"{legacy_port} is not a port", "use the registry's port (1-65535)")
            registry = Registry(address, legacy_port)
    return Install(ssh_port, cluster.flag("disconnected_installation", False), packages, registry)


# The keys of a KET v1.12 plan in the sections ket-infra reads (apprenda/kismatic
# pkg/install/plan_types.go at v1.12.0: a field without a yaml tag is its name in lower case).
_GROUP_KEYS = ("expected_count", "nodes")
PLAN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("cluster", "docker", "docker_registry", "additional_files", "add_ons", "features", "nfs", *ROLES),
    "cluster": (
        "name", "version", "admin_password", "disable_package_installation", "allow_package_installation",
        "disconnected_installation", "networking", "certificates", "ssh", "kube_apiserver",
        "kube_controller_manager", "kube_scheduler", "kube_proxy", "kubelet", "cloud_provider",
    ),
    "cluster.networking": (
        "type", "pod_cidr_block", "service_cidr_block", "update_hosts_files", "http_proxy", "https_proxy", "no_proxy",
    ),
    "cluster.ssh": ("user", "ssh_key", "ssh_port"),
    "docker_registry": ("server", "address", "port", "CA", "username", "password"),
    "add_ons": ("cni", "dns", "heapster", "metrics_server", "dashboard", "package_manager", "rescheduler"),
    "add_ons.cni": ("disable", "provider", "options"),
    "add_ons.cni.options": ("portmap", "calico", "weave"),
    "add_ons.cni.options.calico": ("mode", "log_level", "workload_mtu", "felix_input_mtu", "ip_autodetection_method"),
    "add_ons.cni.options.weave": ("password",),
    "master": ("load_balancer", "load_balanced_fqdn", "load_balanced_short_name", *_GROUP_KEYS),
    **{role: _GROUP_KEYS for role in ROLES if role != "master"},
}  # fmt: skip
NODE_KEYS = ("host", "ip", "internalip", "labels", "taints", "kubelet")


def _typos(data: object) -> tuple[str, ...]:
    """Keys KET would ignore that are one slip from a key it reads: their values are not used, so say so."""
    out: list[str] = []

    def check(where: str, section: object, known: tuple[str, ...]) -> None:
        if not isinstance(section, dict):
            return
        for key in section:
            if isinstance(key, str) and key not in known:
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
                if near:
                    path = f"{where}.{key}" if where else key
                    out.append(
                        f"plan key {path} is not one KET knows, so KET and ket-infra ignore its value; "
                        f"did you mean {near[0]}?"
                    )

    for where, known in PLAN_KEYS.items():
        section: object = data
        for part in where.split(".") if where else ():
            section = section.get(part) if isinstance(section, dict) else None
        check(where, section, known)
    for role in ROLES:
        group = data.get(role) if isinstance(data, dict) else None
        nodes = group.get("nodes") if isinstance(group, dict) else None
        for i, entry in enumerate(nodes if isinstance(nodes, list) else []):
            check(f"{role}.nodes[{i}]", entry, NODE_KEYS)
    return tuple(out)


def load_plan(path: str | Path) -> Plan:
    """Load and validate the KET plan file at PATH; raises PlanError."""
    root = yamldoc.load(Path(path), PlanError, "KET plan file")
    cluster = root.mapping("cluster")
    name = cluster.text("name", default="kubernetes")
    assert name is not None
    if name == _weave_password(root.data):
        # the name is in every group, tag and output: the password pasted here would be shown everywhere
        cluster.fail(
            "name",
            "is the Weave password (add_ons.cni.options.weave.password; not shown here)",
            "give the cluster its own name",
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        cluster.fail(
            "name", f"{name!r} cannot name security groups", "use letters, digits, '.', '_' and '-' (at most 63)"
        )
    networking = cluster.mapping("networking")
    pod_cidr = _cidr(networking, "pod_cidr_block")
    service_cidr = _cidr(networking, "service_cidr_block")
    cni = _cni(root, cluster)
    listed = {role: _group(root, role) for role in ROLES}
    nodes = _merge_nodes(root.path, listed)
    pods = ipaddress.ip_network(pod_cidr)
    if pods.overlaps(ipaddress.ip_network(service_cidr)):
        networking.fail(
            "service_cidr_block",
            f"{service_cidr} overlaps the pod CIDR {pod_cidr}",
            "pods and services need separate ranges: choose a service CIDR outside pod_cidr_block",
        )
    for n in nodes:
        if ipaddress.ip_address(n.address) in pods:
            networking.fail(
                "pod_cidr_block",
                f"{pod_cidr} contains the address {n.address} of node {n.host!r}",
                "pods and nodes must not share addresses: choose a pod CIDR outside the node network",
            )
    members = tuple((role, tuple(dict.fromkeys(h for h, *_ in listed[role]))) for role in ROLES)
    master = root.mapping("master")
    load_balancer = master.text("load_balancer") or master.text("load_balanced_fqdn")
    install = _install(root, cluster)
    return Plan(root.path, name, pod_cidr, service_cidr, cni, nodes, members, load_balancer, install, _typos(root.data))
