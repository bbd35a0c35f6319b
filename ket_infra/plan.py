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
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
class HostPort:
    """An endpoint the plan names as "host:port" (a registry, the load balancer, an NFS server...)."""

    host: str
    port: int

    @property
    def address(self) -> str | None:
        """The IPv4 address when the plan names one, else None (a DNS name)."""
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError:
            return None
        return str(addr) if addr.version == 4 else None


Registry = HostPort  # a private image registry (`docker_registry.server`, "host:port")


@dataclass(frozen=True)
class Proxy:
    """An HTTP(S) proxy the nodes use (`cluster.networking.http_proxy` or `https_proxy`)."""

    key: str  # the plan key that names it
    host: str
    ports: tuple[int, ...]  # more than one when the value names no port (clients disagree on the default)

    @property
    def address(self) -> str | None:
        return HostPort(self.host, 0).address


@dataclass(frozen=True)
class NodePort:
    """A Service the plan exposes on every kubelet node (`service_type: NodePort` or `LoadBalancer`)."""

    key: str  # the plan key that asks for it
    lo: int
    hi: int


@dataclass(frozen=True)
class Endpoints:
    """What the plan names outside the node-to-node flows, and where its pods run (PORTS.md section 8)."""

    load_balancer: HostPort | None = None  # master.load_balancer (legacy load_balanced_fqdn + ":6443")
    nfs: tuple[HostPort, ...] = ()  # nfs.nfs_volume[].nfs_host, port 2049 (NFSv4)
    proxies: tuple[Proxy, ...] = ()  # cluster.networking.http_proxy / https_proxy
    no_proxy: tuple[str, ...] = ()  # cluster.networking.no_proxy
    cloud_provider: str | None = None  # cluster.cloud_provider.provider
    heapster: bool = True  # add_ons.heapster.disable is false (KET's default)
    metrics_server: bool = True  # add_ons.metrics_server.disable is false (KET's default)
    heapster_sink: HostPort | None = None  # add_ons.heapster.options.heapster.sink outside the cluster
    sink_unmodelled: str | None = None  # a sink value naming no host:port ket-infra can read
    nodeports: tuple[NodePort, ...] = ()
    # Roles whose nodes register schedulable (workers, unless option overrides say otherwise):
    # where Deployments such as heapster and metrics-server run.
    schedulable: tuple[str, ...] = ("worker",)
    warnings: tuple[str, ...] = ()

    @property
    def pod_roles(self) -> tuple[str, ...]:
        """Roles whose nodes run pod-network pods: the schedulable ones, and ingress (its DaemonSets)."""
        return tuple(r for r in ROLES if r in self.schedulable or r == "ingress")


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
    endpoints: Endpoints = Endpoints()
    typos: tuple[str, ...] = ()  # keys KET does not know that look like one it does (warnings)
    source: bytes = dataclass_field(default=b"", repr=False, compare=False)  # the file's bytes as read

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


KET_SRC = "kismatic v1.12.0"
# pkg/install/plan_types.go:44-50 (serviceTypes, cloudProviders), checked at validate.go:248-252,332-352
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
CLOUD_PROVIDERS = (
    "aws", "azure", "cloudstack", "fake", "gce", "mesos", "openstack", "ovirt", "photon", "rackspace", "vsphere",
)  # fmt: skip
NODE_PORT_RANGE = (30000, 32767)  # Kubernetes' default --service-node-port-range; KET sets none (all.yaml:152-189)
# heapster.options.heapster.sink when the plan gives none (pkg/install/plan.go:202-204): the in-cluster InfluxDB
DEFAULT_SINK = "influxdb:http://heapster-influxdb.kube-system.svc:8086"


def _host_name_or_ip(doc: yamldoc.Doc, name: str, value: str, host: str, fix: str) -> None:
    if not host or not (_HOSTNAME.fullmatch(host) or HostPort(host, 0).address):
        doc.fail(name, f"{value!r} does not name a host", fix)


def _load_balancer(master: yamldoc.Doc) -> tuple[str | None, HostPort | None]:
    """master.load_balancer as KET reads it: "host:port", required in that form (validate.go:515-519);
    a legacy load_balanced_fqdn stands for it with port 6443 (pkg/install/plan.go:77-86)."""
    key = "load_balancer"
    value = master.text(key)
    if value is None:
        fqdn = master.text("load_balanced_fqdn")
        if fqdn is None:
            return None, None
        key, value = "load_balanced_fqdn", f"{fqdn}:6443"
    host, port = split_host_port(value)
    fix = "write the balancer's address and port, such as 10.0.1.100:6443 (KET requires host:port)"
    if port is None or not port.isdigit() or not 1 <= int(port) <= 65535:
        master.fail(key, f"{value!r} is not host:port", fix)
    _host_name_or_ip(master, key, value, host, fix)
    return value, HostPort(host, int(port))


def _proxy(networking: yamldoc.Doc, name: str) -> tuple[Proxy | None, str | None]:
    """A proxy URL (http://host:port, or host:port as KET's own tests write it) and a warning."""
    value = networking.text(name)
    if value is None:
        return None, None
    fix = "write the proxy as http://host:port"
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", value)
    scheme = match.group(1).lower() if match else None
    if scheme not in (None, "http", "https"):
        networking.fail(name, f"{value!r} is not an http or https proxy URL", fix)
    rest = value[match.end() :] if match else value
    rest = rest.split("/", 1)[0].rpartition("@")[2]  # drop a path and user:password@
    host, port = split_host_port(rest)
    _host_name_or_ip(networking, name, value, host, fix)
    key = f"cluster.networking.{name}"
    if port is None:
        # dockerd (Go) takes 80 (443 for https://); yum's libcurl 1080; apt 80: open what they dial.
        ports = (443,) if scheme == "https" else (80, 1080)
        shown = " and ".join(str(p) for p in ports)
        return Proxy(key, host, ports), (
            f"{key} {value} names no port: docker, yum and apt disagree on the default, so tcp {shown} are "
            "opened to it; write the port (http://host:port) to open only that one"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        networking.fail(name, f"{value!r} has no valid port after ':'", fix)
    return Proxy(key, host, (int(port),)), None


def _nfs(root: yamldoc.Doc) -> tuple[HostPort, ...]:
    """nfs.nfs_volume[]: nfs_host and mount_path required, the path absolute, no duplicates (validate.go:626-652)."""
    nfs = root.mapping("nfs")
    out: list[HostPort] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(nfs.seq("nfs_volume")):
        volume = nfs.item("nfs_volume", i, raw)
        host = volume.text("nfs_host", required=True)
        path = volume.text("mount_path", required=True)
        assert host is not None and path is not None
        _host_name_or_ip(volume, "nfs_host", host, host, "give the NFS server's address or DNS name")
        if not path.startswith("/"):
            volume.fail("mount_path", f"{path!r} is not an absolute path", "give the export's path, such as /exports")
        if (host, path) in seen:
            volume.fail("mount_path", f"{host}:{path} is listed twice", "list each NFS volume once")
        seen.add((host, path))
        out.append(HostPort(host, 2049))
    return tuple(dict.fromkeys(out))


def _service_type(doc: yamldoc.Doc) -> str:
    kind = doc.text("service_type", default="ClusterIP")  # pkg/install/plan.go:205-207,216-218
    assert kind is not None
    if kind not in SERVICE_TYPES:
        doc.fail("service_type", f"{kind!r} is not a Service type", f"use one of {', '.join(SERVICE_TYPES)}")
    return kind


def _node_port_range(cluster: yamldoc.Doc) -> tuple[int, int]:
    overrides = cluster.mapping("kube_apiserver").mapping("option_overrides")
    value = overrides.text("service-node-port-range")
    if value is None:
        return NODE_PORT_RANGE
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)) <= 65535:
        overrides.fail("service-node-port-range", f"{value!r} is not a port range", "write it as 30000-32767")
    return int(match.group(1)), int(match.group(2))


def _sink(heapster: yamldoc.Doc) -> tuple[HostPort | None, str | None]:
    """heapster.options.heapster.sink ("influxdb:http://host:port"): an outside host, or None in the cluster."""
    value = heapster.text("sink", default=DEFAULT_SINK)
    assert value is not None
    _kind, _, url = value.partition(":")
    parts = urlsplit(url) if re.match(r"https?://", url) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        heapster.fail("sink", f"{value!r} has no valid port", "write the sink as influxdb:http://host:port")
    host = parts.hostname if parts is not None else None
    if parts is None or not host:
        return None, value
    in_cluster = host.endswith((".svc", ".cluster.local")) or ".svc." in host
    if in_cluster or ("." not in host and HostPort(host, 0).address is None):
        return None, None  # a Service name: pod network only
    return HostPort(host, port or (443 if parts.scheme == "https" else 80)), None


def _override(doc: yamldoc.Doc) -> bool | None:
    """register-schedulable in a kubelet option_overrides mapping, when set."""
    overrides = doc.mapping("kubelet").mapping("option_overrides")
    value = overrides.raw("register-schedulable")
    if value is None:
        return None
    text = str(value).lower()
    if text not in ("true", "false"):
        overrides.fail("register-schedulable", f"{yamldoc.describe(value)} is not true or false", 'write "true"')
    return text == "true"


def _schedulable(root: yamldoc.Doc, cluster: yamldoc.Doc, nodes: tuple[Node, ...]) -> tuple[str, ...]:
    """Roles whose nodes register schedulable: workers (all.yaml:122,243), unless the cluster's or a
    node's kubelet option_overrides set register-schedulable, which KET does not protect
    (kubelet.service:9, pkg/install/kubelet_options.go:8-24). etcd-only nodes run no kubelet."""
    default = _override(cluster)
    per_node: dict[str, bool] = {}
    for role in ROLES:
        group = root.mapping(role)
        for i, raw in enumerate(group.seq("nodes")):
            entry = group.item("nodes", i, raw)
            value = _override(entry)
            if value is not None:
                per_node[str(entry.text("host"))] = per_node.get(str(entry.text("host")), False) or value
    roles: set[str] = set()
    for n in nodes:
        kubelet = n.roles & set(KUBELET_ROLES)
        chosen = per_node.get(n.host, default)
        if kubelet and (chosen if chosen is not None else "worker" in n.roles):
            roles |= {"worker"} if "worker" in n.roles else kubelet
    return tuple(r for r in ROLES if r in roles)


def _endpoints(root: yamldoc.Doc, cluster: yamldoc.Doc, nodes: tuple[Node, ...], lb: HostPort | None) -> Endpoints:
    networking = cluster.mapping("networking")
    warnings: list[str] = []
    proxies: list[Proxy] = []
    for name in ("http_proxy", "https_proxy"):
        proxy, warning = _proxy(networking, name)
        if proxy is not None:
            proxies.append(proxy)
        if warning:
            warnings.append(warning)
    no_proxy = tuple(p.strip() for p in (networking.text("no_proxy") or "").split(",") if p.strip())
    cloud = cluster.mapping("cloud_provider")
    provider = cloud.text("provider")
    if provider is not None and provider not in CLOUD_PROVIDERS:
        cloud.fail(
            "provider", f"{provider!r} is not a cloud provider KET knows", f"use one of {', '.join(CLOUD_PROVIDERS)}"
        )
    addons = root.mapping("add_ons")
    heapster_doc = addons.mapping("heapster")
    heapster = not heapster_doc.flag("disable", False)
    options = heapster_doc.mapping("options").mapping("heapster")
    node_ports = _node_port_range(cluster)
    nodeports: list[NodePort] = []
    sink, unmodelled = None, None
    if heapster:
        if _service_type(options) in ("NodePort", "LoadBalancer"):
            nodeports.append(NodePort("add_ons.heapster.options.heapster.service_type", *node_ports))
        sink, unmodelled = _sink(options)
    dashboard = addons.mapping("dashboard")
    if not dashboard.flag("disable", False):
        dash = dashboard.mapping("options")
        kind = _service_type(dash)
        text = dash.text("node_port")  # a string; '' lets Kubernetes pick one
        if text is not None and kind != "NodePort":  # validate.go:351-352
            dash.fail("node_port", f"is only used with service_type NodePort, not {kind}", "remove it")
        port = int(text) if text is not None and text.isdigit() else None
        if text is not None and (port is None or not 1 <= port <= 65535):
            dash.fail("node_port", f"{text!r} is not a port", f"use a port from {node_ports[0]} to {node_ports[1]}")
        if kind in ("NodePort", "LoadBalancer"):
            lo, hi = (port, port) if port is not None else node_ports
            nodeports.append(NodePort("add_ons.dashboard.options.service_type", lo, hi))
    return Endpoints(
        load_balancer=lb,
        nfs=_nfs(root),
        proxies=tuple(proxies),
        no_proxy=no_proxy,
        cloud_provider=provider,
        heapster=heapster,
        metrics_server=not addons.mapping("metrics_server").flag("disable", False),
        heapster_sink=sink,
        sink_unmodelled=unmodelled,
        nodeports=tuple(nodeports),
        schedulable=_schedulable(root, cluster, nodes),
        warnings=tuple(warnings),
    )


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
    "nfs": ("nfs_volume",),
    "cluster.cloud_provider": ("provider", "config"),
    "cluster.kubelet": ("option_overrides",),
    "add_ons.heapster": ("disable", "options"),
    "add_ons.heapster.options": ("heapster", "influxdb", "heapster_replicas", "influxdb_pvc_name"),
    "add_ons.heapster.options.heapster": ("replicas", "service_type", "sink"),
    "add_ons.metrics_server": ("disable",),
    "add_ons.dashboard": ("disable", "options"),
    "add_ons.dashboard.options": ("service_type", "node_port"),
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
    if "cluster" not in root.data and {"plan_file", "aws", "terraform"} & set(map(str, root.data)):
        raise PlanError(
            root.path,
            None,
            "this is a ket-infra environment file, not a KET plan file",
            f"pass it as --env (ket-infra rules --env {root.path}); its plan_file: names the plan",
        )
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
    if name.lower().startswith("sg-"):
        # the groups are named CLUSTER-GROUP, and EC2 refuses a group name starting with sg- (CreateSecurityGroup,
        # GroupName: "Can't start with sg-"; https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html)
        cluster.fail(
            "name", f"{name!r} starts with sg-, which AWS refuses in a security group name", "rename the cluster"
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
    load_balancer, lb = _load_balancer(root.mapping("master"))
    install = _install(root, cluster)
    endpoints = _endpoints(root, cluster, nodes, lb)
    return Plan(
        root.path,
        name,
        pod_cidr,
        service_cidr,
        cni,
        nodes,
        members,
        load_balancer,
        install,
        endpoints,
        _typos(root.data),
        root.source,
    )
