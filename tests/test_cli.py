"""The command line as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT, base_plan, child_env, write_yaml
from tests.tf import needs_terraform_cli


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ket_infra", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(cwd),
        timeout=60,
    )


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "mermaid"])
@pytest.mark.parametrize("plan", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_rules_every_format_on_every_example(plan: Path, fmt: str) -> None:
    result = run("rules", str(plan), "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "s3cr3t-weave-passphrase" not in result.stdout + result.stderr


def test_json_contract() -> None:
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "json")
    doc = json.loads(result.stdout)
    assert set(doc) == {"cluster", "cni", "groups", "rules", "host_settings", "warnings", "acknowledged"}
    assert doc["cluster"] == "prod-east"
    assert doc["cni"] == {"provider": "calico", "mode": "overlay", "encrypted": False, "disabled": False}
    assert doc["groups"][0] == {"name": "etcd", "roles": ["etcd"], "nodes": ["etcd01", "etcd02", "etcd03"]}
    ipip = [r for r in doc["rules"] if r["protocol"] == "4"]
    assert ipip and all(r["from_port"] is None and r["to_port"] is None for r in ipip)
    bgp = next(r for r in doc["rules"] if r["name"] == "master-in-tcp-179-from-worker")
    assert bgp["group"] == "master"
    assert bgp["direction"] == "ingress"
    assert (bgp["protocol"], bgp["from_port"], bgp["to_port"]) == ("tcp", 179, 179)
    assert bgp["source"] == {"group": "worker"}
    assert bgp["required_by"] == "calico"
    assert bgp["purpose"] == "Calico BGP peering (BIRD mesh)"
    for r in doc["rules"]:
        peer = r["source"] if r["direction"] == "ingress" else r["destination"]
        assert len(peer) == 1 and set(peer) <= {"group", "cidr"}
        assert peer.get("cidr") not in ("0.0.0.0/0", "::/0")


def test_routed_json_host_settings() -> None:
    doc = json.loads(run("rules", str(EXAMPLES / "calico-routed.yaml"), "--format", "json").stdout)
    assert [(h["group"], h["source_dest_check"]) for h in doc["host_settings"]] == [
        ("etcd-master", False),
        ("worker", False),
    ]


def test_with_environment(tmp_path: Path) -> None:
    env = {
        "plan_file": str(EXAMPLES / "contiv.yaml"),
        "aws": {"region": "eu-west-1"},
        "installer_cidr": "10.9.9.9/32",
        "preflight": False,
    }
    env_file = write_yaml(tmp_path / "lab.yaml", env)
    doc = json.loads(run("rules", str(EXAMPLES / "contiv.yaml"), "--env", str(env_file), "--format", "json").stdout)
    ssh = [r for r in doc["rules"] if r["from_port"] == 22]
    assert {r["group"] for r in ssh} == {"etcd", "master", "worker", "storage"}
    assert not [r for r in doc["rules"] if "ket-preflight" in r["required_by"]]


def test_env_by_name_reads_environments_folder(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    write_yaml(tmp_path / "environments" / "dev.yaml", {"plan_file": "x", "aws": {"region": "eu-west-1"}, "bogus": 1})
    result = run("rules", str(EXAMPLES / "contiv.yaml"), "--env", "dev", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "error: environments/dev.yaml: bogus: unknown key; remove it (allowed here: " + (
        "acknowledge, api_cidrs, aws, detach_groups, egress_cidrs, endpoint_cidrs, ephemeral_ports, extra_rules, "
        "gluster_brick_ports, ingress_cidrs, installer_cidr, nodeport_cidrs, plan_file, preflight, rules_per_group_quota, "
        "terraform)\n"
    )


def test_bad_plan_is_one_line_exit_1_no_traceback(tmp_path: Path) -> None:
    data = base_plan({"provider": "calico", "options": {"calico": {"mode": "bgp"}}})
    path = write_yaml(tmp_path / "plan.yaml", data)
    result = run("rules", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {path}: add_ons.cni.options.calico.mode: 'bgp' is not a valid Calico mode; use overlay or routed\n"
    )


def test_debug_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"cluster": {}}))
    result = run("--debug", "rules", str(path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_missing_plan_file() -> None:
    result = run("rules", "no/such/plan.yaml")
    assert result.returncode == 1
    assert result.stderr == "error: no/such/plan.yaml: KET plan file not found; check the path\n"


def test_help_lists_rules() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "rules" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["plan"], "Missing option '--env'"),
        (["rules", str(EXAMPLES / "contiv.yaml"), "--format", "yaml"], "Invalid value for '--format'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line_exit_1(args: list[str], words: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert words in result.stderr


def test_pod_cidr_overlapping_nodes_is_refused(tmp_path: Path) -> None:
    data = base_plan()
    data["cluster"]["networking"]["pod_cidr_block"] = "10.0.0.0/16"
    result = run("rules", str(write_yaml(tmp_path / "plan.yaml", data)))
    assert result.returncode == 1
    assert (
        "cluster.networking.pod_cidr_block: 10.0.0.0/16 contains the address 10.0.1.11 of node 'etcd01'"
        in result.stderr
    )


def lab_environment(tmp_path: Path, **aws: str) -> Path:
    return write_yaml(
        tmp_path / "lab.yaml",
        {"plan_file": str(EXAMPLES / "contiv.yaml"), "aws": {"region": "eu-west-1", **aws}},
    )


def run_with(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ket_infra", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(cwd, env),
        timeout=120,
    )


def clean_environ(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


@needs_terraform_cli
def test_a_file_system_error_is_one_line(tmp_path: Path) -> None:
    """A `.work` that is a file, not a folder: the OS error is one line naming the path, exit 1."""
    env_file = lab_environment(tmp_path, endpoint_url="http://127.0.0.1:9")
    (tmp_path / ".work").write_text("not a folder")
    result = run_with(["plan", "--env", str(env_file)], tmp_path, clean_environ())
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {tmp_path / '.work' / 'lab'}: Not a directory; check the path, permissions and free space"
    )
    assert "Traceback" not in result.stderr
    # --debug, before or after the subcommand, shows where it came from
    for args in (["--debug", "plan", "--env", str(env_file)], ["plan", "--env", str(env_file), "--debug"]):
        debugged = run_with(args, tmp_path, clean_environ())
        assert debugged.returncode == 1 and "Traceback" in debugged.stderr, debugged.stderr
        assert "NotADirectoryError" in debugged.stderr.splitlines()[-1]


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    plain = run("rules", missing)
    assert plain.stderr == f"error: {missing}: KET plan file not found; check the path\n"
    late = run("rules", missing, "--debug")
    assert late.returncode == 1 and "Traceback" in late.stderr
    assert (
        late.stderr.splitlines()[-1]
        == f"ket_infra.errors.PlanError: {missing}: KET plan file not found; check the path"
    )


def test_verify_without_aws_credentials_says_so(tmp_path: Path) -> None:
    env_file = lab_environment(tmp_path)  # the real AWS API: no emulator, so no stand-in credentials
    no_credentials = clean_environ(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    result = run_with(["verify", "--env", str(env_file)], tmp_path, no_credentials)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    note, error = result.stderr.splitlines()
    assert error == (
        "error: checking the AWS account: no AWS credentials found; "
        "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )
    assert note.startswith("note: 6 warning(s) apply (")  # the layout's, named by id: plan says them in full


def test_verify_exits_1_when_aws_cannot_be_reached(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    env_file = lab_environment(tmp_path, endpoint_url=f"http://127.0.0.1:{port}")
    result = run_with(["verify", "--env", str(env_file), "--format", "json"], tmp_path, clean_environ())
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""  # no half report
    *notes, error = result.stderr.splitlines()
    assert error == (
        f"error: checking the AWS account: cannot reach http://127.0.0.1:{port} (EndpointConnectionError); "
        f"check {env_file}: aws.endpoint_url and the network"
    )
    assert all(n.startswith("note: ") for n in notes)


@pytest.mark.parametrize("command", ["verify", "audit"])
def test_verify_and_audit_refuse_another_account(tmp_path: Path, command: str) -> None:
    """The sandbox's instances sit at the plan's addresses, in moto's account: an environment naming another
    account is refused in one line, exit 1, before any verdict (plan refuses the same)."""
    from ket_infra.sandbox import sandbox_down, sandbox_up
    from tests.conftest import free_port

    port = free_port()
    env_file = sandbox_up(
        EXAMPLES / "calico-overlay.yaml", port, tmp_path / "sandbox.yaml", tmp_path / ".work", lambda _m: None
    )
    try:
        doc = yaml.safe_load(env_file.read_text())
        assert doc["aws"]["account_id"] == "123456789012"  # moto's, as the sandbox writes it
        doc["aws"]["account_id"] = "210987654321"
        other = write_yaml(tmp_path / "other.yaml", doc)
        result = run_with([command, "--env", str(other), "--format", "json"], tmp_path, clean_environ())
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout == ""  # no verdict
        assert result.stderr.splitlines()[-1] == (
            f"error: {other}: aws.account_id: the credentials are for account 123456789012, not 210987654321; "
            "use credentials of the right account or fix account_id"
        )
        assert "Traceback" not in result.stderr
        right = run_with([command, "--env", str(env_file), "--format", "json"], tmp_path, clean_environ())
        assert right.returncode in (0, 3) and json.loads(right.stdout)["ok"] is (right.returncode == 0)
    finally:
        sandbox_down(port, tmp_path / ".work")


def _label(rule: dict[str, object]) -> str:
    """How a person reads a rule's protocol and ports, written out here from the JSON contract."""
    names = {"4": "IP-in-IP (4)", "50": "ESP (50)"}
    protocol = str(rule["protocol"])
    label = names.get(protocol, protocol if protocol in ("tcp", "udp", "icmp", "all") else f"protocol {protocol}")
    lo, hi = rule["from_port"], rule["to_port"]
    if lo is None:
        return label
    if protocol == "icmp":
        return f"{label} type {lo}" + (f" code {hi}" if hi != -1 else "")
    return f"{label} {lo}" if lo == hi else f"{label} {lo}-{hi}"


@pytest.mark.parametrize("plan", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_table_shows_every_rule_of_the_json(plan: Path) -> None:
    import re

    doc = json.loads(run("rules", str(plan), "--format", "json").stdout)
    table = run("rules", str(plan)).stdout.splitlines()
    assert table[0].startswith(f"cluster {doc['cluster']}; CNI ")
    assert table[0].endswith(f"; {len(doc['groups'])} groups, {len(doc['rules'])} rules")
    for g in doc["groups"]:
        assert any(ln.startswith(f"group {g['name']} ") and f" {len(g['nodes'])} node(s): " in ln for ln in table), g
    header = table.index(next(ln for ln in table if ln.startswith("GROUP ")))
    assert re.split(r"\s{2,}", table[header]) == ["GROUP", "DIR", "PROTOCOL", "PORTS", "PEER", "PURPOSE"]
    rows = table[header + 1 : header + 1 + len(doc["rules"])]
    for line, r in zip(rows, doc["rules"], strict=True):
        peer = r["source"] if r["direction"] == "ingress" else r["destination"]
        label = _label(r)
        ports = "all" if r["protocol"] == "all" else "-" if r["from_port"] is None else label.rsplit(" ", 1)[1]
        if r["protocol"] == "icmp":
            ports = label.removeprefix("icmp ")
        protocol = label if r["from_port"] is None else label[: -len(ports) - 1]
        assert re.split(r"\s{2,}", line) == [
            r["group"],
            "in" if r["direction"] == "ingress" else "out",
            protocol,
            ports,
            f"group {peer['group']}" if "group" in peer else peer["cidr"],
            r["purpose"],
        ], line
    assert table[header + 1 + len(doc["rules"]) :][:1] in ([], [""])
    for h in doc["host_settings"]:
        assert f"host setting: group {h['group']}: source/dest check off" in table
    warned = run("rules", str(plan)).stderr.splitlines()  # the warnings go to stderr, each ending in its [id]
    assert [ln.removeprefix("warning: ").rsplit(" [", 1)[0] for ln in warned] == doc["warnings"]
    assert not [ln for ln in table if ln.startswith("warning: ")]


@pytest.mark.parametrize("plan", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_mermaid_draws_every_inbound_rule_once(plan: Path) -> None:
    import re

    doc = json.loads(run("rules", str(plan), "--format", "json").stdout)
    lines = run("rules", str(plan), "--format", "mermaid").stdout.splitlines()
    assert lines[0] == "flowchart LR"

    def node_id(peer: dict[str, str]) -> str:
        raw = f"g_{peer['group']}" if "group" in peer else f"c_{peer['cidr']}"
        return re.sub(r"[^A-Za-z0-9]", "_", raw)

    declared = {m.group(1) for ln in lines if (m := re.fullmatch(r"    (\w+)(\[\".*\"\]|\(\[\".*\"\]\))", ln))}
    edges: dict[tuple[str, str], list[str]] = {}
    for ln in lines[1:]:
        m = re.fullmatch(r'    (\w+) -->\|"(.*)"\| (\w+)', ln)
        if m:
            edges[(m.group(1), m.group(3))] = m.group(2).split("<br/>")
    assert len(lines) == 1 + len(declared) + len(edges), "every line is a node or an edge"
    assert {node_id({"group": g["name"]}) for g in doc["groups"]} <= declared
    want: dict[tuple[str, str], set[str]] = {}
    for r in doc["rules"]:
        if r["direction"] == "ingress":
            want.setdefault((node_id(r["source"]), node_id({"group": r["group"]})), set()).add(_label(r))
    assert {k: set(v) for k, v in edges.items()} == want
    assert all(len(v) == len(set(v)) for v in edges.values())
    assert {src for src, _dst in edges} | {dst for _src, dst in edges} <= declared


@pytest.mark.parametrize("command", ["plan", "apply", "verify"])
def test_custom_cni_without_extra_rules_is_refused(tmp_path: Path, command: str) -> None:
    """`rules` warns; plan, apply and verify refuse before touching AWS or Terraform, as the README says."""
    plan = write_yaml(tmp_path / "plan.yaml", base_plan({"provider": "custom"}))
    env = write_yaml(tmp_path / "custom.yaml", {"plan_file": "plan.yaml", "aws": {"region": "eu-west-1"}})
    result = run(command, "--env", str(env), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {env}: extra_rules: is empty, but {plan} names CNI provider custom, whose ports ket-infra does "
        "not know; list the CNI's flows under extra_rules (see environments/example.yaml)"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / ".work").exists()
    warned = run("rules", str(plan), "--env", str(env), cwd=tmp_path)
    assert warned.returncode == 0 and "CNI provider custom: ket-infra knows no ports" in warned.stderr


@pytest.mark.parametrize("where", ["plan", "env", "audit"])
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_device_or_fifo_is_refused_at_once(tmp_path: Path, where: str, special: str) -> None:
    """/dev/zero once ended in a MemoryError traceback, a FIFO hung forever: neither is a regular file."""
    import os

    path = special
    if special == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    plan = str(EXAMPLES / "calico-overlay.yaml")
    args = {
        "plan": ["rules", path],
        "env": ["rules", plan, "--env", path],
        "audit": ["rules", plan, "--format", "mermaid", "--audit", path],
    }[where]
    result = run(*args, cwd=tmp_path)  # run() times out after 60 s: a hang fails here
    what = {"plan": "KET plan file (YAML)", "env": "environment file (YAML)", "audit": "ket-infra audit report (JSON)"}
    assert result.returncode == 1
    assert result.stderr == f"error: {path}: is not a regular file; give the path of the {what[where]}\n"


def test_an_audit_report_over_16_mib_is_refused(tmp_path: Path) -> None:
    """The bound every input file has: a 40 MiB audit report is not read to the end."""
    big = tmp_path / "audit.json"
    with big.open("w") as f:
        f.write('{"excess": []}')
        f.truncate(40 * 1024 * 1024)
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "mermaid", "--audit", str(big))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {big}: is over 16777216 bytes, too large for a ket-infra audit report; "
        "check that this is the right file\n"
    )


AUDIT_ITEM = {
    "severity": "world",
    "protocol": "tcp",
    "from_port": 22,
    "to_port": 22,
    "source": "0.0.0.0/0",
    "targets": ["worker01"],
    "via": {"group_id": "sg-1", "group_name": "hand-made", "rule_id": "sgr-1"},
    "reason": "open to the internet",
}


def audit_with(**item: object) -> dict[str, object]:
    return {"ok": False, "excess": [{**AUDIT_ITEM, **item}], "counts": {}}


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        ([], "must be a JSON object, got a list"),
        ({"ok": True}, "excess: is missing"),
        ({"excess": 5}, "excess: must be a list, got 5"),
        ({"excess": ["world"]}, "excess[0]: must be an object, got 'world'"),
        (audit_with(severity=5), "excess[0].severity: must be a string, got 5"),
        (audit_with(protocol=None), "excess[0].protocol: must be a string, got empty"),
        (audit_with(source=["0.0.0.0/0"]), "excess[0].source: must be a string, got a list"),
        (audit_with(targets="x"), "excess[0].targets: must be a list of node names, got 'x'"),
        (audit_with(targets=["worker01", 7]), "excess[0].targets[1]: must be a node name (a string), got 7"),
        (audit_with(from_port="22"), "excess[0].from_port: must be a port number (-1 to 65535) or null, got '22'"),
        (
            audit_with(to_port=True),
            "excess[0].to_port: must be a port number (-1 to 65535) or null, got the boolean true",
        ),
        (
            audit_with(to_port=10**30),
            "excess[0].to_port: must be a port number (-1 to 65535) or null, got a number too large",
        ),
        (audit_with(via="hand-made"), "excess[0].via: must be an object, got 'hand-made'"),
        (audit_with(via={"group_name": 5}), "excess[0].via.group_name: must be a string, got 5"),
    ],
)
def test_a_malformed_audit_report_is_one_line_naming_its_json_path(tmp_path: Path, doc: object, said: str) -> None:
    """Wrong types once ended in tracebacks (or, for "targets": "x", a diagram of its letters)."""
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(doc))
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "mermaid", "--audit", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: {path}: {said}; give the file ket-infra audit --format json wrote\n"


def test_an_audit_report_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    path.write_text('{"excess": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run("rules", str(EXAMPLES / "calico-overlay.yaml"), "--format", "mermaid", "--audit", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {path}: not JSON (nested too deeply); give the file ket-infra audit --format json wrote\n"
    )


def test_shell_completion_offers_the_environment_names(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    for name in ("staging.yaml", "prod.yml", "sandbox.yaml", "notes.txt"):
        (tmp_path / "environments" / name).write_text("")

    def complete(words: str) -> list[str]:
        env = child_env(tmp_path, {**os.environ, "_KET_INFRA_COMPLETE": "bash_complete", "COMP_WORDS": words})
        env["COMP_CWORD"] = str(len(words.split(" ")) - 1)
        done = subprocess.run(
            [sys.executable, "-m", "ket_infra"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("ket-infra plan --env ") == ["plain,prod", "plain,sandbox", "plain,staging"]
    assert complete("ket-infra verify --env s") == ["plain,sandbox", "plain,staging"]
    assert complete("ket-infra apply --env ./envs") == ["file,./envs"]
    assert "plain,destroy" in complete("ket-infra ")
