"""What AWS would refuse is refused before any call: one line naming the file, the key, the limit and the fix.

The sandbox refuses the same (tests/test_sandbox_aws.py); here ket-infra's own checks, in-process.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ket_infra.aws import AwsError, check_account
from ket_infra.cli import cli
from ket_infra.environment import PURPOSE_MAX, load_environment
from ket_infra.errors import EnvironmentFileError, PlanError, QuotaError
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from tests.conftest import base_plan, write_yaml


def env_file(tmp_path: Path, **extra: Any) -> Path:
    write_yaml(tmp_path / "plan.yaml", base_plan())
    doc = {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}, **extra}
    path = tmp_path / "staging.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def one_line(result: Any) -> str:
    """The one `error: ` line of a failed in-process CLI run (exit 1, no traceback): last, after any warnings."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [i for i, ln in enumerate(lines) if ln.startswith("error: ")] == [len(lines) - 1], result.output
    assert "Traceback" not in result.output
    return str(lines[-1])


def test_an_unknown_region_is_refused_with_the_nearest_known_one(tmp_path: Path) -> None:
    path = env_file(tmp_path, aws={"region": "eu-west-9"})
    with pytest.raises(EnvironmentFileError) as info:
        load_environment(path)
    message = str(info.value)
    assert message.startswith(f"{path}: aws.region: 'eu-west-9' is not a region AWS has")
    assert "; did you mean eu-west-" in message
    assert load_environment(env_file(tmp_path, aws={"region": "ap-southeast-2"})).aws.region == "ap-southeast-2"


class _NotAws(http.server.BaseHTTPRequestHandler):
    """Answers every call with a page that is not AWS's (a captive portal, a proxy, a wrong host)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Welcome to the hotel network</body>\n<p>unclosed"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def not_aws() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAws)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_botocore_exception_of_any_class_is_one_line(tmp_path: Path, not_aws: str) -> None:
    """botocore.parsers.ResponseParserError is no BotoCoreError: it is one line all the same, no traceback."""
    path = env_file(tmp_path, aws={"region": "eu-west-1", "endpoint_url": not_aws})
    with pytest.raises(AwsError) as info:
        check_account(load_environment(path))
    message = str(info.value)
    assert message.startswith("checking the AWS account: ResponseParserError: ")
    assert message.endswith(f"; check {path}: aws.region and aws.endpoint_url")
    assert "\n" not in message and len(message) < 500
    line = one_line(CliRunner().invoke(cli, ["verify", "--env", str(path)]))
    assert line.startswith("error: checking the AWS account: ResponseParserError: ")


def test_a_cluster_name_aws_refuses_in_group_names(tmp_path: Path) -> None:
    plan = base_plan()
    plan["cluster"]["name"] = "sg-prod"
    with pytest.raises(PlanError) as info:
        load_plan(write_yaml(tmp_path / "plan.yaml", plan))
    assert str(info.value) == (
        f"{tmp_path / 'plan.yaml'}: cluster.name: 'sg-prod' starts with sg-, which AWS refuses in a security group "
        "name; rename the cluster"
    )


def _rule(purpose: str, i: int = 0) -> dict[str, Any]:
    return {
        "name": f"x-{i}",
        "protocol": "tcp",
        "ports": 20000 + 2 * i,
        "to": "worker",
        "from_cidr": "10.0.0.0/8",
        "purpose": purpose,
    }


@pytest.mark.parametrize(
    ("purpose", "problem"),
    [
        ("flannel VXLAN \u2013 overlay", "holds '\u2013', which AWS does not allow in a rule description"),
        ("p" * (PURPOSE_MAX + 1), f"is {PURPOSE_MAX + 1} characters, too long for an AWS rule description"),
    ],
    ids=["a character", "the length"],
)
def test_an_extra_rule_purpose_aws_refuses_as_a_description(tmp_path: Path, purpose: str, problem: str) -> None:
    path = env_file(tmp_path, extra_rules=[_rule(purpose)])
    with pytest.raises(EnvironmentFileError) as info:
        load_environment(path)
    assert str(info.value) == (
        f"{path}: extra_rules[0].purpose: {problem}; at most {PURPOSE_MAX} of a-z A-Z 0-9, spaces and "
        "._-:/()#,@[]+=&;{}!$* (EC2's rule description)"
    )
    load_environment(env_file(tmp_path, extra_rules=[_rule("p" * PURPOSE_MAX)]))


def test_the_rules_quota_is_the_environments_and_refused_before_terraform(tmp_path: Path) -> None:
    """Over the quota is one line naming the environment's key; a raised quota set there is used."""
    extra = [_rule("extra", i) for i in range(60)]
    path = env_file(tmp_path, extra_rules=extra)
    env = load_environment(path)
    with pytest.raises(QuotaError) as info:
        layout(load_plan(env.plan_file), env)
    assert str(info.value).startswith(
        f"{path}: rules_per_group_quota: group worker needs 73 ingress rules, 13 above the AWS quota of 60 per security "
        "group; "
    )
    assert str(info.value).endswith("or if the account's quota is raised, set rules_per_group_quota to it")
    line = one_line(CliRunner().invoke(cli, ["rules", str(env.plan_file), "--env", str(path)]))
    assert line == f"error: {info.value}"
    raised = load_environment(env_file(tmp_path, extra_rules=extra, rules_per_group_quota=100))
    assert raised.rules_quota == 100
    rs = layout(load_plan(raised.plan_file), raised)
    assert len([r for r in rs.rules if r.group == "worker" and r.direction == "ingress"]) == 73
    with pytest.raises(EnvironmentFileError) as bad:
        load_environment(env_file(tmp_path, rules_per_group_quota=0))
    assert "rules_per_group_quota: 0 is out of range" in str(bad.value)
