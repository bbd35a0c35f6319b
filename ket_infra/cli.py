"""The command line: build the context, call the core, print, exit.

Every KetInfraError becomes one line on stderr and exit 1 (a traceback only
with --debug). Heavy modules (boto3, jinja2, Terraform) are imported inside
the commands that need them, so `ket-infra --help` starts fast.
"""

from __future__ import annotations

from typing import Any

import click

from ket_infra import __version__
from ket_infra.errors import KetInfraError

EXIT_ERROR = 1


class _Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KetInfraError as exc:
            if ctx.params.get("debug"):
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


@cli.command()
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--env", "env", metavar="ENV", help="Environment name (environments/ENV.yaml) or file path.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "mermaid"]),
    default="table",
    show_default=True,
    help="table for a terminal, json for tools, markdown for a pull request, mermaid for a diagram.",
)
def rules(plan_file: str, env: str | None, fmt: str) -> None:
    """Offline: the security groups and rules PLAN_FILE needs.

    With --env, the environment file's installer_cidr, ingress_cidrs,
    api_cidrs, extra_rules and preflight apply.
    """
    from ket_infra.environment import load_environment
    from ket_infra.layout import layout
    from ket_infra.plan import load_plan
    from ket_infra.report import render

    environment = load_environment(env) if env else None
    rs = layout(load_plan(plan_file), environment)
    click.echo(render(rs, fmt), nl=False)


def main() -> None:
    cli(prog_name="ket-infra")


if __name__ == "__main__":  # pragma: no cover
    main()
