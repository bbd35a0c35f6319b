"""Benchmark `ket-infra plan`, `ket-infra verify` and `ket-infra audit` against the sandbox.

Not a test: it measures and writes its figures as JSON (--out merges them
under "plan", "verify" and "audit"; a size list left empty keeps that
section's last figures). All figures of one size come from one run, so
the ratios hold on a shared machine.

- plan: `ket-infra plan` end to end (discover, render, init when needed,
  plan, summary; with the local backend used here, Terraform's plan starts
  while the nodes are looked up) next to a bare `terraform plan` in the same rendered folder,
  both warm, alternating, medians of five; the ratio is ket-infra's own
  overhead. The first `ket-infra plan` (render and init) is recorded apart.
- verify: after `ket-infra apply`, wall time of `verify` in-process and the
  number of AWS API calls it made (counted in the boto3 client).
- audit: on the same applied sandbox (a size in both lists is applied once),
  wall time of the `ket-infra audit --format json` CLI, median of three, with
  the AWS API calls and inbound rules checked from its JSON. The sandbox after
  an apply must audit clean: any excess stops the benchmark with the JSON.

Needs the Terraform CLI and, offline, KET_INFRA_TF_PLUGIN_DIR.

    .venv/bin/python bench/bench_aws.py --plan-sizes 3 100 500 --verify-sizes 10 300 1000 \
        --audit-sizes 10 300 1000 --out bench/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ket_infra.aws import Counter  # noqa: E402
from ket_infra.sandbox import sandbox_down, sandbox_up  # noqa: E402
from ket_infra.workflow import context  # noqa: E402


def make_plan(nodes: int) -> dict[str, Any]:
    """A calico overlay plan: 3 etcd, 3 masters (1 of each when tiny), ~2% ingress, ~2% storage, the rest workers."""

    def node(i: int) -> dict[str, str]:
        # 200 nodes per /24, away from the addresses AWS reserves
        return {"host": f"node{i:05d}", "ip": f"10.0.{i // 200}.{10 + i % 200}"}

    counter = iter(range(nodes))
    if nodes <= 3:
        sizes = {"etcd": 1, "master": 1, "worker": nodes - 2, "ingress": 0, "storage": 0}
    else:
        extra = max(1, nodes // 50)
        sizes = {"etcd": 3, "master": 3, "worker": nodes - 6 - 2 * extra, "ingress": extra, "storage": extra}
    plan: dict[str, Any] = {
        "cluster": {
            "name": f"bench{nodes}",
            "networking": {"pod_cidr_block": "172.16.0.0/16", "service_cidr_block": "172.20.0.0/16"},
        },
        "add_ons": {"cni": {"provider": "calico", "options": {"calico": {"mode": "overlay"}}}},
    }
    for role, size in sizes.items():
        members = [node(next(counter)) for _ in range(size)]
        plan[role] = {"expected_count": len(members), "nodes": members}
    return plan


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 2):
        raise SystemExit(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return elapsed


def setup(work: Path, nodes: int, port: int) -> tuple[Path, dict[str, str]]:
    plan_path = work / f"plan-{nodes}.yaml"
    plan_path.write_text(yaml.safe_dump(make_plan(nodes)))
    env_file = work / "environments" / f"bench{nodes}.yaml"
    start = time.perf_counter()
    sandbox_up(plan_path, port, env_file, work / ".work", progress=lambda _m: None)
    print(f"  sandbox seeded with {nodes} instances in {time.perf_counter() - start:.1f} s", flush=True)
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return env_file, env


def bench_plan(work: Path, nodes: int, port: int, rounds: int = 5) -> dict[str, Any]:
    """ket-infra plan next to a bare terraform plan of the same folder, both warm, alternating.

    The first ket-infra plan renders the folder and runs init (timed apart, as `first`); then
    ROUNDS times each, alternating so that both meet the machine in the same state; the medians
    make the ratio.
    """
    env_file, env = setup(work, nodes, port)
    ket = [sys.executable, "-m", "ket_infra", "plan", "--env", str(env_file)]
    rendered = work / ".work" / env_file.stem
    bare = ["terraform", "plan", "-input=false", "-no-color", "-lock=false", "-out=bare.tfplan"]
    first_s = timed(ket, work, env)
    ket_runs: list[float] = []
    bare_runs: list[float] = []
    for _ in range(rounds):
        ket_runs.append(timed(ket, work, env))
        bare_runs.append(timed(bare, rendered, env))
    ket_s, bare_s = statistics.median(ket_runs), statistics.median(bare_runs)
    resources = len(json.loads((rendered / "ket-infra.auto.tfvars.json").read_text())["ingress_rules"])
    row = {
        "nodes": nodes,
        "ket_infra_plan_s": round(ket_s, 2),
        "bare_terraform_plan_s": round(bare_s, 2),
        "overhead_ratio": round(ket_s / bare_s, 2),
        "ket_infra_first_plan_s": round(first_s, 2),
        "rounds": rounds,
        "ingress_rules": resources,
    }
    print(
        f"plan   {nodes:>5} nodes: ket-infra plan {ket_s:.1f} s, bare terraform plan {bare_s:.1f} s, "
        f"ratio {ket_s / bare_s:.2f} (medians of {rounds}; first ket-infra plan with init {first_s:.1f} s)",
        flush=True,
    )
    return row


@dataclass(frozen=True)
class Applied:
    """A sandbox seeded with NODES instances and `ket-infra apply`'d; verify and audit of that size share it."""

    nodes: int
    env_file: Path
    env: dict[str, str]
    apply_s: float


def apply_sandbox(work: Path, nodes: int, port: int) -> Applied:
    env_file, env = setup(work, nodes, port)
    print(f"  ket-infra apply of {nodes} nodes ...", flush=True)
    apply_s = timed([sys.executable, "-m", "ket_infra", "apply", "--auto-approve", "--env", str(env_file)], work, env)
    print(f"  applied in {apply_s:.1f} s", flush=True)
    return Applied(nodes, env_file, env, apply_s)


def bench_verify(work: Path, nodes: int, port: int, applied: Applied | None = None) -> dict[str, Any]:
    """verify in-process after an apply; APPLIED, when given, is the sandbox of this size already applied."""
    from ket_infra.verify import verify

    if applied is None or applied.nodes != nodes:
        applied = apply_sandbox(work, nodes, port)
    env_file, apply_s = applied.env_file, applied.apply_s
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    cwd = os.getcwd()
    os.chdir(work)
    try:
        ctx = context(str(env_file), progress=lambda _m: None)
        counter = Counter()
        start = time.perf_counter()
        report = verify(ctx.plan, ctx.env, ctx.rules, counter)
        verify_s = time.perf_counter() - start
    finally:
        os.chdir(cwd)
    row = {
        "nodes": nodes,
        "verify_s": round(verify_s, 2),
        "api_calls": counter.total,
        "calls_by_operation": counter.calls,
        "checks": len(report.checks),
        "node_pairs": sum(c.pairs for c in report.checks),
        "ok": report.ok,
        "apply_s": round(apply_s, 1),
    }
    print(
        f"verify {nodes:>5} nodes: {verify_s:.2f} s, {counter.total} AWS API calls, {row['checks']} checks covering "
        f"{row['node_pairs']} node pairs, ok={report.ok} (apply took {apply_s:.0f} s)",
        flush=True,
    )
    return row


def run_audit(work: Path, applied: Applied) -> tuple[float, dict[str, Any]]:
    """One `ket-infra audit --format json`: its wall time and its JSON. Stops on an error or any excess."""
    cmd = [sys.executable, "-m", "ket_infra", "audit", "--env", str(applied.env_file), "--format", "json"]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=work, env=applied.env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 3):
        raise SystemExit(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    try:
        doc: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as err:
        raise SystemExit(f"{' '.join(cmd)}: no JSON on stdout ({err}):\n{result.stdout[-2000:]}") from err
    if result.returncode == 3 or not doc["ok"] or doc["counts"]["excess"]:
        raise SystemExit(
            f"audit of the sandbox after ket-infra apply ({applied.nodes} nodes) is not clean "
            f"(exit {result.returncode}); the benchmark stops here. Its JSON:\n{json.dumps(doc, indent=2)}"
        )
    return elapsed, doc


def bench_audit(work: Path, nodes: int, port: int, applied: Applied | None = None, runs: int = 3) -> dict[str, Any]:
    """`ket-infra audit --format json` after an apply, median of RUNS; APPLIED as for bench_verify."""
    if applied is None or applied.nodes != nodes:
        applied = apply_sandbox(work, nodes, port)
    times: list[float] = []
    counts: dict[str, int] = {}
    for i in range(runs):
        elapsed, doc = run_audit(work, applied)
        times.append(elapsed)
        print(f"  audit run {i + 1}/{runs}: {elapsed:.2f} s", flush=True)
        if counts and doc["counts"] != counts:
            raise SystemExit(f"audit of {nodes} nodes counted differently across runs: {counts} then {doc['counts']}")
        counts = doc["counts"]
    if counts["nodes"] != nodes:
        raise SystemExit(f"audit saw {counts['nodes']} nodes in a sandbox seeded with {nodes}; its counts: {counts}")
    audit_s = statistics.median(times)
    row = {
        "nodes": nodes,
        "audit_s": round(audit_s, 2),
        "api_calls": counts["api_calls"],
        "rules_checked": counts["rules_checked"],
        "excess": counts["excess"],
        "runs": runs,
        "apply_s": round(applied.apply_s, 1),
    }
    print(
        f"audit  {nodes:>5} nodes: {audit_s:.2f} s (median of {runs}), {row['api_calls']} AWS API calls, "
        f"{row['rules_checked']} inbound rules checked, {row['excess']} excess",
        flush=True,
    )
    return row


def bench_applied(
    work: Path, verify_sizes: list[int], audit_sizes: list[int], port: int
) -> tuple[list[Any], list[Any]]:
    """verify and audit rows, in the order of their size lists; a size in both is seeded and applied once.

    The sandbox holds one size at a time, so each size's verify and audit run back to back on it.
    """
    verifies: dict[int, dict[str, Any]] = {}
    audits: dict[int, dict[str, Any]] = {}
    for nodes in dict.fromkeys([*verify_sizes, *audit_sizes]):
        applied = apply_sandbox(work, nodes, port)
        if nodes in verify_sizes:
            verifies[nodes] = bench_verify(work, nodes, port, applied)
        if nodes in audit_sizes:
            audits[nodes] = bench_audit(work, nodes, port, applied)
    return [verifies[n] for n in verify_sizes], [audits[n] for n in audit_sizes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan-sizes", type=int, nargs="*", default=[3, 100, 500])
    parser.add_argument("--verify-sizes", type=int, nargs="*", default=[10, 300, 1000])
    parser.add_argument("--audit-sizes", type=int, nargs="*", default=[10, 300, 1000])
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("terraform") is None:
        raise SystemExit("terraform not found: install Terraform >= 1.5 to run this benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            plans = [bench_plan(work, n, args.port) for n in args.plan_sizes]
            verifies, audits = bench_applied(work, args.verify_sizes, args.audit_sizes, args.port)
        finally:
            sandbox_down(args.port, work / ".work")
    if args.out:
        doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        if plans:  # a size list left empty keeps the last figures
            doc["plan"] = plans
        if verifies:
            doc["verify"] = verifies
        if audits:
            doc["audit"] = audits
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
