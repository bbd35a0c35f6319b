"""The command line: build the context, call the core, print, exit.

Every KetInfraError becomes one line on stderr and exit 1 (a traceback only
with --debug). Heavy modules (boto3, jinja2, Terraform) are imported inside
the commands that need them, so `ket-infra --help` starts fast.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from ket_infra import __version__
from ket_infra.errors import Interrupted, KetInfraError, Stopped

EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_BLOCKED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it; 128 + the signal for SIGTERM (143) and SIGHUP (129)


class _Cli(click.Group):
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


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ket-infra")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Least-privilege cloud network rules for a KET cluster's CNI.

    Reads a KET plan file, works out the exact flows the cluster and its CNI
    need, and shows them (rules) or applies them with Terraform.
    """


def complete_env(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of --env: the environment names in ./environments/, else file paths."""
    from pathlib import Path

    from click.shell_completion import CompletionItem

    if "/" in incomplete or incomplete.startswith("."):
        return [CompletionItem(incomplete, type="file")]
    names = sorted(p.stem for p in Path("environments").glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=complete_env,
    help="Environment name (environments/ENV.yaml) or file path.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "mermaid"]),
    default="table",
    show_default=True,
    help="table for a terminal, json for tools, markdown for a pull request, mermaid for a diagram.",
)
@click.option(
    "--audit",
    "audit_file",
    type=click.Path(dir_okay=False),
    help="With --format mermaid: mark the excess paths of an audit's JSON (ket-infra audit --format json).",
)
def rules(plan_file: str, env: str | None, fmt: str, audit_file: str | None) -> None:
    """Offline: the security groups and rules PLAN_FILE needs.

    With --env, the environment file's installer_cidr, ingress_cidrs,
    api_cidrs, egress_cidrs, gluster_brick_ports, extra_rules and preflight
    apply.
    """
    from ket_infra.environment import load_environment
    from ket_infra.layout import layout
    from ket_infra.plan import load_plan
    from ket_infra.report import render

    if audit_file is not None and fmt != "mermaid":
        raise KetInfraError(f"--audit {audit_file} marks a diagram: add --format mermaid")
    environment = load_environment(env) if env else None
    rs = layout(load_plan(plan_file), environment)
    click.echo(render(rs, fmt, _audit_json(audit_file) if audit_file else None), nl=False)


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


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=complete_env,
    help="Judge from the subnets AWS puts the nodes in (read-only), and apply the environment's CIDRs.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
def compare(plan_file: str, env: str | None, fmt: str) -> None:
    """Every CNI KET supports, side by side, for PLAN_FILE's nodes.

    Calico overlay, Calico routed, Weave, Weave encrypted and Contiv: KET's
    comparison facts, what each would need on this cluster (groups, rules,
    protocols, host settings), KET's warnings, and whether it can work here.
    Offline, whether Calico routed can work is unknown: it needs every kubelet
    node in one subnet, which --env finds out from AWS.
    """
    import json

    from ket_infra import compare as cmp
    from ket_infra.environment import load_environment
    from ket_infra.plan import load_plan

    plan = load_plan(plan_file)
    environment = load_environment(env) if env else None
    subnets: dict[str, list[str]] | None = None
    if environment is not None:
        from ket_infra.aws import discover

        click.echo(f"finding {len(plan.nodes)} node(s) in {environment.aws.region}", err=True)
        subnets = {}
        for n in discover(plan, environment).nodes:
            subnets.setdefault(n.subnet_id, []).append(n.host)
    doc = cmp.compare(plan, environment, subnets)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo((cmp.markdown if fmt == "markdown" else cmp.table)(doc), nl=False)


ENV_OPTION = click.option(
    "--env",
    "env",
    required=True,
    metavar="ENV",
    shell_complete=complete_env,
    help="Environment name (environments/ENV.yaml) or file path.",
)


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _context(env: str, progress: Any, lock: bool = False) -> Any:
    """The workflow context for ENV, its layout warnings printed on stderr (as `rules` shows them).

    LOCK: the command works on the work folder, which it then holds until it ends.
    """
    from ket_infra import workflow

    ctx = workflow.context(env, progress)
    for warning in ctx.rules.warnings:
        click.echo(f"warning: {warning}", err=True)
    if lock:
        click.get_current_context().with_resource(workflow.work_lock(ctx))
    return ctx


@cli.command("render")
@ENV_OPTION
def render_cmd(env: str) -> None:
    """Write the Terraform root module for ENV (finds the nodes in AWS)."""
    from ket_infra import workflow

    ctx = _context(env, _progress, lock=True)
    workflow.discover_and_render(ctx)


@cli.command("plan")
@ENV_OPTION
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def plan_cmd(env: str, detailed_exitcode: bool, fmt: str) -> None:
    """Discover the nodes, render, terraform init and plan (saved for apply)."""
    import json

    from ket_infra import workflow

    ctx = _context(env, _progress if fmt == "json" else click.echo, lock=True)
    summary = workflow.plan(ctx)
    if fmt == "json":
        doc = {
            "environment": ctx.env.name,
            "changes": [
                {"action": c.action, "kind": c.kind, "name": c.name, "purpose": c.purpose} for c in summary.changes
            ],
            "counts": summary.counts(),
            "imports": [{"address": i.address, "id": i.id, "kind": i.kind} for i in ctx.imports],
            "warnings": list(ctx.rules.warnings),
        }
        click.echo(json.dumps(doc, indent=2))
    if detailed_exitcode and summary.has_changes:
        sys.exit(EXIT_CHANGES)


@cli.command("apply")
@ENV_OPTION
@click.option("--auto-approve", is_flag=True, help="Plan and apply in one step (for pipelines).")
@click.option("--verify", "then_verify", is_flag=True, help="Print verify's full report of what was applied.")
def apply_cmd(env: str, auto_approve: bool, then_verify: bool) -> None:
    """Apply the saved plan (a stale one is refused), then the host settings.

    Then judges the result as verify does: "ready" only when every required flow
    is open, else the blocked flows and exit 3 (the cloud changed after the plan
    was saved, or something ket-infra does not manage blocks them).
    """
    from ket_infra import workflow

    ctx = _context(env, click.echo, lock=True)
    report = workflow.apply(ctx, auto_approve)
    if then_verify:
        _verify(ctx, "text", report)  # the full report of what apply judged
    elif not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command("verify")
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
    _verify(_context(env, _progress), fmt)


def _verify(ctx: Any, fmt: str, report: Any = None) -> None:
    """Print verify's REPORT (read now when not given) in FMT; exit 3 when it is not ok."""
    import json

    from ket_infra.verify import junit_report, node_checks, text_report, verify

    report = report if report is not None else verify(ctx.plan, ctx.env, ctx.rules)
    on_nodes = node_checks(report, ctx.plan)
    if fmt == "json":
        doc = {**report.as_json(), "warnings": list(ctx.rules.warnings), "node_checks": on_nodes}
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "junit":
        click.echo(junit_report(report, ctx.env.name, ctx.rules.cluster, ctx.rules.warnings), nl=False)
    else:
        click.echo(text_report(report, ctx.env.name, ctx.rules.cluster, on_nodes), nl=False)
    if not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command("audit")
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

    ctx = _context(env, _progress)
    report = audit(ctx.plan, ctx.env, ctx.rules)
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    elif fmt == "junit":
        click.echo(junit_report(report, ctx.env.name, ctx.rules.cluster), nl=False)
    elif fmt == "markdown":
        click.echo(markdown_report(report, ctx.env.name, ctx.rules.cluster), nl=False)
    else:
        click.echo(text_report(report, ctx.env.name, ctx.rules.cluster), nl=False)
    if not report.ok:
        sys.exit(EXIT_BLOCKED)


@cli.command("destroy")
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

    ctx = workflow.context(env, click.echo, strict=False)
    click.get_current_context().with_resource(workflow.work_lock(ctx))

    def approve(listing: list[str]) -> bool:
        click.echo(f"ket-infra will destroy for environment {ctx.env.name}:")
        for line in listing:
            click.echo(line)
        if auto_approve:
            return True
        answer = click.prompt("Only 'yes' will be accepted to approve", default="", show_default=False)
        return bool(answer.strip() == "yes")

    workflow.destroy(ctx, approve)


@cli.command("iam-policy")
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=complete_env,
    help="Scope to ENV's region, account, cluster and s3 state (without it: any of each, and no s3 statements).",
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


@cli.group()
def sandbox() -> None:
    """A local AWS API emulator (moto server) seeded from a plan file."""


@sandbox.command("up")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--env-file", type=click.Path(dir_okay=False), default="environments/sandbox.yaml", show_default=True)
@click.option(
    "--like",
    type=click.Choice(["kismatic-provision", "kops"]),
    default=None,
    help="Also leave the security groups and instance settings that tool leaves: kismatic-provision's "
    "group open to all traffic from 0.0.0.0/0 (source/dest check off), or kops' masters./nodes. groups.",
)
def sandbox_up(plan_file: str, port: int, env_file: str, like: str | None) -> None:
    """Start the emulator, create a VPC, subnets and one instance per node, write ENV_FILE."""
    from pathlib import Path

    from ket_infra.sandbox import sandbox_up as up

    path = up(Path(plan_file), port=port, env_file=Path(env_file), progress=click.echo, like=like)
    click.echo(f"sandbox ready: use --env {path}")


@sandbox.command("down")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def sandbox_down(port: int) -> None:
    """Stop the emulator on PORT."""
    from ket_infra.sandbox import sandbox_down as down

    click.echo("sandbox stopped" if down(port=port) else f"no sandbox was running on port {port}")


def _remember_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["debug"] = True  # meta is shared by the whole command line's contexts
    return value


# --debug is taken after the subcommand too (`ket-infra plan --env x --debug`).
for _command in [*cli.commands.values(), *sandbox.commands.values()]:
    _command.params.append(
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            callback=_remember_debug,
            help="Show tracebacks for errors.",
        )
    )


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
        hint = " (see ket-infra --help)" if isinstance(exc, click.UsageError) else ""
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
