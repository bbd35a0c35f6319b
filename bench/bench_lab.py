"""Benchmark `ket-infra lab`: up, run (packets and the real daemons) and down at 5, 12 and 50 nodes.

Not a test: it measures and writes its figures as JSON (--out, under "lab").
Calico overlay plans made here (BIRD full mesh, etcd, IP-in-IP), the 50-node one
too. Linux, as root, with nftables, bird2, etcd-server and etcd-client.

    sudo .venv/bin/python bench/bench_lab.py --out bench/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_rules import make_plan  # noqa: E402
from ket_infra import lab  # noqa: E402

SIZES = (5, 12, 50)


def plan_of(nodes: int) -> dict[str, Any]:
    """make_plan's calico overlay plan; at 5 nodes 1 etcd, 1 master and 3 workers."""
    if nodes > 8:
        return make_plan(nodes)
    plan = make_plan(3)
    ips = [f"10.0.0.{i}" for i in range(1, nodes + 1)]
    plan["etcd"]["nodes"] = [{"host": "etcd01", "ip": ips[0]}]
    plan["master"]["nodes"] = [{"host": "master01", "ip": ips[1]}]
    plan["worker"] = {
        "expected_count": nodes - 2,
        "nodes": [{"host": f"worker{i:02d}", "ip": ip} for i, ip in enumerate(ips[2:], 1)],
    }
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="merge the figures into this JSON file under 'lab'")
    args = parser.parse_args()
    problem = lab.unavailable()
    if problem:
        sys.exit(f"error: the lab cannot run here: {problem}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"plan-{n}.yaml"
            path.write_text(yaml.safe_dump(plan_of(n)))
            state = Path(tmp) / f"state-{n}.json"
            start = time.perf_counter()
            the_lab = lab.up(str(path), None, state, progress=lambda _m: None)
            up = time.perf_counter() - start
            try:
                start = time.perf_counter()
                report = lab.run(the_lab, progress=lambda _m: None)
                ran = time.perf_counter() - start
            finally:
                start = time.perf_counter()
                lab.down(state)
                down = time.perf_counter() - start
            counts = report.as_json()["counts"]
            rows.append(
                {
                    "nodes": n,
                    "ok": report.ok,
                    **counts,
                    "up_s": round(up, 2),
                    "run_s": round(ran, 2),
                    "down_s": round(down, 2),
                }
            )
            print(
                f"lab {n:>3} nodes: up {up:.2f} s, run {ran:.2f} s ({counts['flow']} flow packets, "
                f"{counts['daemon']} daemon checks, {counts['probe']} probes, {'ok' if report.ok else 'FAILED'}), "
                f"down {down:.2f} s" + (f" failed: {report.failed_flows()}" if not report.ok else "")
            )
    if args.out:
        doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        doc["lab"] = rows
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
