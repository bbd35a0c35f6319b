"""No value from a plan or an environment file is evaluated by Terraform.

Every string ket-infra writes into HCL goes through one escape (`$${`, `%%{`, JSON
escapes); names that become folders and tags are validated instead. The proof is
Terraform's own: the literals of a rendered main.tf, and the tfvars JSON beside it,
are read back by `terraform console` and must come out exactly as written.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from ket_infra.environment import AwsConfig, Backend, Environment, TerraformConfig, load_environment
from ket_infra.errors import EnvironmentFileError, PlanError
from ket_infra.flows import Flow
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from ket_infra.render import _hcl_string, root_module, tfvars
from tests.conftest import EXAMPLES, base_plan, write_yaml
from tests.tf import needs_terraform_cli, terraform

NASTY = [
    "${timestamp()}",
    "%{if true}X%{endif}",
    'a "quoted" word',
    "back\\slash and \\${ and \\%{",
    "line one\nline two\r\n\ttab",
    "$${already} %%{doubled}",
    "$",
    "%",
    "ünïcödé ☃ 😀",
    "}} {{ jinja }} {% raw %}",
]
PAYLOAD = "${timestamp()}%{if true}X%{endif}\"\\\n'"


def console(folder: Path, expression: str) -> str:
    result = terraform("console", cwd=folder, stdin=expression + "\n")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout.strip().splitlines()[-1]))


@needs_terraform_cli
def test_the_escape_round_trips_through_terraform(tmp_path: Path) -> None:
    lines = [f"  v{i} = {_hcl_string(s)}" for i, s in enumerate(NASTY)]
    (tmp_path / "t.tf").write_text("locals {\n" + "\n".join(lines) + "\n}\n")
    got = json.loads(console(tmp_path, "jsonencode([" + ", ".join(f"local.v{i}" for i in range(len(NASTY))) + "])"))
    assert got == NASTY


def nasty_environment(plan: Path) -> Environment:
    backend = Backend(
        "s3",
        bucket=f"bucket{PAYLOAD}",
        key=f"key{PAYLOAD}",
        region=f"region{PAYLOAD}",
        endpoint_url=f"http://127.0.0.1:9#{PAYLOAD}",
    )
    purpose = "purpose ${timestamp()} %{if true}X%{endif}"
    extra = Flow("extra-x", "tcp", (7000, 7000), ("worker",), purpose, "env", "environment", src_cidr="10.9.0.0/16")
    return Environment(
        name="lab",
        path="lab.yaml",
        plan_file=plan,
        aws=AwsConfig("eu-west-1", endpoint_url=f"http://127.0.0.1:5731#{PAYLOAD}"),
        terraform=TerraformConfig(backend=backend),
        extra_flows=(extra,),
    )


@needs_terraform_cli
def test_no_string_in_the_root_module_or_its_data_is_evaluated(tmp_path: Path) -> None:
    """Each quoted literal of main.tf, evaluated by Terraform, is the value given; the tfvars JSON is read as data."""
    plan = load_plan(EXAMPLES / "calico-overlay.yaml")
    env = nasty_environment(EXAMPLES / "calico-overlay.yaml")
    rs = layout(plan, env)
    main = root_module(rs, env)
    literals = re.findall(r'"(?:[^"\\]|\\.)*"', main)
    for local_path in (True, False):
        text = (
            main
            if not local_path
            else root_module(rs, replace(env, terraform=TerraformConfig(backend=Backend("local", path=f"s{PAYLOAD}"))))
        )
        literals += re.findall(r'"(?:[^"\\]|\\.)*"', text)
    check = tmp_path / "check"
    check.mkdir()
    body = "\n".join(f"  v{i} = {lit}" for i, lit in enumerate(literals))
    (check / "t.tf").write_text(f'locals {{\n{body}\n}}\nvariable "ingress_rules" {{\n  type = any\n}}\n')
    data = tfvars(rs, "vpc-123", [])
    (check / "x.auto.tfvars.json").write_text(json.dumps({"ingress_rules": data["ingress_rules"]}))
    values = json.loads(console(check, "jsonencode([" + ", ".join(f"local.v{i}" for i in range(len(literals))) + "])"))
    for given in (
        f"bucket{PAYLOAD}",
        f"key{PAYLOAD}",
        f"region{PAYLOAD}",
        f"http://127.0.0.1:9#{PAYLOAD}",
        f"http://127.0.0.1:5731#{PAYLOAD}",
        f"s{PAYLOAD}",
    ):
        assert given in values, given
    assert not [v for v in values if "X" in v and "%{" not in v and "if true" not in v]  # no template ran
    rules = json.loads(console(check, "jsonencode(var.ingress_rules)"))
    assert rules == data["ingress_rules"]
    assert any("${timestamp()}" in r["description"] for r in rules.values())


def test_an_environment_name_that_is_not_one_safe_folder_is_refused(tmp_path: Path) -> None:
    plan = write_yaml(tmp_path / "plan.yaml", base_plan())
    for name in ("inj%{if true}X%{endif}", "..", ".hidden", "a b", "x${y}", "tab\there", "n" * 64):
        env = tmp_path / f"{name}.yaml"
        env.write_text(f"plan_file: {plan}\naws: {{region: eu-west-1}}\n")
        with pytest.raises(EnvironmentFileError) as info:
            load_environment(env)
        assert "cannot name a work folder and AWS tags" in str(info.value), name
        assert "\n" not in str(info.value)
    ok = tmp_path / "staging.eu-1_b.yaml"
    ok.write_text(f"plan_file: {plan}\naws: {{region: eu-west-1}}\n")
    assert load_environment(ok).name == "staging.eu-1_b"


def test_a_cluster_name_that_would_reach_hcl_is_refused(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["name"] = "c${timestamp()}"
    with pytest.raises(PlanError, match="cannot name security groups"):
        load_plan(write_yaml(tmp_path / "plan.yaml", data))


def test_render_never_writes_outside_the_work_folder(tmp_path: Path) -> None:
    """`render --env DIR/...yaml` once rendered into `.work/..`: now nothing is written, anywhere."""
    import subprocess
    import sys

    from tests.conftest import child_env

    plan = write_yaml(tmp_path / "plan.yaml", base_plan())
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("...yaml", "..yaml"):
        env = tmp_path / name
        env.write_text(f"plan_file: {plan}\naws: {{region: eu-west-1}}\n")
        result = subprocess.run(
            [sys.executable, "-m", "ket_infra", "render", "--env", str(env)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=child_env(tmp_path),
            timeout=60,
        )
        assert result.returncode == 1 and "cannot name a work folder" in result.stderr, result.stderr
        env.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .work, no modules/


# ---------------------------------------------------------------- the Mermaid diagram


def test_no_audit_value_becomes_a_mermaid_statement(tmp_path: Path) -> None:
    """An audit report's source, severity and group name are labels: a newline, quote, bracket or pipe in them
    once ended the label and started a statement of its own (a `click` line runs a link or a callback).
    Every label is now written with Mermaid's entity codes (#34; for a quote): each line is one statement
    ket-infra meant, and the labels read back exactly as given."""
    from tests.test_cli import AUDIT_ITEM, run

    source = '203.0.113.0/24\nclick g_worker href "javascript:alert(1)"\n%%{init: {}}%%'
    severity = 'world"]\n    click g_master call alert()\n    x["'
    group_name = 'made|"] --> g_etcd\nclick g_etcd callback #quot; <b>☃</b>;'
    doc = {"ok": False, "excess": [{**AUDIT_ITEM, "source": source, "severity": severity}], "counts": {}}
    doc["excess"][0]["via"] = {**AUDIT_ITEM["via"], "group_name": group_name}
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(doc))
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "mermaid", "--audit", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    label = r'"((?:[A-Za-z0-9 .,:/()_\-+\'=@*!?%]|#\d+;|<br/>)*)"'
    statements = [
        r"flowchart LR",
        rf"    (\w+)(?:\[{label}\]|\(\[{label}\]\))(?::::excess)?",
        rf"    (\w+) -(?:->|\.->)\|{label}\| (\w+)",
        r"    classDef excess fill:#fdd,stroke:#c00,color:#600",
        r"    linkStyle [0-9,]+ stroke:#c00,color:#c00",
    ]
    assert [ln for ln in lines if not any(re.fullmatch(s, ln) for s in statements)] == []
    assert not [ln for ln in lines if ln.split() and ln.split()[0] in ("click", "%%{init:", "x[")]

    def read(text: str) -> str:
        return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)

    labels = [read(m.group(1)) for ln in lines if (m := re.search(r'"(.*)"', ln))]
    assert source in labels
    assert f"EXCESS {severity}: tcp 22 via {group_name}" in labels
