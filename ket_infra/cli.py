"""The command line: build the context, call the core, print, exit.

Every KetInfraError becomes one line on stderr and exit 1 (a traceback only
with --debug). Heavy modules (boto3, jinja2, Terraform) are imported inside
the commands that need them, so `ket-infra --help` starts fast.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ket_infra import __version__
from ket_infra.errors import Interrupted, KetInfraError, Stopped

EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_BLOCKED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it; 128 + the signal for SIGTERM (143) and SIGHUP (129)


# The commands in the order of the job (what to open, then the pipeline, then the tools around it).
ORDER = (
    "rules",
    "compare",
    "plan",
    "apply",
    "verify",
    "audit",
    "destroy",
    "render",
    "iam-policy",
    "sandbox",
    "lab",
    "version",
)


class _Cli(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        """--help lists the commands in workflow order; any not named in ORDER after them."""
        names = list(self.commands)
        return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(128 + exc.signum)
        except KetInfraError as exc:
            if ctx.params.get("debug") or ctx.meta.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_ERROR)
        except Exception as exc:
            # a botocore exception no AWS call site turned into a KetInfraError, whatever its class
            from ket_infra.aws import botocore_line, from_botocore

            if ctx.params.get("debug") or ctx.meta.get("debug") or not from_botocore(exc):
                raise
            click.echo(f"error: AWS: {botocore_line(exc)} (--debug shows where)", err=True)
            ctx.exit(EXIT_ERROR)


def _remember(key: str) -> Any:
    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value and not ctx.meta.get(key):
            ctx.meta[key] = True  # meta is shared by the whole command line's contexts
            if key == "quiet":  # Terraform's live progress too, for this command only
                from ket_infra.progress import QUIET

                token = QUIET.set(True)
                ctx.find_root().call_on_close(lambda: QUIET.reset(token))
        return value

    return remember


def _chdir(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """-C DIR: run as if started in DIR (as terraform -chdir): paths, environments/ and .work/ are DIR's."""
    import os

    if value is not None:
        try:
            os.chdir(value)
        except OSError as exc:
            raise click.BadParameter(f"{value}: {exc.strerror}; give an existing folder") from None
    return value


@click.group(
    cls=_Cli,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  ket-infra rules kismatic-cluster.yaml        # the rules a plan needs, offline
  ket-infra plan --env staging                 # then apply, verify, audit (KET_INFRA_ENV=staging does for --env)""",
)
@click.version_option(__version__, prog_name="ket-infra")
@click.option("--debug", is_flag=True, callback=_remember("debug"), help="Show tracebacks for errors.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    callback=_remember("quiet"),
    help="Errors and the final line only: no progress, warnings or notes on stderr; text reports cut to their "
    "verdict (machine formats stay whole).",
)
@click.option(
    "-C",
    "--chdir",
    metavar="DIR",
    expose_value=False,
    is_eager=True,
    callback=_chdir,
    help="Run as if started in DIR (as terraform -chdir).",
)
def cli(debug: bool) -> None:
    """Least-privilege cloud network rules for a KET cluster's CNI.

    Reads a KET plan file, works out the exact flows the cluster and its CNI
    need, shows them (rules), applies them with Terraform (plan, apply) and
    checks the live cloud (verify, audit). Data goes to stdout; progress,
    warnings and notes to stderr.
    """


def complete_env(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of --env: the environment names in ./environments/, else file paths."""
    from pathlib import Path

    from click.shell_completion import CompletionItem

    if "/" in incomplete or incomplete.startswith("."):
        return [CompletionItem(incomplete, type="file")]
    names = sorted(p.stem for p in Path("environments").glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def _quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("quiet"))


def _progress(message: str) -> None:
    """Progress, warnings and notes: stderr for every command and format; nothing of it with --quiet.

    The first line starts the command's heartbeat: a line at least every 10 s until it ends."""
    if _quiet():
        return
    click.echo(message, err=True)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        from ket_infra.progress import Heartbeat

        root = ctx.find_root()
        beat = root.meta.get("heartbeat")
        if beat is None:
            beat = root.meta["heartbeat"] = root.with_resource(Heartbeat(lambda line: click.echo(line, err=True)))
        beat.note(message)


def _warn(warning: str) -> None:
    from ket_infra.layout import Warn

    _progress(f"warning: {warning.shown() if isinstance(warning, Warn) else warning}")


def _warnings(rules: Any, env: Any, full: bool = True) -> None:
    """The layout's warnings on stderr: each in full (FULL), else one note naming their ids (a command after
    plan, which said them); the ones the environment file acknowledges, as acknowledged."""
    from ket_infra.layout import warning_id

    if full:
        for warning in rules.warnings:
            _warn(warning)
    elif rules.warnings:
        ids = ", ".join(dict.fromkeys(warning_id(w) for w in rules.warnings))
        _progress(f"note: {len(rules.warnings)} warning(s) apply ({ids}); ket-infra rules --env {env.arg} says them")
    _acknowledged(rules, env)


def _acknowledged(rules: Any, env: Any) -> None:
    from ket_infra.layout import warning_id

    if rules.acknowledged:
        ids = ", ".join(dict.fromkeys(warning_id(w) for w in rules.acknowledged))
        _progress(f"note: {len(rules.acknowledged)} warning(s) acknowledged in {env.path}: {ids}")


def _last_line(text: str) -> str:
    """A text report's final line (its verdict), as --quiet prints it."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] + "\n") if lines else ""


def _report(text: str) -> None:
    """A text report on stdout; with --quiet, its final line."""
    click.echo(_last_line(text) if _quiet() else text, nl=False)


class _Result:
    """A command's result lines (the plan's changes, apply's verdict) for stdout; with --quiet only the last,
    printed by done() once the command has succeeded."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, line: str) -> None:
        self.last = line
        if not _quiet():
            click.echo(line)

    def done(self) -> None:
        if _quiet() and self.last is not None:
            click.echo(self.last)


ENV_VAR = "KET_INFRA_ENV"  # stands in for --env


@cli.command(
    epilog="""\b
Examples:
  ket-infra rules kismatic-cluster.yaml --format markdown > RULES.md
  ket-infra rules --env staging              # the plan file staging's plan_file names, with its CIDRs"""
)
@click.argument("plan_file", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Environment name (environments/ENV.yaml) or file path; its CIDRs apply, and its plan_file is the "
    "plan when PLAN_FILE is not given. [env var: KET_INFRA_ENV]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "mermaid", "nftables"]),
    default="table",
    show_default=True,
    help="table for a terminal, json for tools, markdown for a pull request, mermaid for a diagram, "
    "nftables for a host firewall (nft -f) on hosts without cloud security groups.",
)
@click.option(
    "--audit",
    "audit_file",
    type=click.Path(dir_okay=False),
    help="With --format mermaid: mark the excess paths of an audit's JSON (ket-infra audit --format json).",
)
@click.option(
    "--node",
    "node",
    metavar="HOST",
    help="With --format nftables: only HOST's firewall, a file for `nft -f` on that host.",
)
def rules(plan_file: str | None, env: str | None, fmt: str, audit_file: str | None, node: str | None) -> None:
    """Offline: the security groups and rules PLAN_FILE needs.

    With --env, the environment file's installer_cidr, ingress_cidrs,
    api_cidrs, egress_cidrs, gluster_brick_ports, extra_rules, preflight and
    acknowledge apply, and PLAN_FILE may be left out (its plan_file is read).
    Warnings go to stderr, each ending in the id that acknowledge takes.
    --format nftables writes each group's rules as a host firewall with
    security-group semantics (default drop both ways, stateful, group
    references as address sets): one file per group, or --node HOST's.
    """
    from ket_infra.layout import layout
    from ket_infra.report import render

    if audit_file is not None and fmt != "mermaid":
        raise KetInfraError(f"--audit {audit_file} marks a diagram: add --format mermaid")
    if node is not None and fmt != "nftables":
        raise KetInfraError(f"--node {node} picks one host's firewall: add --format nftables")
    plan, environment = _plan_and_env(plan_file, env)
    rs = layout(plan, environment)
    if fmt == "nftables":
        from ket_infra.lab import nftables

        if node is not None and node not in {n.host for n in plan.nodes}:
            hosts = ", ".join(n.host for n in plan.nodes)
            raise KetInfraError(f"{plan.path}: --node {node} is no node of the plan; use one of {hosts}")
        _warnings(rs, environment)
        click.echo(nftables.render(rs, plan, node), nl=False)
        return
    audit = _audit_json(audit_file) if audit_file else None  # every input read before anything is said
    _warnings(rs, environment)
    click.echo(render(rs, fmt, audit), nl=False)


def _plan_and_env(plan_file: str | None, env: str | None) -> tuple[Any, Any]:
    """The plan PLAN_FILE names (else the environment's plan_file) and the environment ENV names (or None).

    A PLAN_FILE that is not the environment's plan would mix two clusters' rules: refused, naming both."""
    from pathlib import Path

    from ket_infra.environment import load_environment
    from ket_infra.plan import load_plan

    environment = load_environment(env) if env else None
    if plan_file is None:
        if environment is None:
            raise click.UsageError(f"give PLAN_FILE, or --env ENV whose plan_file names it (or set {ENV_VAR})")
        return load_plan(environment.plan_file), environment
    if environment is not None and Path(plan_file).resolve() != environment.plan_file:
        given = "" if _env_from_option() else f" (from {ENV_VAR})"
        raise KetInfraError(
            f"{plan_file} is not the plan of environment {environment.name}{given}: {environment.path}: plan_file "
            f"names {environment.plan_file}; drop PLAN_FILE to use that plan, or pass the environment of {plan_file}"
        )
    return load_plan(plan_file), environment


def _env_from_option() -> bool:
    """Whether --env was given on the command line (not taken from KET_INFRA_ENV)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source("env") != ParameterSource.ENVIRONMENT


def _audit_json(path: str) -> dict[str, Any]:
    """An audit's JSON (`audit --format json`), read like every input file and checked field by field
    before the diagram uses it: a wrong type is one line naming its JSON path, never a traceback."""
    import json
    from pathlib import Path

    from ket_infra import yamldoc
    from ket_infra.errors import InputError

    shown = yamldoc.shown_path(Path(path))
    fix = "give the file ket-infra audit --format json wrote"

    def bad(key: str | None, problem: str) -> InputError:
        return InputError(shown, key, problem, fix)

    text = yamldoc.read(Path(path), InputError, "ket-infra audit report", "JSON")
    try:
        doc = json.loads(text)
    except RecursionError:
        raise bad(None, "not JSON (nested too deeply)") from None
    except ValueError as exc:
        raise bad(None, f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise bad(None, f"must be a JSON object, got {yamldoc.describe(doc)}")
    excess = doc.get("excess")
    if not isinstance(excess, list):
        raise bad("excess", "is missing" if excess is None else f"must be a list, got {yamldoc.describe(excess)}")
    for i, e in enumerate(excess):
        at = f"excess[{i}]"
        if not isinstance(e, dict):
            raise bad(at, f"must be an object, got {yamldoc.describe(e)}")
        if not {"severity", "protocol", "source", "targets"} <= set(e):
            raise bad(None, f"{at} lacks severity, protocol, source or targets")
        for name in ("severity", "protocol", "source"):
            if not isinstance(e[name], str):
                raise bad(f"{at}.{name}", f"must be a string, got {yamldoc.describe(e[name])}")
        for name in ("from_port", "to_port"):
            port = e.get(name)
            if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not -1 <= port <= 65535):
                problem = "must be a port number (-1 to 65535) or null"
                raise bad(f"{at}.{name}", f"{problem}, got {yamldoc.describe(port)}")
        if not isinstance(e["targets"], list):
            raise bad(f"{at}.targets", f"must be a list of node names, got {yamldoc.describe(e['targets'])}")
        for j, host in enumerate(e["targets"]):
            if not isinstance(host, str):
                raise bad(f"{at}.targets[{j}]", f"must be a node name (a string), got {yamldoc.describe(host)}")
        via = e.get("via", {})
        if not isinstance(via, dict):
            raise bad(f"{at}.via", f"must be an object, got {yamldoc.describe(via)}")
        if not isinstance(via.get("group_name", ""), str):
            raise bad(f"{at}.via.group_name", f"must be a string, got {yamldoc.describe(via['group_name'])}")
    return doc


@cli.command(
    epilog="""\b
Examples:
  ket-infra compare kismatic-cluster.yaml
  ket-infra compare --env staging --format markdown   # staging's plan; Calico routed judged from its subnets"""
)
@click.argument("plan_file", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Judge from the subnets AWS puts the nodes in (read-only), and apply the environment's CIDRs; its "
    "plan_file is the plan when PLAN_FILE is not given. [env var: KET_INFRA_ENV]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="table for a terminal (one block per CNI), json for tools, markdown for a pull request.",
)
def compare(plan_file: str | None, env: str | None, fmt: str) -> None:
    """Every CNI KET supports, side by side, for PLAN_FILE's nodes.

    Calico overlay, Calico routed, Weave, Weave encrypted and Contiv: KET's
    comparison facts, what each would need on this cluster (groups, rules,
    protocols, host settings), KET's warnings, and whether it can work here.
    Offline, whether Calico routed can work is unknown: it needs every kubelet
    node in one subnet, which --env finds out from AWS.
    """
    import json

    from ket_infra import compare as cmp

    plan, environment = _plan_and_env(plan_file, env)
    subnets: dict[str, list[str]] | None = None
    if environment is not None:
        from ket_infra.aws import discover

        _progress(f"finding {len(plan.nodes)} node(s) in {environment.aws.region}")
        subnets = {}
        for n in discover(plan, environment).nodes:
            subnets.setdefault(n.subnet_id, []).append(n.host)
    doc = cmp.compare(plan, environment, subnets)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        import shutil

        text = cmp.markdown(doc) if fmt == "markdown" else cmp.table(doc, shutil.get_terminal_size().columns)
        click.echo(text, nl=False)


ENV_OPTION = click.option(
    "--env",
    "env",
    required=True,
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Environment name (environments/ENV.yaml) or file path. [env var: KET_INFRA_ENV]",
)


def _context(env: str, lock: bool = False, warnings: str = "full") -> Any:
    """The workflow context for ENV, progress on stderr, results on stdout (see _Result).

    WARNINGS: "full" says each layout warning once the nodes are found (those that still apply then);
    "note" (commands after a plan) one line naming them. LOCK: the command works on the work folder,
    which it then holds until it ends.
    """
    from ket_infra import workflow

    ctx = workflow.context(env, _progress)
    ctx.output = _Result()
    if warnings == "full":
        ctx.warn = _warn
        _acknowledged(ctx.rules, ctx.env)  # now; the warnings once the nodes are found
    else:
        _warnings(ctx.rules, ctx.env, full=False)
    if lock:
        click.get_current_context().with_resource(workflow.work_lock(ctx))
    return ctx


@cli.command(
    "render",
    short_help="Only write the Terraform root module for ENV.",
    epilog="""\b
Example:
  ket-infra render --env staging && terraform -chdir=.work/staging plan""",
)
@ENV_OPTION
def render_cmd(env: str) -> None:
    """Write the Terraform root module for ENV (finds the nodes in AWS)."""
    from ket_infra import workflow

    ctx = _context(env, lock=True)
    workflow.discover_and_render(ctx)


@cli.command(
    "plan",
    short_help="Find the nodes, render, plan with Terraform (saved).",
    epilog="""\b
Examples:
  ket-infra plan --env staging
  ket-infra plan --env staging --detailed-exitcode --format json > plan.json   # exit 2: changes""",
)
@ENV_OPTION
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: each change with its purpose and the Plan: line; json: the changes for tools.",
)
def plan_cmd(env: str, detailed_exitcode: bool, fmt: str) -> None:
    """Discover the nodes, render, terraform init and plan (saved for apply).

    The changes go to stdout; progress and warnings to stderr.
    """
    import json

    from ket_infra import workflow
    from ket_infra.report import acknowledged_json

    ctx = _context(env, lock=True)
    if fmt == "json":
        ctx.output = lambda _line: None  # the changes are in the document
    summary = workflow.plan(ctx)
    if isinstance(ctx.output, _Result):
        ctx.output.done()
    if fmt == "json":
        doc = {
            "environment": ctx.env.name,
            "changes": workflow.change_details(ctx, summary),
            "counts": summary.counts(),
            "imports": [{"address": i.address, "id": i.id, "kind": i.kind} for i in ctx.imports],
            "warnings": list(ctx.rules.warnings),
            "acknowledged": acknowledged_json(ctx.rules),
        }
        click.echo(json.dumps(doc, indent=2))
    if detailed_exitcode and summary.has_changes:
        sys.exit(EXIT_CHANGES)


@cli.command(
    "apply",
    short_help="Apply the saved plan, then judge it as verify does.",
    epilog="""\b
Examples:
  ket-infra apply --env staging                  # the plan ket-infra plan saved
  ket-infra apply --env staging --auto-approve --verify   # plan and apply in one step, then verify's report""",
)
@ENV_OPTION
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Plan and apply in one step, no saved plan needed (unlike terraform's, which only skips the question).",
)
@click.option("--verify", "then_verify", is_flag=True, help="Print verify's full report of what was applied.")
def apply_cmd(env: str, auto_approve: bool, then_verify: bool) -> None:
    """Apply the saved plan (a stale one is refused), then the host settings.

    Then judges the result as verify does: "ready" only when every required flow
    is open, else the blocked flows and exit 3 (the cloud changed after the plan
    was saved, or something ket-infra does not manage blocks them).
    """
    from ket_infra import workflow

    ctx = _context(env, lock=True, warnings="full" if auto_approve else "note")
    report = workflow.apply(ctx, auto_approve)
    ctx.output.done()
    if then_verify:
        _verify(ctx, "text", report)  # the full report of what apply judged
    elif not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command(
    "verify",
    short_help="Live check: every required flow open between every node pair.",
    epilog="""\b
Examples:
  ket-infra verify --env staging
  ket-infra verify --env staging --format junit > verify.xml   # a CI test report""",
)
@ENV_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "junit"]),
    default="text",
    show_default=True,
    help="junit: JUnit XML for CI test reports, a test case per checked class of node pairs.",
)
def verify_cmd(env: str, fmt: str) -> None:
    """Live check: every required flow open between every pair of nodes.

    Reads AWS only (never changes anything). Exit 0 when all is open, 3 when
    a flow is blocked or a host setting is wrong, 1 on errors.
    """
    _verify(_context(env, warnings="note"), fmt)


def _verify(ctx: Any, fmt: str, report: Any = None) -> None:
    """Print verify's REPORT (read now when not given) in FMT; exit 3 when it is not ok."""
    import json

    from ket_infra.report import acknowledged_json
    from ket_infra.verify import junit_report, node_checks, text_report, verify

    report = report if report is not None else verify(ctx.plan, ctx.env, ctx.rules)
    on_nodes = node_checks(report, ctx.plan)
    if fmt == "json":
        doc = {
            **report.as_json(),
            "warnings": list(ctx.rules.warnings),
            "acknowledged": acknowledged_json(ctx.rules),
            "node_checks": on_nodes,
        }
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "junit":
        click.echo(junit_report(report, ctx.env.name, ctx.rules.cluster, ctx.rules.warnings), nl=False)
    else:
        _report(text_report(report, ctx.env.name, ctx.rules.cluster, on_nodes))
    if not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command(
    "audit",
    epilog="""\b
Examples:
  ket-infra audit --env staging
  ket-infra audit --env staging --format markdown > AUDIT.md   # for a security review""",
)
@ENV_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "junit"]),
    default="text",
    show_default=True,
    help="markdown: a table for a security review; junit: a failure per rule open wider than needed.",
)
def audit_cmd(env: str, fmt: str) -> None:
    """Live check: nothing open beyond the required flows.

    Reads AWS only (never changes anything). Takes every inbound rule of every
    group on the cluster's interfaces, whoever made it, and reports what it lets
    in that the plan does not need: world (from 0.0.0.0/0 or ::/0), vpc (from
    addresses other than the nodes and the environment's CIDRs) or cluster
    (between nodes, wider than the catalog). Exit 0 when nothing is in excess,
    3 when something is, 1 on errors.
    """
    import json

    from ket_infra.audit import audit, junit_report, markdown_report, text_report
    from ket_infra.report import acknowledged_json

    ctx = _context(env, warnings="note")
    report = audit(ctx.plan, ctx.env, ctx.rules)
    if fmt == "json":
        doc = {**report.as_json(), "warnings": list(ctx.rules.warnings), "acknowledged": acknowledged_json(ctx.rules)}
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "junit":
        click.echo(junit_report(report, ctx.env.name, ctx.rules.cluster), nl=False)
    elif fmt == "markdown":
        click.echo(markdown_report(report, ctx.env.name, ctx.rules.cluster), nl=False)
    else:
        _report(text_report(report, ctx.env.name, ctx.rules.cluster))
    if not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command(
    "destroy",
    short_help="Remove what ket-infra created for ENV (asks first).",
    epilog="""\b
Examples:
  ket-infra destroy --env staging                 # lists what goes, asks for yes
  ket-infra destroy --env staging --auto-approve  # in a pipeline""",
)
@ENV_OPTION
@click.option("--auto-approve", is_flag=True, help="Do not ask; needed where there is no terminal (pipelines).")
def destroy_cmd(env: str, auto_approve: bool) -> None:
    """Remove the groups, rules and attachments ket-infra created for ENV.

    Lists what it will remove (from the Terraform state) and the source/dest
    checks it will put back as they were before ket-infra (its record), then
    asks for `yes` on a terminal.
    """
    import shlex

    from ket_infra import workflow

    if not auto_approve and not sys.stdin.isatty():
        raise KetInfraError(
            f"destroy asks for confirmation and there is no terminal to ask on; to destroy from a pipeline, "
            f"run ket-infra destroy --env {shlex.quote(env)} --auto-approve"
        )

    ctx = workflow.context(env, _progress, strict=False)
    ctx.output = result = _Result()
    click.get_current_context().with_resource(workflow.work_lock(ctx))

    def approve(listing: list[str]) -> bool:
        if auto_approve and _quiet():
            return True
        click.echo(f"ket-infra will destroy for environment {ctx.env.name}:")
        for line in listing:
            click.echo(line)
        if auto_approve:
            return True
        answer = click.prompt("Only 'yes' will be accepted to approve", default="", show_default=False)
        return bool(answer.strip() == "yes")

    workflow.destroy(ctx, approve)
    result.done()


@cli.command(
    "iam-policy",
    short_help="The least-privilege IAM policy ket-infra itself needs.",
    epilog="""\b
Examples:
  ket-infra iam-policy --env staging > ket-infra-policy.json
  ket-infra iam-policy --commands verify,audit     # read-only, for a verifying job""",
)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Scope to ENV's region, account, cluster and s3 state (without it: any of each, and no s3 "
    "statements). [env var: KET_INFRA_ENV]",
)
@click.option(
    "--commands",
    default=",".join(("plan", "apply", "verify", "audit", "destroy")),
    show_default=True,
    help="Comma-separated: only what these commands call (verify,audit: read-only).",
)
def iam_policy_cmd(env: str | None, commands: str) -> None:
    """Print the least-privilege IAM policy (JSON) that ket-infra itself needs.

    Each action ket-infra, Terraform's AWS provider (for the module's resources) and
    the s3 backend call, and no other; writes limited to groups tagged
    ket-infra/cluster with the plan's cluster name, the region, the account.
    A refused call names the missing action and points here.
    """
    import json

    from ket_infra import iam
    from ket_infra.environment import load_environment

    chosen = iam.parse_commands(commands)
    environment = load_environment(env) if env else None
    click.echo(json.dumps(iam.policy(environment, chosen), indent=2))


@cli.group(
    epilog="""\b
Example:
  ket-infra sandbox up examples/calico-overlay.yaml --port 5055 && ket-infra plan --env sandbox""",
)
def sandbox() -> None:
    """A local AWS API emulator (moto server) seeded from a plan file."""


@sandbox.command(
    "up",
    epilog="""\b
Examples:
  ket-infra sandbox up examples/calico-overlay.yaml             # then: ket-infra plan --env sandbox
  ket-infra sandbox up plan.yaml --port 5055 --env-file environments/demo.yaml""",
)
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default="environments/sandbox.yaml",
    show_default=True,
    help="The environment file to write, pointing at the sandbox (pass it as --env).",
)
@click.option(
    "--like",
    type=click.Choice(["kismatic-provision", "kops"]),
    default=None,
    help="Also leave the security groups and instance settings that tool leaves: kismatic-provision's "
    "group open to all traffic from 0.0.0.0/0 (source/dest check off), or kops' masters./nodes. groups.",
)
@click.option(
    "--consistency-delay",
    type=click.FloatRange(0, 60),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How long a new security group or rule stays invisible to Describe calls (EC2's eventual consistency).",
)
@click.option(
    "--throttle",
    default="500/100",
    show_default=True,
    metavar="BUCKET/RATE",
    help="Per API action: calls at once, then calls per second, before RequestLimitExceeded (0/0: none; "
    "100/20 is AWS's for non-mutating actions, tighter than Terraform's sandbox retries outlast).",
)
@click.option(
    "--rules-quota",
    type=click.IntRange(1, 1000),
    default=60,
    show_default=True,
    help="Inbound (and outbound) rules per security group; above 60 emulates a raised quota, and the "
    "environment file gets rules_per_group_quota.",
)
@click.option("--reset", is_flag=True, help="Empty and reseed the sandbox already running on --port.")
def sandbox_up(
    plan_file: str,
    port: int,
    env_file: str,
    like: str | None,
    consistency_delay: float,
    throttle: str,
    rules_quota: int,
    reset: bool,
) -> None:
    """Start the emulator, create a VPC, subnets and one instance per node, write the --env-file.

    A sandbox already running on --port is refused (naming what it was seeded from) unless --reset.
    The emulator refuses what AWS refuses: 5 security groups per interface, the rules quota per
    group, names, descriptions and tags EC2 does not allow, over 200 filter values per call,
    MaxResults out of range, deleting a group something depends on, a duplicate rule; new groups
    and rules are invisible to Describe calls for a moment, and calls past a rate are throttled.
    """
    import re
    from pathlib import Path

    from ket_infra.sandbox import sandbox_up as up
    from ket_infra.sandbox_aws import Behaviours

    rate = re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6}(?:\.\d+)?)\s*", throttle)
    if rate is None:
        raise click.BadParameter(f"{throttle!r} is not BUCKET/RATE, such as 100/20", param_hint="--throttle")
    behaviours = Behaviours(consistency_delay, int(rate.group(1)), float(rate.group(2)), rules_quota)
    path = up(
        Path(plan_file),
        port=port,
        env_file=Path(env_file),
        progress=_progress,
        like=like,
        behaviours=behaviours,
        reset=reset,
    )
    click.echo(f"sandbox ready: use --env {path}")


@sandbox.command(
    "down",
    epilog="""\b
Example:
  ket-infra sandbox down --port 5055""",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="The port sandbox up was given."
)
def sandbox_down(port: int) -> None:
    """Stop the emulator on PORT and remove its pid file and log."""
    from ket_infra.sandbox import sandbox_down as down

    click.echo("sandbox stopped" if down(port=port) else f"no sandbox was running on port {port}")


@cli.group(
    short_help="Prove the rules with real packets and daemons in namespaces.",
    epilog="""\b
Example:
  ket-infra lab up examples/calico-routed.yaml && ket-infra lab run; ket-infra lab down""",
)
def lab() -> None:
    """The plan's nodes as network namespaces behind the computed rules, proven with packets.

    Linux, as root, with nftables, bird2, etcd-server and etcd-client installed.
    `lab up` makes the namespaces and loads each node's rules as nftables; `lab run`
    drives every flow with packets and the real daemons (BIRD, etcd, VXLAN) and
    probes what no flow requires; `lab down` removes everything the state file names.
    """


STATE_OPTION = click.option(
    "--state",
    type=click.Path(dir_okay=False),
    default=".work/lab/state.json",
    show_default=True,
    help="Where the lab records its namespaces and processes (down, Ctrl-C and the next up remove them).",
)


@lab.command(
    "up",
    epilog="""\b
Examples:
  ket-infra lab up examples/calico-routed.yaml
  ket-infra lab up examples/weave-encrypted.yaml --env staging   # staging's CIDRs and options apply""",
)
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "--env",
    "env",
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Environment name or file path; its CIDRs and options shape the rules. [env var: KET_INFRA_ENV]",
)
@STATE_OPTION
def lab_up(plan_file: str, env: str | None, state: str) -> None:
    """One namespace per node of PLAN_FILE, its rules loaded; removes a lab STATE still names."""
    from pathlib import Path

    from ket_infra import lab as lab_mod

    with _lab_cleanup(Path(state)):
        lab_mod.up(plan_file, env, Path(state), progress=_progress)


@lab.command(
    "run",
    epilog="""\b
Examples:
  ket-infra lab run
  ket-infra lab run --format junit > lab.xml
  ket-infra lab run --drop-flow calico-bgp   # what breaks without the BGP rule (exit 3)""",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "junit"]),
    default="text",
    show_default=True,
    help="text for a terminal, json for tools, junit for CI test reports.",
)
@click.option(
    "--drop-flow",
    "drop",
    multiple=True,
    metavar="FLOW",
    help="Run without every rule that carries FLOW (e.g. calico-bgp; repeatable): what breaks without it.",
)
@click.option("--no-daemons", is_flag=True, help="Packets only: skip BIRD, etcd and VXLAN.")
@click.option(
    "--wait",
    type=click.FloatRange(0.5, 600),
    default=6.0,
    show_default=True,
    help="Seconds the daemons get to reach their state (BIRD Established, etcd healthy).",
)
@STATE_OPTION
def lab_run(fmt: str, drop: tuple[str, ...], no_daemons: bool, wait: float, state: str) -> None:
    """Drive every flow and probe of the lab that is up; exit 3 when a flow fails or a probe gets through."""
    import json
    from pathlib import Path

    from ket_infra import lab as lab_mod

    with _lab_cleanup(Path(state)):
        the_lab = lab_mod.Lab.load(Path(state))
        report = lab_mod.run(the_lab, drop, daemons=not no_daemons, progress=_progress, wait=wait)
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    elif fmt == "junit":
        click.echo(lab_mod.junit_report(report), nl=False)
    else:
        click.echo(lab_mod.text_report(report), nl=False)
    if not report.ok:
        sys.exit(EXIT_BLOCKED)


@lab.command(
    "down",
    epilog="""\b
Example:
  ket-infra lab down""",
)
@STATE_OPTION
def lab_down(state: str) -> None:
    """Stop the lab's processes and remove its namespaces."""
    from pathlib import Path

    from ket_infra import lab as lab_mod

    gone = lab_mod.down(Path(state))
    click.echo(f"lab {gone.id} removed" if gone else f"no lab is up ({state} names none)", err=True)


@contextmanager
def _lab_cleanup(state: Any) -> Iterator[None]:
    """Ctrl-C, a signal or an error while the lab works: remove it all, then stop as usual."""
    try:
        yield
    except BaseException:
        from ket_infra import lab as lab_mod

        lab_mod.down(state)
        raise


@cli.command(
    "version",
    short_help="ket-infra, Terraform and provider-mirror versions.",
    epilog="""\b
Examples:
  ket-infra version
  ket-infra version --env staging   # the binary and mirror staging's terraform: section names""",
)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    envvar=ENV_VAR,
    shell_complete=complete_env,
    help="Report the Terraform binary and provider mirror this environment would use. [env var: KET_INFRA_ENV]",
)
def version_cmd(env: str | None) -> None:
    """ket-infra's version, the Terraform it would run (binary, version) and the provider mirror."""
    import shutil
    import tempfile
    from pathlib import Path

    from ket_infra.environment import AwsConfig, Environment, load_environment
    from ket_infra.terraform import Terraform, TerraformError

    click.echo(f"ket-infra {__version__}")
    environment = (
        load_environment(env)
        if env
        else Environment("version", "(no environment file)", Path("."), AwsConfig("us-east-1"))
    )
    with tempfile.TemporaryDirectory() as work:
        tf = Terraform(environment, Path(work), _progress)
        try:
            version = tf.check_version()
        except TerraformError as exc:
            version = f"not usable: {exc}"
    click.echo(f"terraform: {shutil.which(tf.binary) or tf.binary} {version}")
    click.echo(f"provider mirror: {tf.plugin_dir() or 'none (terraform init downloads the provider)'}")


# --debug and --quiet are taken after the subcommand too (`ket-infra plan --env x --debug`).
for _command in [*cli.commands.values(), *sandbox.commands.values(), *lab.commands.values()]:
    _command.params += [
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            callback=_remember("debug"),
            help="Show tracebacks for errors.",
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_remember("quiet"),
            help="Errors and the final line only (see ket-infra --help).",
        ),
    ]


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def main() -> None:
    """Run the CLI; usage errors and unwritable files are one line and exit 1 too (a traceback with --debug).

    SIGTERM and SIGHUP stop a run as Ctrl-C does: raised where it is, so that what it started
    (a plan started ahead) is stopped on the way out; during a Terraform command they are that
    command's to hand on (see terraform._handing_on_signals).
    """
    debug = "--debug" in sys.argv[1:]
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        code = cli.main(prog_name="ket-infra", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        click.echo(
            f"error: stopped by {name}; nothing ket-infra started is left running; run the same command again, "
            "it converges",
            err=True,
        )
        sys.exit(128 + exc.signum)
    except click.Abort:
        # Ctrl-C outside a Terraform run (those hand it to Terraform and say what stopped)
        click.echo("error: interrupted; run the same command again, it converges", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx is not None else "ket-infra"
        hint = f" (see {where} --help)" if isinstance(exc, click.UsageError) else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}; check the path, permissions and free space", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
