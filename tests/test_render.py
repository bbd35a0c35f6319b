"""The rendered root module and tfvars: golden files, terraform fmt and validate."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ket_infra.environment import AwsConfig, Backend, Environment, TerraformConfig
from ket_infra.layout import layout
from ket_infra.plan import load_plan
from ket_infra.render import TFVARS, Attachment, module_files, render
from tests.conftest import EXAMPLES, ROOT
from tests.golden import check_golden
from tests.tf import PLUGIN_DIR, needs_terraform, needs_terraform_cli, terraform

GOLDEN = ROOT / "tests" / "golden"
PLANS = sorted(EXAMPLES.glob("*.yaml"))


def env_for(plan: Path, **kw: object) -> Environment:
    base = Environment(
        name="staging",
        path="environments/staging.yaml",
        plan_file=plan,
        aws=AwsConfig("eu-west-1", "123456789012"),
        installer_cidr="10.0.0.5/32",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def render_example(plan_path: Path, out: Path, env: Environment | None = None) -> list[Path]:
    plan = load_plan(plan_path)
    env = env or env_for(plan_path)
    attachments = [Attachment(n.host, n.group, f"eni-{i:017x}") for i, n in enumerate(plan.nodes)]
    return render(layout(plan, env), env, "vpc-0123456789abcdef0", attachments, out)


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_rendered_module_matches_golden(plan: Path, tmp_path: Path) -> None:
    render_example(plan, tmp_path)
    for name in ("main.tf", TFVARS):
        # the state identity tag names the local state's path: the folder of this run
        text = (tmp_path / name).read_text().replace(str(tmp_path.resolve()), "/WORK")
        check_golden(GOLDEN / plan.stem / name, text)


def test_tfvars_shape(tmp_path: Path) -> None:
    render_example(EXAMPLES / "calico-overlay.yaml", tmp_path)
    doc = json.loads((tmp_path / TFVARS).read_text())
    assert set(doc) == {"cluster_name", "vpc_id", "groups", "ingress_rules", "egress_rules", "attachments"}
    ipip = doc["ingress_rules"]["worker-in-proto4-from-master"]
    assert (ipip["protocol"], ipip["from_port"], ipip["to_port"], ipip["source_group"]) == ("4", None, None, "master")
    assert doc["attachments"]["worker01"]["group"] == "worker"
    for rule in doc["ingress_rules"].values():
        assert (rule["cidr"] is None) != (rule["source_group"] is None)
        assert len(rule["description"]) <= 255


def test_routed_pod_cidr_rule_is_protocol_minus_one(tmp_path: Path) -> None:
    render_example(EXAMPLES / "calico-routed.yaml", tmp_path)
    doc = json.loads((tmp_path / TFVARS).read_text())
    rule = doc["ingress_rules"]["worker-in-all-from-172.16.0.0-16"]
    assert (rule["protocol"], rule["cidr"]) == ("-1", "172.16.0.0/16")


def test_s3_backend_and_endpoint(tmp_path: Path) -> None:
    plan = EXAMPLES / "contiv.yaml"
    env = env_for(
        plan,
        aws=AwsConfig("eu-west-1", None, "http://127.0.0.1:5000"),
        terraform=TerraformConfig(
            backend=Backend("s3", bucket="tf-state", key="ket/staging.tfstate", region="eu-west-1")
        ),
    )
    render_example(plan, tmp_path, env)
    main = (tmp_path / "main.tf").read_text()
    assert 'backend "s3"' in main and "use_lockfile = true" in main and "encrypt      = true" in main
    assert "max_retries                 = 1" in main
    assert "allowed_account_ids" not in main


def test_generated_files_are_not_world_writable(tmp_path: Path) -> None:
    for path in render_example(EXAMPLES / "contiv.yaml", tmp_path / "out"):
        assert path.stat().st_mode & 0o002 == 0


@needs_terraform_cli
def test_module_and_renders_are_terraform_fmt_clean(tmp_path: Path) -> None:
    result = terraform("fmt", "-check", "-recursive", "-diff", str(module_files()), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    s3 = TerraformConfig(backend=Backend("s3", bucket="b", key="k", endpoint_url="http://127.0.0.1:5000"))
    variants = [(plan, None) for plan in PLANS] + [
        (PLANS[0], env_for(PLANS[0], aws=AwsConfig("eu-west-1", None, "http://127.0.0.1:5000"), terraform=s3)),
        (PLANS[0], env_for(PLANS[0], aws=AwsConfig("eu-west-1", "123456789012", "http://127.0.0.1:5000"))),
    ]
    for i, (plan, env) in enumerate(variants):
        out = tmp_path / f"{i}-{plan.stem}"
        render_example(plan, out, env)
        result = terraform("fmt", "-check", "-recursive", "-diff", str(out), cwd=tmp_path)
        assert result.returncode == 0, f"{plan.stem} {env}: {result.stdout}{result.stderr}"


@needs_terraform
@pytest.mark.slow
@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_rendered_examples_validate(plan: Path, tmp_path: Path) -> None:
    out = tmp_path / plan.stem
    render_example(plan, out)
    init = terraform("init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={PLUGIN_DIR}", cwd=out)
    assert init.returncode == 0, init.stderr
    result = terraform("validate", "-no-color", cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(out / ".terraform", ignore_errors=True)


def test_a_missing_piece_of_the_package_says_to_reinstall() -> None:
    from importlib import resources

    from ket_infra.errors import KetInfraError
    from ket_infra.render import _packaged

    with pytest.raises(KetInfraError) as info:
        _packaged(resources.files("ket_infra") / "templates" / "gone.tf.j2")
    assert str(info.value).endswith(
        "gone.tf.j2 is missing from the installed ket-infra package; reinstall it (pip install ket-infra)"
    )
    assert _packaged(resources.files("ket_infra") / "templates" / "main.tf.j2").is_file()


def test_a_second_render_writes_nothing_and_a_change_is_announced_first(tmp_path: Path) -> None:
    """A plan may be reading the folder while it is rendered again: what is already right is left alone,
    and the hook runs before the first byte that changes (workflow.plan stops that plan there)."""
    from ket_infra.render import IMPORTS, Import, write_imports

    plan_path = EXAMPLES / "calico-overlay.yaml"
    out = tmp_path / "out"
    render_example(plan_path, out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    calls: list[str] = []
    plan = load_plan(plan_path)
    env = env_for(plan_path)
    attachments = [Attachment(n.host, n.group, f"eni-{i:017x}") for i, n in enumerate(plan.nodes)]
    render(layout(plan, env), env, "vpc-0123456789abcdef0", attachments, out, lambda: calls.append("change"))
    write_imports(out, [], lambda: calls.append("change"))
    assert calls == [] and {p: p.stat().st_mtime_ns for p in files} == stamps

    before = (out / TFVARS).read_text()

    def changing() -> None:  # called while every file is still as it was
        calls.append((out / TFVARS).read_text())

    render(layout(plan, env), env, "vpc-0fedcba9876543210", attachments, out, changing)
    assert calls and all(seen == before for seen in calls)
    assert "vpc-0fedcba9876543210" in (out / TFVARS).read_text()

    # a file in the module copy that the package does not ship goes, a damaged one is put right
    module = out / "modules" / "ket-cni-network"
    shipped = sorted(p.name for p in module.iterdir())
    (module / "left-over.tf").write_text("# not ours\n")
    (module / shipped[0]).write_text("# damaged\n")
    calls.clear()
    render(layout(plan, env), env, "vpc-0fedcba9876543210", attachments, out, lambda: calls.append("change"))
    assert calls and sorted(p.name for p in module.iterdir()) == shipped
    assert (module / shipped[0]).read_bytes() == (module_files() / shipped[0]).read_bytes()

    # imports.tf: written when there is something to import, removed by the next render
    calls.clear()
    imports = [Import('module.ket_cni_network.aws_security_group.this["worker"]', "sg-1", "group")]
    assert write_imports(out, imports, lambda: calls.append("change")) == out / IMPORTS
    assert calls == ["change"] and (out / IMPORTS).exists()
    render(layout(plan, env), env, "vpc-0fedcba9876543210", attachments, out, lambda: calls.append("gone"))
    assert calls == ["change", "gone"] and not (out / IMPORTS).exists()
