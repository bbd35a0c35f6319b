"""Move a cluster off foreign, wide-open security groups without an outage (`detach_groups`).

A cluster built by another tool (KET's AWS provisioner, kops) carries groups that
open far more than its flows need; ket-infra's own groups alone open exactly the
flows. After `apply` has attached ket-infra's groups, the groups the environment
file names under `detach_groups` are taken off the nodes' interfaces, but only
once `verify`'s judgement of the live state, with those groups left out, finds
every required flow open, and once nothing the environment leaves unnamed (the
installer, a load balancer outside api_cidrs) and no other group's rule loses its
only path through them. What was taken off is recorded beside the Terraform state
(`Record`: a file beside a local state, an object beside an s3 one), written before
any interface changes, so `destroy` puts it back, and a group no longer listed is put
back by the next `apply`. The interfaces carry a copy as a tag for people to read;
the tag is never trusted, as anyone who may tag an interface could write it.
ket-infra never deletes a group it does not own.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ket_infra import aws
from ket_infra import flows as catalog
from ket_infra.aws import DETACHED_TAG, Discovery, InterfaceGroups
from ket_infra.environment import Environment
from ket_infra.errors import EnvironmentFileError, KetInfraError
from ket_infra.flows import Flow
from ket_infra.layout import RuleSet, load_balancer_warning
from ket_infra.plan import Plan, split_host_port
from ket_infra.report import listed

if TYPE_CHECKING:
    from ket_infra import verify

Progress = Callable[[str], None]
RECORD_SUFFIX = ".detached-groups.json"


@dataclass(frozen=True)
class Record:
    """Which groups ket-infra took off which interface: the authority `destroy` and `apply` put back from.

    Kept beside the Terraform state, where only what may write the state writes: a file beside a
    local state (PATH), an object beside an s3 state (ENV's backend bucket, KEY). A fresh work folder
    (a CI job) finds it with the state.
    """

    path: Path | None = None
    env: Environment | None = None
    key: str | None = None

    @classmethod
    def of(cls, env: Environment, work: Path, suffix: str = RECORD_SUFFIX) -> Record:
        """The record beside ENV's Terraform state whose name ends in SUFFIX."""
        backend = env.terraform.backend
        if backend.type == "s3":
            return cls(env=env, key=f"{backend.key}{suffix}")
        return cls(path=work / f"{backend.path or 'terraform.tfstate'}{suffix}")

    @property
    def where(self) -> str:
        if self.path is not None:
            return str(self.path)
        assert self.env is not None
        return f"s3://{self.env.terraform.backend.bucket}/{self.key}"

    def raw(self) -> str:
        """The record's text ("" when there is none)."""
        return self._s3_read() if self.path is None else self.path.read_text() if self.path.exists() else ""

    def put(self, text: str | None) -> None:
        """Replace the record with TEXT, whole or not at all (None: the record goes)."""
        if self.path is None:
            self._s3_write(text)
        elif text is None:
            self.path.unlink(missing_ok=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)  # whole or not at all, even when killed

    def read(self) -> dict[str, tuple[str, ...]]:
        """Interface id -> the group ids ket-infra took off it."""
        raw = self.raw()
        if not raw:
            return {}
        try:
            data = json.loads(raw)["detached"]
            return {str(eni): tuple(str(g) for g in groups) for eni, groups in data.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KetInfraError(
                f"{self.where}: ket-infra's record of the groups detach_groups took off is not what ket-infra "
                "writes; restore it from the state's backup (or the interfaces' ket-infra/detached-groups tags)"
            ) from None

    def write(self, book: Mapping[str, Iterable[str]]) -> None:
        """Replace the record with BOOK (the record goes when BOOK holds nothing)."""
        kept = {eni: sorted(groups) for eni, groups in sorted(book.items()) if groups}
        self.put(json.dumps({"detached": kept}, indent=2) + "\n" if kept else None)

    def _s3(self) -> tuple[Any, str, Environment]:
        assert self.env is not None
        backend = self.env.terraform.backend
        s3 = aws.client(self.env, "s3", region=backend.region, endpoint_url=backend.endpoint_url)
        return s3, str(backend.bucket), self.env

    def _s3_read(self) -> str:
        s3, bucket, env = self._s3()
        with aws.aws_errors(env, f"reading ket-infra's record {self.where}"):
            try:
                return str(s3.get_object(Bucket=bucket, Key=self.key)["Body"].read().decode())
            except s3.exceptions.NoSuchKey:
                return ""

    def _s3_write(self, text: str | None) -> None:
        s3, bucket, env = self._s3()
        with aws.aws_errors(env, f"writing ket-infra's record {self.where}"):
            if text is None:
                s3.delete_object(Bucket=bucket, Key=self.key)
            else:
                s3.put_object(Bucket=bucket, Key=self.key, Body=text.encode(), ServerSideEncryption="AES256")


CHECK_SUFFIX = ".source-dest-check.json"


@dataclass(frozen=True)
class Checked:
    """A node's EC2 source/destination check as it was before ket-infra first changed it."""

    host: str
    source_dest_check: bool


@dataclass(frozen=True)
class CheckRecord:
    """Instance id -> its check before ket-infra changed it: what `destroy` puts back (not AWS's default).

    Kept as the detach record is (`Record`, beside the Terraform state, `<state>.source-dest-check.json`),
    written before any change, so a run killed half-way still knows what was there.
    """

    record: Record

    @classmethod
    def of(cls, env: Environment, work: Path) -> CheckRecord:
        return cls(Record.of(env, work, CHECK_SUFFIX))

    def read(self) -> dict[str, Checked]:
        raw = self.record.raw()
        if not raw:
            return {}
        try:
            data = json.loads(raw)["source_dest_check"]
            return {str(i): Checked(str(v["host"]), bool(v["was"])) for i, v in data.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KetInfraError(
                f"{self.record.where}: ket-infra's record of the source/dest checks it changed is not what "
                "ket-infra writes; restore it from the state's backup"
            ) from None

    def write(self, book: Mapping[str, Checked]) -> None:
        """Replace the record with BOOK (the record goes when BOOK is empty)."""
        data = {i: {"host": c.host, "was": c.source_dest_check} for i, c in sorted(book.items())}
        self.record.put(json.dumps({"source_dest_check": data}, indent=2) + "\n" if data else None)


@dataclass(frozen=True)
class Change:
    interface: InterfaceGroups
    groups: list[str]  # what the interface will carry
    detached: list[str]  # what the record will hold

    @property
    def taken(self) -> list[str]:
        return [g for g in self.interface.groups if g not in self.groups]

    @property
    def given(self) -> list[str]:
        return [g for g in self.groups if g not in self.interface.groups]


def _label(i: InterfaceGroups) -> str:
    return f"{i.host} ({i.network_interface_id})" if i.host else f"{i.network_interface_id} (not in the plan)"


def without(discovery: Discovery, groups: set[str]) -> Discovery:
    """The nodes as they would be with GROUPS taken off their interfaces."""
    nodes = []
    for n in discovery.nodes:
        kept = [(g, name) for g, name in zip(n.security_groups, _padded(n), strict=True) if g not in groups]
        nodes.append(
            replace(n, security_groups=tuple(g for g, _ in kept), security_group_names=tuple(name for _, name in kept))
        )
    return Discovery(discovery.vpc_id, tuple(nodes))


def _padded(n: aws.NodeInterface) -> tuple[str, ...]:
    names = n.security_group_names
    return names + ("",) * (len(n.security_groups) - len(names))


def resolve(
    env: Environment, interfaces: list[InterfaceGroups], names: dict[str, str], own: set[str]
) -> tuple[set[str], list[str]]:
    """The ids detach_groups names (ids or names), and the entries that name nothing.

    NAMES maps the ids on the interfaces and in their records to group names; OWN holds
    ket-infra's own group ids, which are refused.
    """
    known = {g for i in interfaces for g in (*i.groups, *i.detached)}
    wanted: set[str] = set()
    unknown: list[str] = []
    for index, entry in enumerate(env.detach_groups):
        ids = {g for g in known if g == entry or names.get(g) == entry}
        mine = ids & own
        if mine:
            raise EnvironmentFileError(
                env.path,
                f"detach_groups[{index}]",
                f"{entry} is ket-infra's own group for this cluster ({', '.join(sorted(mine))})",
                "list only the foreign groups to take off the nodes",
            )
        if not ids:
            unknown.append(entry)
        wanted |= ids
    return wanted, unknown


def changes(interfaces: list[InterfaceGroups], wanted: set[str], gone: frozenset[str] = frozenset()) -> list[Change]:
    """Per interface: WANTED off (and recorded), whatever was recorded and is no longer wanted back on.

    A recorded group that is GONE (deleted since) is never put back (AWS refuses it) and leaves the record.
    """
    out = []
    for i in interfaces:
        back = [g for g in i.detached if g not in wanted and g not in i.groups and g not in gone]
        groups = [g for g in i.groups if g not in wanted] + back
        held = {g for g in i.detached if g in wanted and g not in gone}
        detached = sorted(held | {g for g in i.groups if g in wanted})
        if groups != list(i.groups) or detached != sorted(i.detached):
            out.append(Change(i, groups, detached))
    return out


def _names(ids: list[str] | set[str], names: dict[str, str]) -> str:
    return ", ".join(f"{g} ({names[g]})" if g in names else g for g in sorted(ids))


def _read(
    env: Environment, discovery: Discovery, record: Record, progress: Progress, ec2: Any
) -> tuple[list[InterfaceGroups], dict[str, tuple[str, ...]]]:
    """The interfaces of the nodes and of the record, and the record; says which tags it does not trust."""
    book = record.read()
    interfaces = aws.interface_groups(env, discovery, book, ec2)
    for i in interfaces:
        forged = sorted(set(i.tagged) - set(i.detached))
        if forged:
            one = len(forged) == 1
            progress(
                f"  {_label(i)}: ignored the {DETACHED_TAG} tag naming {', '.join(forged)}: ket-infra's record "
                f"({record.where}) does not hold {'it' if one else 'them'}, so {'it is' if one else 'they are'} "
                "not attached"
            )
    there = {i.network_interface_id for i in interfaces}  # an interface deleted since has nothing to put back
    return interfaces, {eni: groups for eni, groups in book.items() if eni in there}


def _carry_out(
    env: Environment,
    todo: list[Change],
    book: dict[str, tuple[str, ...]],
    record: Record,
    names: dict[str, str],
    gone: frozenset[str],
    progress: Progress,
    ec2: Any,
) -> int:
    """Make TODO's changes, the record written first; returns how many interfaces got a group back."""
    first = dict(book)
    for c in todo:
        eni = c.interface.network_interface_id
        first[eni] = tuple(set(book.get(eni, ())) | set(c.detached))
    record.write(first)  # before any interface changes: a run killed half-way still knows what to put back
    given = 0
    for c in todo:
        aws.set_interface_groups(env, c.interface, c.groups, c.detached, ec2)
        said = []
        if c.taken:
            said.append(f"detached {_names(c.taken, names)}")
        if c.given:
            said.append(f"re-attached {_names(c.given, names)}")
            given += 1
        lost = sorted(set(c.interface.detached) & gone)
        if lost:
            said.append(
                f"{', '.join(lost)} no longer exist{'s' * (len(lost) == 1)} (deleted since ket-infra took it off): "
                "not re-attached, dropped from the record"
            )
        if said:
            progress(f"  {_label(c.interface)}: {'; '.join(said)}")
    record.write({**book, **{c.interface.network_interface_id: tuple(c.detached) for c in todo}})
    return given


@dataclass(frozen=True)
class Dependency:
    """A sender layout warns about and the environment leaves unnamed: ket-infra's groups open nothing for it."""

    name: str
    key: str  # the environment file's key that names it
    address: ipaddress.IPv4Network | None  # None: it may be anywhere
    flows: tuple[Flow, ...]


def unnamed(plan: Plan, env: Environment) -> list[Dependency]:
    """The installer without installer_cidr, a load balancer whose addresses no rule can name (layout's warnings)."""
    flows = catalog.required_flows(plan, env)
    out = []
    if env.installer_cidr is None:
        kind = catalog.INSTALLER
        out.append(Dependency("the installer (installer_cidr is not set)", kind, None, _from(flows, kind)))
    if plan.load_balancer and load_balancer_warning(plan, env) is not None:
        host, _port = split_host_port(plan.load_balancer)
        try:
            ip = ipaddress.ip_address(host)
            address = ipaddress.IPv4Network(ip) if ip.version == 4 else None
        except ValueError:  # a DNS name: its addresses are unknown
            address = None
        name = f"master.load_balancer {plan.load_balancer}"
        through = _from(flows, catalog.LOAD_BALANCER) or _from(flows, catalog.API_CLIENTS)
        out.append(Dependency(name, f"endpoint_cidrs.{catalog.LOAD_BALANCER}", address, through))
    return [d for d in out if d.flows]


def _from(flows: tuple[Flow, ...], kind: str) -> tuple[Flow, ...]:
    return tuple(f for f in flows if f.src_cidr == kind)


def _opens(p: Any, t: Any) -> bool:
    """Does permission P open any part of traffic T?"""
    from ket_infra import verify

    span = verify.perm_covers(p, t)
    if span is None:
        return False
    if t.protocol in ("tcp", "udp") and t.ports is not None:
        return bool(span[0] <= t.ports[1] and span[1] >= t.ports[0])
    return True


Member = tuple[str, str, frozenset[str]]  # interface id, private address, its groups


def _members(env: Environment, discovery: Discovery, group_ids: set[str], ec2: Any) -> dict[str, list[Member]]:
    """Group id -> the interfaces carrying it that are not the cluster's nodes (the installer may be one)."""
    nodes = {n.network_interface_id for n in discovery.nodes}
    out: dict[str, list[Member]] = {g: [] for g in group_ids}
    with aws.aws_errors(env, "reading which interfaces carry the groups to detach"):
        for eni in aws.described(
            ec2, "describe_network_interfaces", "NetworkInterfaces", "group-id", sorted(group_ids)
        ):
            if eni["NetworkInterfaceId"] in nodes:
                continue
            carried = frozenset(g["GroupId"] for g in eni.get("Groups", []))
            for g in carried & group_ids:
                out[g].append((eni["NetworkInterfaceId"], str(eni.get("PrivateIpAddress", "")), carried))
    return out


def not_proven(report: verify.Report) -> str:
    """Why REPORT proves nothing open: the blocked flow checks (three shown, the rest counted), the wrong host
    settings (each named), or that it judged nothing."""
    if not report.judged:
        return "nothing could be judged (no node found, or no flow the plan requires)"
    parts = []
    blocked = [c for c in report.checks if c.status == "blocked"]
    if blocked:
        said = [f"{c.rule} from {c.source.label} to {c.target.label}: {c.reason}" for c in blocked]
        parts.append(f"{len(blocked)} required flow check(s) would be blocked ({listed(said, 3, '; ')})")
    hosts = [h for h in report.host_settings if h.status == "blocked"]
    if hosts:
        said = [f"{h.node.host}: {h.problem}" for h in hosts]
        parts.append(f"{len(hosts)} host setting(s) wrong ({listed(said, 3, '; ')})")
    return "; ".join(parts)


def _only_paths(
    plan: Plan, env: Environment, discovery: Discovery, state: Any, todo: list[Change], names: dict[str, str], ec2: Any
) -> None:
    """Refuse when a group to detach is the only path of a dependency the environment leaves unnamed."""
    from ket_infra import verify

    deps = unnamed(plan, env)
    taking = [c for c in todo if c.taken and c.interface.host in {n.host for n in plan.nodes}]
    if not deps or not taking:
        return
    referenced = {g for c in taking for t in c.taken for p in state.ingress.get(t, []) for g in p.groups}
    members = _members(env, discovery, referenced, ec2) if referenced else {}

    def sources(p: Any, dep: Dependency) -> Iterator[tuple[str, Any, frozenset[str]]]:
        for cidr in p.cidrs:
            if dep.address is None or dep.address.subnet_of(cidr):
                yield str(cidr), dep.address or cidr, frozenset()
        for g in sorted(p.groups):
            for _eni, address, carried in members.get(g, []):
                net = ipaddress.IPv4Network(address)
                if dep.address is None or dep.address == net:
                    yield f"{address} (a member of {g})", net, carried

    for dep in deps:
        lost: dict[str, dict[tuple[str, str], set[str]]] = {}  # group -> (flow, source) -> hosts
        for flow in dep.flows:
            t = verify.Traffic(flow.protocol, flow.ports)
            for c in taking:
                if not plan.node(c.interface.host).roles & set(flow.to):
                    continue
                kept = [p for g in c.groups for p in state.ingress.get(g, [])]
                for g in c.taken:
                    for p in state.ingress.get(g, []):
                        if not _opens(p, t):
                            continue
                        for shown, peer, carried in sources(p, dep):
                            if not verify.sg_allows(kept, t, carried, peer):
                                lost.setdefault(g, {}).setdefault((flow.name, shown), set()).add(c.interface.host)
        for g, paths in sorted(lost.items()):
            by_flow = {f.name: f for f in dep.flows}
            what = "; ".join(
                f"{name}: {verify.describe_traffic(verify.Traffic(by_flow[name].protocol, by_flow[name].ports))} from "
                f"{shown} to {len(hosts)} node(s)"
                for (name, shown), hosts in paths.items()
            )
            raise KetInfraError(
                f"{env.path}: detach_groups: nothing was detached: {_names([g], names)} is the only path for "
                f"{dep.name} ({what}); name it in the environment file ({dep.key}) so ket-infra opens it, "
                "or keep the group"
            )


def _referrers(env: Environment, taking: set[str], names: dict[str, str], ec2: Any) -> None:
    """Refuse when another group's rule refers to a group to detach: the nodes would lose what it allows."""
    referring: dict[str, str] = {}
    with aws.aws_errors(env, "reading which groups refer to the groups to detach"):
        for key in ("ip-permission.group-id", "egress.ip-permission.group-id"):
            for g in aws.described(ec2, "describe_security_groups", "SecurityGroups", key, sorted(taking)):
                if g["GroupId"] not in taking:
                    referring[g["GroupId"]] = g.get("GroupName", g["GroupId"])
        if not referring:
            return
        rules = aws.described(ec2, "describe_security_group_rules", "SecurityGroupRules", "group-id", sorted(referring))
        for r in sorted(rules, key=lambda r: (r["GroupId"], r["SecurityGroupRuleId"])):
            ref = r.get("ReferencedGroupInfo", {}).get("GroupId")
            if ref not in taking:
                continue
            egress = bool(r.get("IsEgress"))
            proto = str(r.get("IpProtocol", "-1"))
            lo, hi = r.get("FromPort", -1), r.get("ToPort", -1)
            ports = "" if proto == "-1" or lo in (None, -1) else (f" {lo}" if lo == hi else f" {lo}-{hi}")
            rule = f"{'egress' if egress else 'ingress'} {'all traffic' if proto == '-1' else proto}{ports}"
            group = f"{r['GroupId']} ({referring[r['GroupId']]})"
            verb = "reaches" if egress else "lets"
            raise KetInfraError(
                f"{env.path}: detach_groups: nothing was detached: {group} {verb} {_names([ref], names)}"
                f"{'' if egress else ' in'} by its rule {r['SecurityGroupRuleId']} ({rule} "
                f"{'to' if egress else 'from'} {ref}): taking {ref} off the nodes cuts them from what "
                f"{r['GroupId']} guards; let ket-infra's groups in by that rule instead, or keep the group"
            )


def apply_detach(
    plan: Plan,
    env: Environment,
    rules: RuleSet,
    discovery: Discovery,
    progress: Progress,
    ec2: Any | None = None,
    record: Record | None = None,
) -> None:
    """After apply: take the groups detach_groups names off the nodes once the flows are proven open without them."""
    from ket_infra import verify
    from ket_infra.render import work_dir

    ec2 = ec2 or aws.client(env, "ec2")
    record = record or Record.of(env, work_dir(env))
    interfaces, book = _read(env, discovery, record, progress, ec2)
    plan_enis = {n.network_interface_id for n in discovery.nodes}
    nodes = [i for i in interfaces if i.network_interface_id in plan_enis]
    others = [i for i in interfaces if i.network_interface_id not in plan_enis]
    recorded = sorted({g for i in interfaces for g in i.detached})
    if not env.detach_groups and not recorded:
        return
    # the groups as the interfaces carry them now (ket-infra's own since the apply), not at discovery
    now = {i.network_interface_id: i.groups for i in nodes}
    discovery = Discovery(
        discovery.vpc_id,
        tuple(
            replace(n, security_groups=now.get(n.network_interface_id, n.security_groups), security_group_names=())
            for n in discovery.nodes
        ),
    )
    state = verify.read_state(env, discovery, ec2)
    existing = aws.group_names(env, recorded, ec2) if recorded else {}
    gone = frozenset(g for g in recorded if g not in existing)
    names = {**existing, **state.group_names}
    own = {g for g, name in names.items() if name in {f"{rules.cluster}-{grp.name}" for grp in rules.groups}}
    wanted, unknown = resolve(env, nodes, names, own)
    if unknown:
        on = _names({g for i in nodes for g in i.groups}, names)
        raise EnvironmentFileError(
            env.path,
            "detach_groups",
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} on none of the cluster's interfaces "
            f"(they carry {on})",
            "give the id (sg-...) or name of a group the nodes carry, or remove the entry; "
            "ket-infra's groups and rules are applied, nothing was detached",
        )
    # a node gone from the plan is never detached from, only given back what the record holds
    todo = changes(nodes, wanted, gone) + changes(others, set(), gone)
    if not todo:
        progress(f"detach_groups: {_names(wanted, names)} already off every node's interface")
        return
    taking = {g for c in todo for g in c.taken}
    if taking:
        report = verify.evaluate(plan, env, rules, without(discovery, wanted), state)
        if not report.ok:
            raise KetInfraError(
                f"{env.path}: detach_groups: nothing was detached: without {_names(taking, names)} "
                f"{not_proven(report)}; ket-infra's groups and rules are applied; open what is missing "
                "(extra_rules) or keep the group"
            )
        _only_paths(plan, env, discovery, state, todo, names, ec2)
        _referrers(env, taking, names, ec2)
        progress(
            f"detach_groups: every required flow is open without {_names(taking, names)} "
            f"({len(report.checks)} checks); taking it off {sum(1 for c in todo if c.taken)} interface(s)"
        )
    _carry_out(env, todo, book, record, names, gone, progress, ec2)
    progress(f"detach_groups: done on {len(todo)} interface(s); destroy puts the groups back")


def _restoring(
    env: Environment, discovery: Discovery, record: Record, progress: Progress, ec2: Any
) -> tuple[list[Change], dict[str, tuple[str, ...]], frozenset[str]]:
    interfaces, book = _read(env, discovery, record, progress, ec2)
    recorded = sorted({g for i in interfaces for g in i.detached})
    gone = frozenset(g for g in recorded if g not in aws.group_names(env, recorded, ec2)) if recorded else frozenset()
    return changes(interfaces, set(), gone), book, gone


def reattach(
    env: Environment, discovery: Discovery, progress: Progress, ec2: Any | None = None, record: Record | None = None
) -> int:
    """Put back every group ket-infra recorded taking off an interface, the plan's or not (before destroy
    removes its own); returns how many interfaces got a group back."""
    from ket_infra.render import work_dir

    ec2 = ec2 or aws.client(env, "ec2")
    record = record or Record.of(env, work_dir(env))
    todo, book, gone = _restoring(env, discovery, record, progress, ec2)
    return _carry_out(env, todo, book, record, {}, gone, progress, ec2) if todo else 0


def recorded(
    env: Environment, discovery: Discovery, ec2: Any | None = None, record: Record | None = None
) -> dict[str, list[str]]:
    """Interface (host, or id when not in the plan) -> the groups reattach would put back on it."""
    from ket_infra.render import work_dir

    ec2 = ec2 or aws.client(env, "ec2")
    record = record or Record.of(env, work_dir(env))
    todo, _book, _gone = _restoring(env, discovery, record, lambda _s: None, ec2)
    return {c.interface.host or c.interface.network_interface_id: c.given for c in todo if c.given}
