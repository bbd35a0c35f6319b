"""The steps behind `render`, `plan`, `apply` and `destroy`, in order.

load plan and environment -> layout -> (guard account, discover nodes,
pre-change checks) -> render -> terraform init/plan/apply -> host settings.
Every check that can refuse runs before anything changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ket_infra import yamldoc
from ket_infra.aws import AwsError
from ket_infra.environment import Environment, load_environment
from ket_infra.errors import EnvironmentFileError, KetInfraError
from ket_infra.layout import RuleSet, layout
from ket_infra.plan import KUBELET_ROLES, Plan, load_plan
from ket_infra.progress import background
from ket_infra.render import (
    IMPORTS,
    MAIN,
    TFVARS,
    Attachment,
    Changing,
    Import,
    attachment_address,
    attachment_import_id,
    group_address,
    no_hook,
    render,
    render_state_only,
    rule_address,
    state_identity,
    work_dir,
    write_imports,
)
from ket_infra.report import listed
from ket_infra.terraform import INPUT_DIGESTS, PlanSummary, Terraform, TerraformError, summary_lines

if TYPE_CHECKING:
    from ket_infra.aws import Discovery, Owned
    from ket_infra.verify import Report

Progress = Callable[[str], None]


@dataclass
class Context:
    env: Environment
    plan: Plan
    rules: RuleSet
    work: Path
    progress: Progress
    found: Discovery | None = None  # the nodes as this run discovered them, once it has
    imports: list[Import] = field(default_factory=list)  # orphans this run's plan adopts
    # called before this run changes a file of the work folder (a plan started ahead is stopped)
    changing: Changing = field(default=no_hook, repr=False)
    # what the command reports as its result (the plan's changes, apply's verdict): the CLI puts it on
    # stdout, progress on stderr; unset, it goes with the progress
    output: Progress | None = field(default=None, repr=False)
    # each layout warning that still applies once the nodes are found (the CLI prints them on stderr)
    warn: Progress = field(default=lambda _w: None, repr=False)

    def out(self, line: str) -> None:
        (self.output or self.progress)(line)

    @property
    def tf(self) -> Terraform:
        return Terraform(self.env, self.work, self.progress)

    def inputs(self) -> list[tuple[str, bytes]]:
        """What a saved plan depends on: what the plan and environment files said, and the rendered module now.

        The two YAML files count by their meaning, not their bytes: a comment or a reformat does
        not make a saved plan stale. They count as this run read them, not as they are when asked:
        an edit while the plan runs is not what the plan was made from, and makes it stale.
        """
        parts = [(str(Path(f.path)), _meaning(f.source)) for f in (self.plan, self.env)]
        files = [
            self.work / MAIN,
            self.work / TFVARS,
            self.work / IMPORTS,
            *sorted((self.work / "modules").rglob("*.tf")),
        ]
        return parts + [(str(path), path.read_bytes() if path.exists() else b"<missing>") for path in files]

    def purposes(self) -> dict[str, str]:
        """What each rendered group and rule is for, by Terraform resource type and key."""
        wanted = json.loads((self.work / TFVARS).read_text())
        out = {f"aws_security_group/{name}": str(g["description"]) for name, g in wanted["groups"].items()}
        for direction in ("ingress", "egress"):
            for name, rule in wanted[f"{direction}_rules"].items():
                out[f"aws_vpc_security_group_{direction}_rule/{name}"] = str(rule["description"])
        return out


def _meaning(raw: bytes) -> bytes:
    """A YAML file's bytes as canonical JSON of its data (the bytes themselves when that cannot be made)."""
    import yaml

    try:
        return json.dumps(yaml.load(raw, Loader=yamldoc.LOADER), sort_keys=True, default=str).encode()
    except (yaml.YAMLError, TypeError, ValueError, RecursionError):  # keys of mixed types, huge numbers, cycles
        return raw


def input_digests(inputs: list[tuple[str, bytes]]) -> dict[str, str]:
    """A digest per input file, and per key path of a YAML file (its meaning, as inputs() gives it): saved
    with a plan, so that a stale one can be said to be stale because of which file and which key. Digests,
    not values: the plan file may hold passwords."""
    import hashlib

    out: dict[str, str] = {}

    def walk(name: str, at: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(name, f"{at}.{key}" if at else str(key), item)
        elif isinstance(value, list) and value:
            for i, item in enumerate(value):
                walk(name, f"{at}[{i}]", item)
        elif not _SECRET.search(at):  # a password's digest alone could be guessed back: only the whole file's
            out[f"{name}#{at}"] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    for i, (name, content) in enumerate(inputs):
        if i < 2:  # the plan and environment files, as their meaning (canonical JSON) when they had one
            try:
                walk(name, "", json.loads(content))
                out[f"{name}#*"] = hashlib.sha256(content).hexdigest()[:16]  # the whole file
                continue
            except ValueError:
                pass
        out[name] = hashlib.sha256(content).hexdigest()[:16]
    return out


_SECRET = re.compile(r"password|secret|token", re.IGNORECASE)


def _what_changed(ctx: Context, now: list[tuple[str, bytes]]) -> str:
    """Which input of the saved plan changed, and for the YAML files which keys (at most three named)."""
    try:
        saved = json.loads((ctx.work / INPUT_DIGESTS).read_text())
    except (OSError, ValueError):
        return "the plan file, the environment file or the rendered module"
    current = input_digests(now)
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    names = {now[0][0]: f"the plan file {ctx.plan.path}", now[1][0]: f"the environment file {ctx.env.path}"}
    parts: list[str] = []
    for name, label in names.items():
        keys = [k.split("#", 1)[1] for k in changed if k.split("#", 1)[0] == name]
        if keys == ["*"]:
            keys = ["a value not shown here"]  # only a secret's key changed
        keys = [k for k in keys if k != "*"]
        if keys:
            parts.append(f"{label} ({listed(keys, 3)})")
    files = [k for k in changed if "#" not in k]
    if files:
        parts.append(f"the rendered module ({', '.join(files[:3])}{' and more' if len(files) > 3 else ''})")
    return " and ".join(parts) or "the plan file, the environment file or the rendered module"


def context(env_arg: str, progress: Progress = print, base: Path | None = None, strict: bool = True) -> Context:
    """Load the environment and its plan, and lay out the rules; refuse what cannot work.

    A custom CNI with no extra_rules would apply a cluster whose pod network is blocked:
    `rules` only warns (it shows what is known), plan, apply and verify refuse; destroy
    (strict=False) still removes what an earlier run made.
    """
    env = load_environment(env_arg)
    plan = load_plan(env.plan_file)
    if strict and plan.cni.provider == "custom" and not plan.cni.disabled and not env.extra_flows:
        raise EnvironmentFileError(
            env.path,
            "extra_rules",
            f"is empty, but {plan.path} names CNI provider custom, whose ports ket-infra does not know",
            "list the CNI's flows under extra_rules (see environments/example.yaml)",
        )
    return Context(env, plan, layout(plan, env), work_dir(env, base), progress)


LOCK_FILE = ".ket-infra.lock"  # in the work folder: held by the one run working on it, naming its pid


@contextmanager
def work_lock(ctx: Context) -> Iterator[None]:
    """Hold the work folder for one run (render, plan, apply, destroy) from start to end; refuse a second.

    Two runs of one environment would render and plan the same folder under each other, and the
    local backend locks the state only while a Terraform command runs. The lock is the operating
    system's (flock), so it goes with the process however it ends; Terraform does not inherit it.
    """
    ctx.work.mkdir(parents=True, exist_ok=True)
    with open(ctx.work / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KetInfraError(
                f"another ket-infra run ({_holder(handle)}) is working on {ctx.work}; runs of one environment "
                "cannot overlap: wait until it ends, then run this again"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _holder(handle: Any) -> str:
    """The pid the lock file names (its holder may not have written it yet: asked again for a moment)."""
    import time

    for _ in range(20):
        handle.seek(0)
        pid = handle.read().strip()
        if pid.isdigit():
            return f"pid {pid}"
        time.sleep(0.05)
    return "pid unknown"


def discover_and_render(ctx: Context) -> Discovery:
    """Guard the account, find the nodes, refuse what cannot work, render."""
    from ket_infra import aws

    ctx.progress(f"checking AWS account and finding {len(ctx.plan.nodes)} node(s) in {ctx.env.aws.region}")
    # Both only read: the nodes are looked up while the account is checked, and a wrong account
    # is still what is reported first. The lookup's thread is a daemon: a signal that stops the
    # run does not wait for an answer from AWS.
    finding: Future[Discovery] = Future()

    def find() -> None:
        try:
            finding.set_result(aws.discover(ctx.plan, ctx.env))
        except BaseException as exc:
            finding.set_exception(exc)

    background(find, "discover")
    aws.check_account(ctx.env)
    found = finding.result()
    own = {f"{ctx.rules.cluster}-{g.name}" for g in ctx.rules.groups}
    aws.check_interfaces(found, own, ctx.plan)
    if ctx.rules.host_settings:
        kubelet = {n.host for n in ctx.plan.nodes if n.roles & set(KUBELET_ROLES)}
        aws.check_routed_subnets(ctx.plan, found, kubelet)
        ctx.rules = ctx.rules.without({"calico-routed-subnet"})  # the nodes share one subnet: it no longer applies
    for warning in ctx.rules.warnings:
        ctx.warn(warning)
    attachments = [Attachment(n.host, ctx.plan.node(n.host).group, n.network_interface_id) for n in found.nodes]
    render(ctx.rules, ctx.env, found.vpc_id, attachments, ctx.work, ctx.changing)
    ctx.progress(
        f"rendered {ctx.work} (VPC {found.vpc_id}, {len(ctx.rules.groups)} groups, {len(ctx.rules.rules)} rules)"
    )
    ctx.found = found
    return found


def orphans(owned: Owned, wanted: dict[str, Any], managed: set[str], found: Discovery) -> tuple[list[Import], int]:
    """What ket-infra made in AWS that the state lacks and the rendered config still wants.

    Returns the imports (groups, rules, attachments) and how many other orphans the config no
    longer wants (they are left alone). WANTED is the rendered tfvars; MANAGED the state's addresses.
    """
    imports: list[Import] = []
    unwanted = 0
    group_ids: dict[str, str] = {}  # group key -> id, whether the group is in the state or not
    for gid, key in sorted(owned.groups.items()):
        group_ids.setdefault(key, gid)
        addr = group_address(key)
        if addr in managed:
            continue
        if key in wanted["groups"] and group_ids[key] == gid:
            imports.append(Import(addr, gid, "group"))
        else:
            unwanted += 1
    taken: set[str] = set()
    for rule in owned.rules:
        addr = rule_address(rule.direction, rule.name)
        if addr in managed:
            continue
        spec = wanted[f"{rule.direction}_rules"].get(rule.name)
        if spec is not None and addr not in taken and group_ids.get(spec["group"]) == rule.group_id:
            imports.append(Import(addr, rule.rule_id, rule.direction))
            taken.add(addr)
        else:
            unwanted += 1
    for host, carried in sorted(owned.carried.items()):
        addr = attachment_address(host)
        if addr in managed:
            continue
        spec = wanted["attachments"].get(host)
        want = group_ids.get(spec["group"]) if spec else None
        if (
            spec is not None
            and want is not None
            and want in carried
            and spec["network_interface_id"] == found.node(host).network_interface_id
        ):
            imports.append(Import(addr, attachment_import_id(spec["network_interface_id"], want), "attachment"))
        unwanted += len([g for g in carried if g != want])
    return imports, unwanted


def refuse_foreign(owned: Owned, imports: list[Import], ours: str) -> None:
    """Never adopt what another Terraform state owns: two states would then manage one resource."""
    for imp in imports:
        owner = owned.states.get(imp.id)
        if owner is not None and owner != ours:
            raise KetInfraError(
                f"{imp.kind} {imp.id} ({imp.address}) belongs to the Terraform state at {owner}, not to this "
                f"environment's at {ours}: it will not be adopted; run ket-infra with the environment file "
                "that owns it (or destroy it from there) instead"
            )


def adopt_orphans(ctx: Context, tf: Terraform, found: Discovery) -> list[Import]:
    """Write import blocks for what a killed apply created but never wrote to the state (else remove them)."""
    from ket_infra import aws

    owned = aws.owned_resources(ctx.env, ctx.rules.cluster, found)
    imports: list[Import] = []
    unwanted = 0
    if owned.groups:
        managed = set(tf.state_resources())
        wanted = json.loads((ctx.work / TFVARS).read_text())
        imports, unwanted = orphans(owned, wanted, managed, found)
        refuse_foreign(owned, imports, state_identity(ctx.env, ctx.work))
    write_imports(ctx.work, imports, ctx.changing)
    if imports:
        names = {"group": "group", "ingress": "ingress rule", "egress": "egress rule", "attachment": "attachment"}
        kinds = ", ".join(
            f"{n} {name}{'s' * (n != 1)}" for k, name in names.items() if (n := sum(1 for i in imports if i.kind == k))
        )
        ctx.progress(
            f"adopting {len(imports)} orphan(s) ({kinds}): ket-infra made them in AWS for {ctx.rules.cluster}/"
            f"{ctx.env.name} but they are missing from the Terraform state (a run was killed during apply?); "
            f"importing them instead of creating duplicates (see {ctx.work / IMPORTS})"
            + (f"; {unwanted} other(s) the plan no longer wants are left alone" if unwanted else "")
        )
    return imports


def plan(ctx: Context) -> PlanSummary:
    """Discover, render, adopt orphans, and save Terraform's plan; what it would change.

    When the folder is rendered and initialised from an earlier run, Terraform's plan starts at
    once, while the nodes are looked up: it is kept when the folder is then as it was when that
    plan started, else stopped (before this run's first file changes) and made again. The saved
    fingerprint is of the files the plan was made from: the plan and environment files as this
    run read them, the folder as rendered before Terraform started.
    """
    tf = ctx.tf
    tf.check_version()
    tf.forget_plan()
    started = ctx.inputs()  # what a plan started now reads
    ahead = tf.plan_ahead()
    if ahead is not None:
        ctx.changing = ahead.cancel
    try:
        found = discover_and_render(ctx)
        tf.init()
        ctx.imports = adopt_orphans(ctx, tf, found)
        planned = ctx.inputs()
        if ahead is not None and planned != started:
            ahead.cancel()  # the folder changed under it, though not by this run's render (another run, a hand)
    except BaseException:
        if ahead is not None:
            ahead.cancel()
        raise
    finally:
        ctx.changing = no_hook
    summary = tf.plan(ctx.purposes()) if ahead is None or ahead.cancelled else ahead.result(ctx.purposes())
    tf.save_fingerprint(tf.fingerprint(planned))
    (ctx.work / INPUT_DIGESTS).write_text(json.dumps(input_digests(planned), indent=1, sort_keys=True) + "\n")
    for line in summary_lines(summary):
        ctx.out(line)
    if ctx.env.detach_groups:
        ctx.progress(
            f"after the apply: detach_groups {', '.join(ctx.env.detach_groups)} come off the nodes' interfaces "
            "once every required flow is proven open without them (nothing is detached otherwise)"
        )
    return summary


def apply(ctx: Context, auto_approve: bool) -> Report:
    """Apply the saved plan (or plan and apply), then the host settings and detach_groups; verify's report
    of what that left (ready only when it is ok)."""
    tf = ctx.tf
    if auto_approve:
        plan(ctx)
    else:
        saved = tf.saved_fingerprint()
        if saved is None:
            raise KetInfraError(
                f"no saved plan for environment {ctx.env.name} in {ctx.work}; run ket-infra plan --env {ctx.env.arg} "
                "first (or apply --auto-approve)"
            )
        now = ctx.inputs()
        if saved != tf.fingerprint(now):
            raise KetInfraError(
                f"the saved plan for environment {ctx.env.name} is stale: {_what_changed(ctx, now)} changed since it "
                f"was made; run ket-infra plan --env {ctx.env.arg} again"
            )
        tf.check_version()
        tf.init()  # a saved plan carried to another job comes without .terraform/; skipped when in place
    try:
        applied = tf.apply()
    except TerraformError as exc:
        raise TerraformError(
            f"{exc} -- the apply may have made part of its changes; run ket-infra plan --env {ctx.env.arg} "
            "to see what is left, then apply again (a rerun converges)"
        ) from None
    tf.forget_plan()
    if applied.has_changes:
        settle(ctx)
    try:
        host_settings(ctx, restore=False)
        foreign_groups(ctx)
    except AwsError as exc:
        raise AwsError(
            f"{exc} -- Terraform applied ket-infra's groups and rules, the source/dest check and detach_groups "
            f"are not all done; run ket-infra apply --env {ctx.env.arg} --auto-approve again once fixed (it converges)"
        ) from None
    return proven(ctx, settling=applied.has_changes)


# EC2 is eventually consistent: a group or rule just created may not show in Describe calls for a while
# ("if you run a command to modify or describe the resource that you just created, its ID might not have
# propagated throughout the system", https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html,
# which advises describing again with exponential backoff). After an apply that made something, a
# blocked verdict is judged again (0.5, 1, 2, 4 s later) before it is said.
SETTLE_DELAYS = (0.5, 1.0, 2.0, 4.0)


def settle(ctx: Context) -> None:
    """Wait (SETTLE_DELAYS) until EC2's Describe calls show every group and rule the apply made: what comes
    next (detach_groups' proof, the verdict) judges the live state, and would judge it without them."""
    import time

    from ket_infra import aws

    wanted = json.loads((ctx.work / TFVARS).read_text())
    groups, rules = len(wanted["groups"]), len(wanted["ingress_rules"]) + len(wanted["egress_rules"])
    found = ctx.found or aws.discover(ctx.plan, ctx.env)
    for delay in SETTLE_DELAYS:
        owned = aws.owned_resources(ctx.env, ctx.rules.cluster, found)
        if len(owned.groups) >= groups and len(owned.rules) >= rules:
            return
        ctx.progress(
            f"EC2 shows {len(owned.groups)} of {groups} groups and {len(owned.rules)} of {rules} rules the apply made "
            f"(it is eventually consistent): looking again in {delay:g} s"
        )
        time.sleep(delay)


def proven(ctx: Context, settling: bool = False) -> Report:
    """Judge what the apply left with verify (a fixed number of read calls): "ready" only when every required
    flow is open. A saved plan made before the cloud changed (a rule removed by hand after plan said "no
    changes") applies cleanly and leaves the flow blocked: that is said, with the way out.

    SETTLING: the apply has just made or changed something, which EC2 may not show yet: a blocked verdict
    is judged again, with backoff (SETTLE_DELAYS), before it is said."""
    import time

    from ket_infra.verify import verify

    report = verify(ctx.plan, ctx.env, ctx.rules)
    for delay in SETTLE_DELAYS if settling else ():
        if report.ok:
            break
        ctx.progress(
            f"not every required flow shows open yet (EC2 is eventually consistent): judging again in {delay:g} s"
        )
        time.sleep(delay)
        report = verify(ctx.plan, ctx.env, ctx.rules)
    if report.ok:
        ctx.out(f"applied: environment {ctx.env.name} is ready for kismatic install apply")
        return report
    flows = list(
        dict.fromkeys(
            f"{c.rule}: {c.what} from {c.source.label} to {c.target.label}"
            for c in report.checks
            if c.status == "blocked"
        )
    )
    flows += [
        f"source/dest check on {h.node.host} ({h.node.instance_id})"
        for h in report.host_settings
        if h.status == "blocked"
    ]
    if flows:
        found = f"verify finds {len(flows)} required flow{'s' * (len(flows) != 1)} blocked"
    else:
        found = f"verify judged nothing ({len(report.checks)} checks over {report.nodes} nodes)"
    it = "it" if len(flows) == 1 else "them"
    ctx.out(
        f"applied, but environment {ctx.env.name} is not ready: {found}; the cloud changed after the saved plan was "
        f"made (a rule removed by hand?), or something ket-infra does not manage (a network ACL) blocks {it}"
    )
    for flow in flows[:3]:
        ctx.out(f"  {flow}")
    if len(flows) > 3:
        ctx.out(f"  and {len(flows) - 3} more")
    ctx.out(
        f"run ket-infra plan --env {ctx.env.arg} again, then apply (ket-infra verify --env {ctx.env.arg} "
        "names the causes)"
    )
    return report


# Terraform's attribute names of a rule, as the JSON contract names them (rules --format json)
_RULE_ATTRIBUTES = {"ip_protocol": "protocol", "from_port": "from_port", "to_port": "to_port"}


def change_details(ctx: Context, summary: PlanSummary) -> list[dict[str, Any]]:
    """Each change of SUMMARY for `plan --format json`: what it is (a rule's protocol, ports and peer, as
    `rules --format json` writes them: what the rendered rules want, or for a removal what the state holds)
    and, for an update, the attributes that change, before and after (from the saved plan)."""
    from ket_infra.terraform import RULE_TYPES

    wanted = json.loads((ctx.work / TFVARS).read_text())
    types = {kind: resource for resource, kind in RULE_TYPES.items()}
    planned = ctx.tf.planned_values() if any(c.action != "create" for c in summary.changes) else {}
    group_names = {  # a group's id -> its key, for the peer of a removed rule (the state names it by id)
        str(v.get(side, {}).get("id")): key
        for (kind, key), v in planned.items()
        if kind == "aws_security_group"
        for side in ("before", "after")
        if isinstance(v.get(side), dict) and v[side].get("id")
    }
    out: list[dict[str, Any]] = []
    for c in summary.changes:
        doc: dict[str, Any] = {"action": c.action, "kind": c.kind, "name": c.name, "purpose": c.purpose}
        values = planned.get((types.get(c.kind, ""), c.name), {})
        if c.kind in ("ingress", "egress"):
            rule = wanted[f"{c.kind}_rules"].get(c.name)
            if rule is not None:
                peer = rule.get("source_group") if c.kind == "ingress" else rule.get("destination_group")
                doc.update(protocol=rule["protocol"], from_port=rule["from_port"], to_port=rule["to_port"])
                doc["source" if c.kind == "ingress" else "destination"] = (
                    {"group": peer} if peer is not None else {"cidr": rule["cidr"]}
                )
            elif isinstance(values.get("before"), dict):  # removed: what the state holds
                before = values["before"]
                doc.update({name: before.get(attr) for attr, name in _RULE_ATTRIBUTES.items()})
                peer_id = before.get("referenced_security_group_id")
                peer_doc = (
                    {"group": group_names.get(str(peer_id), peer_id)} if peer_id else {"cidr": before.get("cidr_ipv4")}
                )
                doc["source" if c.kind == "ingress" else "destination"] = peer_doc
        if c.action == "update" and isinstance(values.get("before"), dict) and isinstance(values.get("after"), dict):
            before, after = values["before"], values["after"]
            keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k != "tags_all")
            doc["before"] = {k: before.get(k) for k in keys}
            doc["after"] = {k: after.get(k) for k in keys}
        out.append(doc)
    return out


def foreign_groups(ctx: Context) -> None:
    """Take the environment's detach_groups off the nodes (once proven safe); put back those no longer listed."""
    from ket_infra import aws, detach

    found = ctx.found or aws.discover(ctx.plan, ctx.env)
    record = detach.Record.of(ctx.env, ctx.work)
    detach.apply_detach(ctx.plan, ctx.env, ctx.rules, found, ctx.progress, record=record)


def _host_setting_targets(ctx: Context, found: Discovery) -> list[Any]:
    groups = {h.group for h in ctx.rules.host_settings}
    return [n for n in found.nodes if ctx.plan.node(n.host).group in groups]


def host_settings(ctx: Context, restore: bool) -> None:
    """Set the EC2 source/dest check where the rules say so, each node's value recorded before ket-infra first
    changes it; put the recorded value back (RESTORE: on destroy, for every node; on apply, for nodes the rules
    no longer set it on), not AWS's default: a node that had it off before ket-infra keeps it off."""
    from ket_infra import aws, detach

    record = detach.CheckRecord.of(ctx.env, ctx.work)
    book = record.read()
    if restore:
        if book:
            ctx.progress(f"source/dest check back as it was before ket-infra for {len(book)} node(s)")
            if not aws.put_back_source_dest_checks(ctx.env, _was(book), ctx.progress):
                ctx.progress("  already as it was")
            record.write({})
        return
    if not ctx.rules.host_settings and not book:
        return
    targets = (
        _host_setting_targets(ctx, ctx.found or aws.discover(ctx.plan, ctx.env)) if ctx.rules.host_settings else []
    )
    value = ctx.rules.host_settings[0].source_dest_check if targets else True
    if targets:
        ctx.progress(f"source/dest check {'on' if value else 'off'} for {len(targets)} node(s)")
        current = aws.source_dest_checks(ctx.env, [t.instance_id for t in targets])
        first = {
            t.instance_id: detach.Checked(t.host, current[t.instance_id])
            for t in targets
            if t.instance_id in current and current[t.instance_id] != value and t.instance_id not in book
        }
        if first:
            book = {**book, **first}
            record.write(book)  # before any change: a run killed half-way still knows what was there
        if not aws.set_source_dest_check(ctx.env, targets, value, ctx.progress):
            ctx.progress("  already set")
    named = {t.instance_id for t in targets}
    back = {i: c for i, c in book.items() if i not in named}
    if back:
        ctx.progress(f"source/dest check back as it was for {len(back)} node(s) the rules no longer set it on")
        aws.put_back_source_dest_checks(ctx.env, _was(back), ctx.progress)
        record.write({i: c for i, c in book.items() if i not in back})
    if ctx.found is not None:  # the nodes as they are now: what detach_groups judges next
        now = {**{t.instance_id: value for t in targets}, **{i: c.source_dest_check for i, c in back.items()}}
        nodes = tuple(
            replace(n, source_dest_check=now.get(n.instance_id, n.source_dest_check)) for n in ctx.found.nodes
        )
        ctx.found = aws.Discovery(ctx.found.vpc_id, nodes)


def _was(book: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {i: (c.host, c.source_dest_check) for i, c in book.items()}


Approve = Callable[[list[str]], bool]


def destroy(ctx: Context, approve: Approve) -> None:
    """Plan the removal of what the state holds, list it, and remove it once APPROVE says yes.

    What to remove comes from the Terraform state, not from discovery: with an s3 backend a
    fresh checkout (no work folder) destroys what an earlier run made, even when the cluster's
    instances are gone. When APPROVE declines, nothing changes and the run fails.
    """
    from ket_infra import aws, detach

    tf = ctx.tf
    tf.check_version()
    if not (ctx.work / MAIN).exists():
        render_state_only(ctx.rules, ctx.env, ctx.work)
        ctx.progress(f"rendered {ctx.work} to read the Terraform state (no nodes needed)")
    tf.init()
    tf.forget_plan()
    (ctx.work / IMPORTS).unlink(missing_ok=True)  # import blocks are for plan/apply; destroy acts on the state
    summary = tf.plan_destroy()
    reattach: dict[str, list[str]] = {}  # interface -> foreign groups ket-infra took off it, to put back
    record = detach.Record.of(ctx.env, ctx.work)
    checks = detach.CheckRecord.of(ctx.env, ctx.work)
    # the source/dest checks ket-infra changed, as they were before (the record names the instances: no
    # node needs to be found)
    restore = sorted(f"{c.host} ({'on' if c.source_dest_check else 'off'})" for c in checks.read().values())
    with contextlib.suppress(KetInfraError):  # nodes gone: the record still names their interfaces
        ctx.found = aws.discover(ctx.plan, ctx.env)
    # the record names the interfaces, the plan's or not: they are found even when some nodes are gone
    recorded_on = ctx.found or aws.Discovery("", ())
    reattach = detach.recorded(ctx.env, recorded_on, record=record)
    if not summary.has_changes and not restore and not reattach:
        tf.forget_plan()
        ctx.out(f"nothing to destroy: the Terraform state of environment {ctx.env.name} holds nothing")
        return
    listing = summary_lines(summary)[:-1] if summary.has_changes else []
    if restore:
        listing.append(
            f"  ~ source/dest check back as it was before ket-infra for {len(restore)} node(s): {', '.join(restore)}"
        )
    if reattach:
        back = sorted({g for groups in reattach.values() for g in groups})
        listing.append(f"  + re-attach {', '.join(back)} (detach_groups) to {len(reattach)} node(s) first")
    n = summary.counts()
    listing.append(
        f"Destroy: {n['delete']} to remove" + (f", {len(restore)} host setting(s) to restore" if restore else "")
    )
    if not approve(listing):
        tf.forget_plan()  # a destroy plan nobody approved is not left lying around
        raise KetInfraError(
            f"destroy cancelled (the answer was not yes): nothing of environment {ctx.env.name} was changed"
        )
    if reattach:
        # before ket-infra's groups go: an interface is never left without the groups it needs
        ctx.progress(f"re-attaching the groups detach_groups took off {len(reattach)} node(s)")
        try:
            detach.reattach(ctx.env, recorded_on, ctx.progress, record=record)
        except AwsError as exc:
            raise AwsError(
                f"{exc} -- nothing of ket-infra's groups and rules was destroyed (the groups put back so far stay, "
                f"the rest is kept in {record.where}); run ket-infra destroy --env {ctx.env.arg} again once fixed"
            ) from None
    try:
        tf.destroy()
    except TerraformError as exc:
        raise TerraformError(
            f"{exc} -- the destroy may have removed part of ket-infra's groups and rules; run ket-infra destroy "
            f"--env {ctx.env.arg} again once fixed (the source/dest checks are put back after it)"
        ) from None
    try:
        host_settings(ctx, restore=True)
    except AwsError as exc:
        raise AwsError(
            f"{exc} -- ket-infra's groups and rules are destroyed, but the source/dest check is not all put back "
            f"(what is left stays in {checks.record.where}); run ket-infra destroy --env {ctx.env.arg} again once fixed"
        ) from None
    ctx.out(f"destroyed: ket-infra's groups and rules for environment {ctx.env.name} are gone")
