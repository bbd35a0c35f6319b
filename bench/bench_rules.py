"""Benchmark `ket-infra rules` at 3, 100, 1000 and 5000 nodes, and CLI start-up.

Not a test: it measures and writes its figures as JSON (--out). Each figure
is the best of --repeat runs, all taken in this one run, so ratios between
them hold even on a shared, noisy machine.

    .venv/bin/python bench/bench_rules.py --out bench/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ket_infra.layout import layout  # noqa: E402
from ket_infra.plan import load_plan  # noqa: E402
from ket_infra.report import render  # noqa: E402

SIZES = (3, 100, 1000, 5000)


def make_plan(nodes: int) -> dict[str, Any]:
    """A calico overlay plan: 3 etcd (1 when tiny), 3 masters, ~2% ingress, ~2% storage, the rest workers."""

    def node(i: int) -> dict[str, str]:
        return {"host": f"node{i:05d}", "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"}

    if nodes <= 3:
        groups = {"etcd": [node(1)], "master": [node(2)], "worker": [node(3)], "ingress": [], "storage": []}
    else:
        ing = max(1, nodes // 50)
        sto = max(1, nodes // 50)
        workers = nodes - 6 - ing - sto
        i = iter(range(1, nodes + 1))
        groups = {
            "etcd": [node(next(i)) for _ in range(3)],
            "master": [node(next(i)) for _ in range(3)],
            "worker": [node(next(i)) for _ in range(workers)],
            "ingress": [node(next(i)) for _ in range(ing)],
            "storage": [node(next(i)) for _ in range(sto)],
        }
    plan: dict[str, Any] = {
        "cluster": {
            "name": f"bench-{nodes}",
            "networking": {"pod_cidr_block": "172.16.0.0/16", "service_cidr_block": "172.20.0.0/16"},
        },
        "add_ons": {"cni": {"provider": "calico", "options": {"calico": {"mode": "overlay"}}}},
    }
    for role, members in groups.items():
        plan[role] = {"expected_count": len(members), "nodes": members}
    return plan


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ket_infra", *args], check=True, capture_output=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="merge the figures into this JSON file under 'rules' and 'startup'")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"plan-{n}.yaml"
            path.write_text(yaml.safe_dump(make_plan(n)))
            rs = layout(load_plan(path))
            in_process = best(lambda p=path: render(layout(load_plan(p)), "json"), args.repeat)
            cli = best(lambda p=path: run_cli("rules", str(p), "--format", "json"), args.repeat)
            rows.append(
                {
                    "nodes": n,
                    "groups": len(rs.groups),
                    "rules": len(rs.rules),
                    "in_process_s": round(in_process, 4),
                    "cli_s": round(cli, 4),
                }
            )
            print(f"rules  {n:>5} nodes: {len(rs.rules):>4} rules, in-process {in_process:.3f} s, CLI {cli:.3f} s")

    bare = best(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeat)
    helps = best(lambda: run_cli("--help"), args.repeat)
    startup = {"bare_python_s": round(bare, 4), "help_s": round(helps, 4), "ratio": round(helps / bare, 2)}
    print(f"start  bare python {bare:.3f} s, ket-infra --help {helps:.3f} s, ratio {helps / bare:.1f}x")

    if args.out:
        doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        doc["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
        doc["rules"] = rows
        doc["startup"] = startup
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
