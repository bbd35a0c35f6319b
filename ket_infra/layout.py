"""Turn role flows into security groups and rules.

One group per distinct role set found in the plan (a node that is etcd and
master gets the group `etcd-master`), so every node interface gets exactly
one ket-infra group. Sources are group references, never node IPs, so the
rule count does not grow with the node count. Ports that overlap or touch
merge into one range per (group, direction, peer, protocol). Rule names are
derived from their content, so Terraform addresses never shift.

Every ingress rule between groups has its egress twin on the source group:
ket-infra's groups carry explicit egress for exactly the cluster's flows.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ket_infra import cni_facts
from ket_infra import flows as catalog
from ket_infra.errors import QuotaError
from ket_infra.flows import Flow
from ket_infra.plan import KUBELET_ROLES, Cni, Plan, group_name, role_key, spans_the_internet

if TYPE_CHECKING:
    from ket_infra.environment import Environment

CONTIV_LIMIT = (
    "Contiv on KET v1.12.0 may not complete: the networking etcd health check runs docker without an image "
    "(kismatic v1.12.0 ansible/roles/etcd/tasks/main.yaml:48-54), and KET's Contiv integration tests are "
    "commented out (integration-tests/install_test.go:413-464)"
)
RULE_QUOTA = 60  # inbound (and, separately, outbound) rules per security group
RULE_WARN = 50  # leave headroom for the user's own rules
_PROTO_ORDER = {"tcp": 0, "udp": 1, "icmp": 2}


# Every warning's id, as an environment file's `acknowledge` list names them (README "Warnings").
WARNING_IDS = (
    "aws-api-unset", "aws-lb-group-tag", "calico-routed-subnet", "cni-disabled", "contiv-limit", "contiv-preview",
    "custom-cni-no-rules", "egress-cidrs-unset", "glusterfs-nolock", "heapster-sink-dns-name",
    "heapster-sink-unreadable", "ingress-cidrs-unset", "installer-cidr-unset", "load-balancer-dns-name",
    "load-balancer-port", "load-balancer-public-ip", "near-rule-quota", "nfs-dns-name", "nfs-v3", "no-proxy-hosts",
    "nodeport-cidrs-unset", "plan-key-typo", "pod-cidr-public", "preflight-open", "proxy-dns-name", "proxy-no-port",
    "registry-dns-name", "weave-multicast", "weave-unencrypted", "world-open",
)  # fmt: skip


class Warn(str):
    """A layout warning: its text (what every output shows) with a stable ID, by which an environment
    file's `acknowledge` list silences it. A str, so JSON and every reader take it as the text it is."""

    id: str

    def __new__(cls, id: str, text: str) -> Warn:
        assert id in WARNING_IDS, id
        out = super().__new__(cls, text)
        out.id = id
        return out

    def __reduce__(self) -> tuple[type[Warn], tuple[str, str]]:
        return (Warn, (self.id, str(self)))

    def shown(self) -> str:
        """The warning as a line says it, its id last as compilers name theirs: `... [preflight-open]`."""
        return f"{self} [{self.id}]"


def _add(out: list[str], id: str, text: str) -> None:
    out.append(Warn(id, text))


def warning_id(text: str) -> str:
    """TEXT's id when it is a Warn, else "other"."""
    return text.id if isinstance(text, Warn) else "other"


@dataclass(frozen=True)
class Group:
    name: str
    roles: tuple[str, ...]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Peer:
    """The other end of a rule: exactly one of a group and a CIDR."""

    group: str | None = None
    cidr: str | None = None

    @property
    def label(self) -> str:
        return self.group if self.group is not None else str(self.cidr).replace("/", "-")

    def as_json(self) -> dict[str, str]:
        return {"group": self.group} if self.group is not None else {"cidr": str(self.cidr)}


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    direction: str  # ingress | egress
    protocol: str
    from_port: int | None
    to_port: int | None
    peer: Peer  # ingress: the source; egress: the destination
    purposes: tuple[str, ...]
    required_by: tuple[str, ...]
    citations: tuple[str, ...]
    flows: tuple[str, ...]

    @property
    def purpose(self) -> str:
        return "; ".join(self.purposes)

    @property
    def ports(self) -> str:
        if self.from_port is None:
            return "all" if self.protocol == "all" else "-"
        if self.protocol == "icmp":
            return f"type {self.from_port}" + (f" code {self.to_port}" if self.to_port not in (None, -1) else "")
        if self.from_port == self.to_port:
            return str(self.from_port)
        return f"{self.from_port}-{self.to_port}"


@dataclass(frozen=True)
class HostSetting:
    group: str
    source_dest_check: bool
    reason: str


@dataclass(frozen=True)
class RuleSet:
    cluster: str
    cni: Cni
    groups: tuple[Group, ...]
    rules: tuple[Rule, ...]
    host_settings: tuple[HostSetting, ...]
    warnings: tuple[str, ...]
    acknowledged: tuple[str, ...] = ()  # warnings the environment file acknowledges by id (shown as such)

    def without(self, warning_ids: set[str]) -> RuleSet:
        """The same rules, less the warnings whose id is in WARNING_IDS (what turned out not to apply)."""
        kept = tuple(w for w in self.warnings if warning_id(w) not in warning_ids)
        return replace(self, warnings=kept)


@dataclass(frozen=True)
class _Atom:
    group: str
    direction: str
    peer: Peer
    protocol: str
    lo: int | None
    hi: int | None
    flow: Flow


def groups_of(plan: Plan) -> tuple[Group, ...]:
    by_roles: dict[frozenset[str], list[str]] = defaultdict(list)
    for node in plan.nodes:
        by_roles[node.roles].append(node.host)
    ordered = sorted(by_roles, key=role_key)
    return tuple(
        Group(group_name(r), tuple(sorted(r, key=lambda x: role_key({x}))), tuple(by_roles[r])) for r in ordered
    )


def cidr_sources(flow: Flow, plan: Plan, env: Environment | None) -> list[tuple[str, str | None]]:
    """(CIDR, group that sends from it, if a ket-infra group) for a CIDR flow."""
    kind = flow.src_cidr
    if kind == catalog.POD_CIDR:
        return [(plan.pod_cidr, None)]
    if kind == catalog.PREFLIGHT:
        out: list[tuple[str, str | None]] = []
        for role in ("master", "worker"):
            node = plan.first(role)
            if node is not None and all(c != f"{node.address}/32" for c, _ in out):
                out.append((f"{node.address}/32", node.group))
        return out
    if kind == catalog.INSTALLER:
        return [(env.installer_cidr, None)] if env is not None and env.installer_cidr else []
    if kind == catalog.INGRESS_CLIENTS:
        return [(c, None) for c in (env.ingress_cidrs if env is not None else ())]
    if kind == catalog.API_CLIENTS:
        return [(c, None) for c in (env.api_cidrs if env is not None else ())]
    if kind == catalog.NODEPORT_CLIENTS:
        return [(c, None) for c in (env.nodeport_cidrs if env is not None else ())]
    if kind == catalog.LOAD_BALANCER:
        return [(c, None) for c in endpoint_cidrs(kind, plan, env)]
    assert kind is not None
    return [(kind, None)]  # a literal CIDR from the environment's extra_rules


def cidr_destinations(flow: Flow, plan: Plan, env: Environment | None) -> list[str]:
    """The CIDRs an outbound flow goes to; empty when the environment names none."""
    egress = list(env.egress_cidrs) if env is not None else []
    if flow.dst_cidr == catalog.REGISTRY:
        registry = plan.install.registry
        address = registry.address if registry is not None else None
        return [f"{address}/32"] if address is not None else egress
    if flow.dst_cidr == catalog.EGRESS:
        return egress
    if flow.dst_cidr in ENDPOINT_ENV:
        return endpoint_cidrs(flow.dst_cidr, plan, env)
    raise ValueError(f"flow {flow.name}: unknown destination {flow.dst_cidr!r}")


# Where the environment names each endpoint kind's addresses when the plan gives a DNS name (or nothing).
ENDPOINT_ENV = {
    catalog.LOAD_BALANCER: "endpoint_cidrs.load_balancer",
    catalog.NFS: "endpoint_cidrs.nfs",
    catalog.HTTP_PROXY: "endpoint_cidrs.proxy",
    catalog.HTTPS_PROXY: "endpoint_cidrs.proxy",
    catalog.AWS_API: "endpoint_cidrs.aws_api",
    catalog.HEAPSTER_SINK: "endpoint_cidrs.heapster_sink",
}
_FALLS_BACK_TO_EGRESS = (catalog.HTTP_PROXY, catalog.HTTPS_PROXY, catalog.AWS_API)


def endpoint_cidrs(kind: str, plan: Plan, env: Environment | None) -> list[str]:
    """The CIDRs of an endpoint the plan names: its /32 when it is an IPv4 address, else the environment's."""
    ep = plan.endpoints
    hosts: list[str | None] = []
    if kind == catalog.LOAD_BALANCER and ep.load_balancer is not None:
        hosts = [ep.load_balancer.address]
    elif kind == catalog.NFS:
        hosts = [v.address for v in ep.nfs if catalog.node_at(plan, v.host) is None]
    elif kind in (catalog.HTTP_PROXY, catalog.HTTPS_PROXY):
        hosts = [p.address for p in ep.proxies if p.key.endswith("." + kind)]
    elif kind == catalog.HEAPSTER_SINK and ep.heapster_sink is not None:
        hosts = [ep.heapster_sink.address]
    elif kind == catalog.AWS_API:
        hosts = [None]
    out = [f"{h}/32" for h in hosts if h is not None]
    if any(h is None for h in hosts) and env is not None:
        named = env.endpoint(ENDPOINT_ENV[kind].partition(".")[2])
        out += named or (env.egress_cidrs if kind in _FALLS_BACK_TO_EGRESS else ())
    return list(dict.fromkeys(out))


def _atoms(flow: Flow, groups: tuple[Group, ...], plan: Plan, env: Environment | None) -> list[_Atom]:
    lo, hi = flow.ports if flow.ports is not None else (None, None)
    targets = [g for g in groups if set(g.roles) & set(flow.to)]
    out: list[_Atom] = []

    def add(group: str, direction: str, peer: Peer) -> None:
        out.append(_Atom(group, direction, peer, flow.protocol, lo, hi, flow))

    if flow.dst_cidr is not None:
        for cidr in cidr_destinations(flow, plan, env):
            for s in groups:
                if set(s.roles) & set(flow.src):
                    add(s.name, "egress", Peer(cidr=cidr))
        return out
    if flow.src:
        sources = [g for g in groups if set(g.roles) & set(flow.src)]
        for t in targets:
            for s in sources:
                add(t.name, "ingress", Peer(group=s.name))
                add(s.name, "egress", Peer(group=t.name))
        return out
    for cidr, sender in cidr_sources(flow, plan, env):
        for t in targets:
            add(t.name, "ingress", Peer(cidr=cidr))
            if sender is not None:
                add(sender, "egress", Peer(group=t.name))
            elif flow.src_cidr == catalog.POD_CIDR:
                # Pods on these nodes send to pods elsewhere: the pod CIDR is the destination.
                add(t.name, "egress", Peer(cidr=cidr))
    return out


def _rule_name(group: str, direction: str, protocol: str, lo: int | None, hi: int | None, peer: Peer) -> str:
    proto = protocol if protocol in ("tcp", "udp", "icmp", "all") else f"proto{protocol}"
    ports = "" if lo is None else (f"-{lo}" if lo == hi else f"-{lo}-{hi}")
    if protocol == "icmp" and lo is not None:
        ports = f"-type{lo}" + (f"-code{hi}" if hi not in (None, -1) else "")
    way = "from" if direction == "ingress" else "to"
    short = "in" if direction == "ingress" else "out"
    return f"{group}-{short}-{proto}{ports}-{way}-{peer.label}"


def _merge(atoms: list[_Atom]) -> list[Rule]:
    buckets: dict[tuple[str, str, Peer, str], list[_Atom]] = defaultdict(list)
    for a in atoms:
        buckets[(a.group, a.direction, a.peer, a.protocol)].append(a)
    rules: list[Rule] = []
    for (group, direction, peer, protocol), items in buckets.items():
        runs: list[tuple[int | None, int | None, list[Flow]]] = []
        mergeable = protocol in ("tcp", "udp")
        for a in sorted(items, key=lambda x: (x.lo if x.lo is not None else -2, x.hi if x.hi is not None else -2)):
            if runs:
                lo, hi, fl = runs[-1]
                same = (a.lo, a.hi) == (lo, hi)
                touches = mergeable and lo is not None and hi is not None and a.lo is not None and a.lo <= hi + 1
                if same or touches:
                    new_hi = max(hi, a.hi) if hi is not None and a.hi is not None else hi
                    runs[-1] = (lo, new_hi, [*fl, a.flow])
                    continue
            runs.append((a.lo, a.hi, [a.flow]))
        for lo, hi, fl in runs:
            uniq = list({f.name: f for f in fl}.values())
            rules.append(
                Rule(
                    name=_rule_name(group, direction, protocol, lo, hi, peer),
                    group=group,
                    direction=direction,
                    protocol=protocol,
                    from_port=lo,
                    to_port=hi,
                    peer=peer,
                    purposes=tuple(dict.fromkeys(f.purpose for f in uniq)),
                    required_by=tuple(dict.fromkeys(f.required_by for f in uniq)),
                    citations=tuple(dict.fromkeys(f.source for f in uniq)),
                    flows=tuple(f.name for f in uniq),
                )
            )
    return rules


def _warnings(plan: Plan, env: Environment | None, groups: tuple[Group, ...]) -> list[str]:
    cni = plan.cni
    out: list[str] = [Warn("plan-key-typo", t) for t in plan.typos]
    if cni.disabled:
        _add(out, "cni-disabled", "add_ons.cni.disable is true: no CNI is installed, so no CNI flows are opened")
    elif cni.provider == "calico" and cni.mode == "routed":
        _add(
            out,
            "calico-routed-subnet",
            "Calico routed mode: on AWS all kubelet nodes must share one subnet (the VPC router knows no pod "
            "routes) and need the source/destination check off; across subnets use mode overlay (IP-in-IP)",
        )
    elif cni.provider == "weave":
        _add(
            out,
            "weave-multicast",
            "Weave: an AWS VPC has no native multicast; Weave carries multicast inside its overlay, so "
            "nothing is opened for it",
        )
        if not cni.encrypted:
            _add(
                out,
                "weave-unencrypted",
                "Weave without options.weave.password: pod traffic between nodes is not encrypted",
            )
    elif cni.provider == "contiv":
        _add(out, "contiv-preview", cni_facts.CONTIV)
        _add(out, "contiv-limit", CONTIV_LIMIT)
    elif cni.provider == "custom" and not (env is not None and env.extra_flows):
        _add(
            out,
            "custom-cni-no-rules",
            "CNI provider custom: ket-infra knows no ports for it and the environment file has no "
            "extra_rules; add the CNI's flows to extra_rules or its traffic will be blocked",
        )
    if ipaddress.ip_network(plan.pod_cidr).is_global:
        _add(
            out,
            "pod-cidr-public",
            f"cluster.networking.pod_cidr_block {plan.pod_cidr} is public address space: pods would take addresses "
            "that belong to someone on the internet, and the rules trust it as the pod network; use a private "
            "range such as 172.16.0.0/16",
        )
    if env is None or env.installer_cidr is None:
        _add(
            out,
            "installer-cidr-unset",
            f"installer_cidr is not set: nothing opens SSH (tcp {plan.install.ssh_port}) for the installer; "
            "set it in the environment file",
        )
    names = {f.name for f in catalog.required_flows(plan, env)}
    if names & {"downloads-http", "downloads-https", "registry"}:
        out.extend(_download_warnings(plan, env))
    lb = load_balancer_warning(plan, env)
    if lb:
        out.append(lb)
    out.extend(_endpoint_warnings(plan, env, names))
    if (env is None or env.preflight) and (plan.first("master") or plan.first("worker")):
        _add(
            out,
            "preflight-open",
            "preflight rules (kismatic-inspector from master[0] and worker[0]) are open; set preflight: false "
            "in the environment file once the cluster is installed",
        )
    if any("ingress" in g.roles for g in groups) and not (env is not None and env.ingress_cidrs):
        _add(
            out,
            "ingress-cidrs-unset",
            "ingress nodes exist but ingress_cidrs is empty: nothing outside the cluster can reach 80/443",
        )
    return out


def _download_warnings(plan: Plan, env: Environment | None) -> list[str]:
    install = plan.install
    out: list[str] = []
    if env is not None and env.egress_cidrs:
        return out
    registry = install.registry
    if not install.disconnected:
        _add(
            out,
            "egress-cidrs-unset",
            "egress_cidrs is not set: nothing opens outbound tcp 80/443 for `kismatic install` to reach package "
            "repositories and image registries (cluster.disconnected_installation is false); set egress_cidrs to "
            "your NAT or proxy, your mirrors, or 0.0.0.0/0, unless another group already allows it (verify checks)",
        )
    elif install.packages:
        _add(
            out,
            "egress-cidrs-unset",
            "egress_cidrs is not set: nothing opens outbound tcp 80/443 to the internal package repositories a "
            "disconnected install uses; set egress_cidrs to their addresses",
        )
    if registry is not None and registry.address is None:
        _add(
            out,
            "registry-dns-name",
            f"docker_registry.server {registry.host}:{registry.port} is a DNS name: ket-infra cannot tell its "
            "address; set egress_cidrs to the registry's addresses",
        )
    return out


def load_balancer_warning(plan: Plan, env: Environment | None) -> str | None:
    """What master.load_balancer's rules cannot cover, said where it matters."""
    lb = plan.endpoints.load_balancer
    if lb is None:
        return None
    value = f"{lb.host}:{lb.port}"
    master = catalog.lb_master(plan)
    if master is not None:
        if lb.port != 6443:
            return Warn(
                "load-balancer-port",
                f"master.load_balancer {value} names master {master.host}, where kube-apiserver listens on 6443 "
                f"({catalog.ALL_YAML}), not {lb.port}: nodes would dial a port nothing serves; use port 6443",
            )
        return None
    public = catalog.lb_public_master(plan)
    if public is not None:
        return Warn(
            "load-balancer-public-ip",
            f"master.load_balancer {value} is the public ip of master {public.host}: nodes reach it through the "
            "internet gateway with public source addresses, which no security-group reference matches, so "
            f"ket-infra opens only the nodes' egress to {lb.host}/32 and cannot open the masters' side; use "
            f"{public.host}'s internalip {public.address} or an internal load balancer",
        )
    if lb.address is None and not (env is not None and env.endpoint("load_balancer")):
        return Warn(
            "load-balancer-dns-name",
            f"master.load_balancer {value} is a DNS name: ket-infra cannot tell its addresses, and kubelets, "
            f"kube-proxy, kubectl and Contiv reach kube-apiserver through it (tcp {lb.port}); set "
            "endpoint_cidrs.load_balancer in the environment file to the balancer's addresses",
        )
    return None


def _endpoint_warnings(plan: Plan, env: Environment | None, names: set[str]) -> list[str]:
    """Endpoints the plan names whose addresses nobody gave, and KET's own limits around them."""
    ep = plan.endpoints
    out: list[str] = [Warn("proxy-no-port", w) for w in ep.warnings]

    def unnamed(kind: str) -> bool:
        return not endpoint_cidrs(kind, plan, env)

    dns = [v.host for v in ep.nfs if v.address is None and catalog.node_at(plan, v.host) is None]
    if dns and not (env is not None and env.endpoint("nfs")):
        _add(
            out,
            "nfs-dns-name",
            f"nfs.nfs_volume[].nfs_host {', '.join(dns)} is a DNS name: ket-infra cannot tell its addresses; set "
            "endpoint_cidrs.nfs in the environment file, or master[0]'s install-time mount and the pods' volumes hang",
        )
    if ep.nfs:
        _add(
            out,
            "nfs-v3",
            "nfs.nfs_volume: ket-infra opens NFSv4 (tcp 2049), what KET's mounts negotiate first; an NFSv3-only "
            "server also needs rpcbind (tcp/udp 111), mountd and lock ports: add them as extra_rules",
        )
    for kind in (catalog.HTTP_PROXY, catalog.HTTPS_PROXY):
        if kind in {p.key.rpartition(".")[2] for p in ep.proxies} and unnamed(kind):
            _add(
                out,
                "proxy-dns-name",
                f"cluster.networking.{kind} is a DNS name: ket-infra cannot tell its addresses; set "
                "endpoint_cidrs.proxy (or egress_cidrs) in the environment file, or docker pulls and packages fail",
            )
    if ep.proxies and ep.no_proxy and not (env is not None and env.egress_cidrs):
        _add(
            out,
            "no-proxy-hosts",
            "cluster.networking.no_proxy names hosts the nodes reach directly, not through the proxy: set "
            "egress_cidrs to their addresses, or ket-infra opens nothing for them",
        )
    if "aws-api" in names:
        if unnamed(catalog.AWS_API):
            _add(
                out,
                "aws-api-unset",
                "cluster.cloud_provider.provider is aws: kubelet, kube-apiserver and kube-controller-manager call "
                "the AWS APIs (tcp 443); set endpoint_cidrs.aws_api (your VPC endpoints) or egress_cidrs in the "
                "environment file, or nothing opens it",
            )
        _add(
            out,
            "aws-lb-group-tag",
            "cluster.cloud_provider.provider is aws: for LoadBalancer Services the provider picks the node's one "
            "security group tagged kubernetes.io/cluster/<id> (kubernetes aws.go findSecurityGroupForInstance); "
            "ket-infra's groups carry no such tag, so tag exactly one group per node",
        )
    for np in ep.nodeports:
        if not (env is not None and env.nodeport_cidrs):
            ports = str(np.lo) if np.lo == np.hi else f"{np.lo}-{np.hi}"
            _add(
                out,
                "nodeport-cidrs-unset",
                f"{np.key} exposes a NodePort (tcp {ports}) on every kubelet node but nodeport_cidrs is empty: "
                "nothing outside the cluster can reach it",
            )
    if "heapster-sink" in names and unnamed(catalog.HEAPSTER_SINK):
        sink = ep.heapster_sink
        assert sink is not None
        _add(
            out,
            "heapster-sink-dns-name",
            f"add_ons.heapster.options.heapster.sink {sink.host}:{sink.port} is a DNS name: ket-infra cannot tell "
            "its addresses; set endpoint_cidrs.heapster_sink in the environment file",
        )
    if ep.sink_unmodelled:
        _add(
            out,
            "heapster-sink-unreadable",
            f"add_ons.heapster.options.heapster.sink {ep.sink_unmodelled!r} names no http(s)://host:port ket-infra "
            "can read: add the sink's flow as extra_rules",
        )
    if any("storage" in n.roles for n in plan.nodes):
        _add(
            out,
            "glusterfs-nolock",
            "KET's volumes mount GlusterFS NFS (v3) through the kismatic-storage Service without nolock; blocking "
            "file locks on them hang whatever the rules say, since the storage node calls the client back "
            "(kismatic v1.12.0 ansible/roles/persistent-volume/templates/pv.yaml:15-17; GlusterFS nlm4.c)",
        )
    return out


def _world_warnings(env: Environment | None, rules: list[Rule]) -> list[str]:
    """The environment may open a port to the world; say so, naming the key and what is reachable."""
    if env is None:
        return []
    named: list[tuple[str, str]] = []
    if env.installer_cidr:
        named.append(("installer_cidr", env.installer_cidr))
    named += [(f"ingress_cidrs[{i}]", c) for i, c in enumerate(env.ingress_cidrs)]
    named += [(f"api_cidrs[{i}]", c) for i, c in enumerate(env.api_cidrs)]
    named += [(f"extra_rules {f.name}", f.src_cidr) for f in env.extra_flows if f.src_cidr]
    out: list[str] = []
    for key, cidr in named:
        if not spans_the_internet(cidr):
            continue
        open_to: dict[str, list[str]] = defaultdict(list)
        for r in rules:
            if r.direction == "ingress" and r.peer.cidr == cidr:
                what = "all traffic" if r.protocol == "all" else f"{catalog.protocol_label(r.protocol)} {r.ports}"
                open_to[what].append(r.group)
        if open_to:
            reach = "; ".join(f"{what} on {', '.join(groups)}" for what, groups in open_to.items())
            _add(out, "world-open", f"{key} is {cidr}, which spans the internet: the world can reach {reach}")
    return out


def _check_quota(rules: list[Rule], warnings: list[str], env: Environment | None) -> None:
    """Refuse a group over the rules quota ("Inbound or outbound rules per security group", 60 unless the
    account has it raised: https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html), which
    AWS would refuse half-way through the apply (RulesPerSecurityGroupLimitExceeded)."""
    quota = env.rules_quota if env is not None else RULE_QUOTA
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in rules:
        counts[(r.group, r.direction)] += 1
    for (group, direction), n in sorted(counts.items()):
        if n > quota:
            where = f"{env.path}: rules_per_group_quota: " if env is not None else ""
            raised = (
                "set rules_per_group_quota to it"
                if env is not None
                else "set rules_per_group_quota to it in the environment file"
            )
            raise QuotaError(
                f"{where}group {group} needs {n} {direction} rules, {n - quota} above the AWS quota of "
                f"{quota} per security group; reduce the number of distinct role combinations in the plan "
                f"(each is a group) or the environment's extra rules, or if the account's quota is raised, {raised}"
            )
        if n > quota - (RULE_QUOTA - RULE_WARN):
            _add(
                warnings,
                "near-rule-quota",
                f"group {group} has {n} {direction} rules, near the AWS quota of {quota}: little room is left for other rules",
            )


def layout(plan: Plan, env: Environment | None = None) -> RuleSet:
    """The groups, rules and host settings PLAN needs (with ENV's options)."""
    groups = groups_of(plan)
    atoms = [a for f in catalog.required_flows(plan, env) for a in _atoms(f, groups, plan, env)]
    order = {g.name: i for i, g in enumerate(groups)}
    rules = sorted(
        _merge(atoms),
        key=lambda r: (
            order[r.group],
            r.direction != "ingress",
            _PROTO_ORDER.get(r.protocol, 3),
            r.protocol,
            r.from_port if r.from_port is not None else -2,
            r.peer.group is None,
            r.peer.label,
        ),
    )
    warnings = _warnings(plan, env, groups) + _world_warnings(env, rules)
    _check_quota(rules, warnings, env)
    host_settings: list[HostSetting] = []
    if not plan.cni.disabled and plan.cni.provider == "calico" and plan.cni.mode == "routed":
        for g in groups:
            if set(g.roles) & set(KUBELET_ROLES):
                host_settings.append(
                    HostSetting(
                        g.name,
                        False,
                        "Calico routed mode: pod traffic leaves the node with pod source IPs, which EC2 drops "
                        f"unless the source/destination check is off ({catalog.CALICO_AWS})",
                    )
                )
    acknowledged = set(env.acknowledge) if env is not None else set()
    return RuleSet(
        plan.cluster,
        plan.cni,
        groups,
        tuple(rules),
        tuple(host_settings),
        tuple(w for w in warnings if warning_id(w) not in acknowledged),
        tuple(w for w in warnings if warning_id(w) in acknowledged),
    )
