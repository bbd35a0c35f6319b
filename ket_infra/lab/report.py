"""The lab's verdict: each exchange's result, and the report as text, JSON or JUnit (as verify's)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class Result:
    kind: str  # flow | probe | daemon
    flow: str
    source: str
    target: str
    what: str
    ok: bool
    words: str  # what happened, in the packets' or the daemon's own words

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "flow": self.flow,
            "source_node": self.source,
            "target_node": self.target,
            "what": self.what,
            "status": ("passed" if self.ok else "failed")
            if self.kind != "probe"
            else ("dropped" if self.ok else "open"),
            "words": self.words,
        }


@dataclass
class Report:
    lab: str
    plan_file: str
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failed_flows(self) -> list[str]:
        return list(dict.fromkeys(r.flow for r in self.results if not r.ok and r.kind != "probe"))

    def as_json(self) -> dict[str, Any]:
        counts = {k: sum(1 for r in self.results if r.kind == k) for k in ("flow", "daemon", "probe")}
        return {
            "ok": self.ok,
            "lab": self.lab,
            "plan_file": self.plan_file,
            "counts": counts,
            "failed_flows": self.failed_flows(),
            "results": [r.as_json() for r in self.results],
            "notes": self.notes,
        }


def text_report(report: Report) -> str:
    lines = [f"lab {report.lab}: {report.plan_file}"]
    by_flow: dict[str, list[Result]] = defaultdict(list)
    for r in report.results:
        by_flow[r.flow if r.kind != "probe" else "probe"].append(r)
    for flow, rs in by_flow.items():
        if flow == "probe":
            continue
        bad = [r for r in rs if not r.ok]
        if not bad:
            lines.append(f"  pass  {flow}: {len(rs)} exchange(s) ({', '.join(dict.fromkeys(r.what for r in rs))})")
            continue
        lines.append(f"  FAIL  {flow}: {len(bad)} of {len(rs)} failed")
        for r in bad[:8]:
            lines.append(f"        {r.source} -> {r.target} {r.what}: {r.words}")
        if len(bad) > 8:
            lines.append(f"        ... and {len(bad) - 8} more")
    probes = by_flow.get("probe", [])
    open_ = [r for r in probes if not r.ok]
    lines.append(
        f"  {'pass' if not open_ else 'FAIL'}  probes of what no flow requires: {len(probes) - len(open_)} of {len(probes)} dropped"
    )
    for r in open_[:20]:
        lines.append(f"        {r.source} -> {r.target} {r.what}: {r.words}")
    for n in report.notes:
        lines.append(f"note: {n}")
    failed = report.failed_flows()
    verdict = (
        "every flow passes and every probe is dropped"
        if report.ok
        else (f"failed: {', '.join(failed)}" if failed else "")
        + (f"{'; ' if failed else 'failed: '}{len(open_)} probe(s) got through" if open_ else "")
    )
    lines.append(f"lab: {verdict}")
    return "\n".join(lines) + "\n"


def junit_report(report: Report) -> str:
    cases = []
    for r in report.results:
        name = f"{r.flow} {r.source} -> {r.target} {r.what}"
        if r.ok:
            cases.append(f"    <testcase classname={quoteattr('lab.' + r.kind)} name={quoteattr(name)}/>")
        else:
            cases.append(
                f"    <testcase classname={quoteattr('lab.' + r.kind)} name={quoteattr(name)}>"
                f"<failure message={quoteattr(r.words)}/></testcase>"
            )
    failures = sum(1 for r in report.results if not r.ok)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
        f'  <testsuite name={quoteattr("ket-infra lab " + report.lab)} tests="{len(report.results)}" failures="{failures}">\n'
        + "\n".join(cases)
        + "\n  </testsuite>\n</testsuites>\n"
    )
