"""Mutation testing: how many deliberate breakages of the core modules the fast tests catch.

`make mutants` runs this. It runs mutmut (configured in pyproject.toml: the core
modules, the tests not marked e2e) and writes the score per module to
bench/mutants.json and a line to the README. A mutant is a small change to the
code (a flipped comparison, a changed constant, a dropped call); it is killed
when some test fails with it in place. Score = killed / all mutants, where
survivors, mutants no test reaches, timeouts and suspicious ones all count
against it.

Three passes, because mutmut picks the tests to run per mutated function and a
survivor runs every test that reaches its function, and because a pass is
checked again whole when its code or tests change: the core pass (the modules
pyproject.toml's only_mutate lists) leaves out the tests marked `slow` (real
Terraform runs that only the workflow needs); the workflow pass runs in a copy
of the tree (.mutants-slow-pass/, kept between runs) whose only_mutate names
the workflow alone, with those tests; the verdicts pass (audit, detach and
compare, whose tests are moto's and the CLI's) runs in a copy of its own
(.mutants-verdicts-pass/), without the slow tests.

A run resumes: mutmut keeps each mutant's result in mutants/ and checks only
the mutants it has no result for (new ones, and those of functions that
changed). Interrupt it at any time; the next `make mutants` goes on from there.
(Naming mutants on mutmut's command line would check them all again.)

Not part of `make test`: it takes hours on two cores.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("plan", "flows", "layout", "verify", "aws", "workflow", "terraform", "audit", "detach", "compare")


@dataclass(frozen=True)
class Pass:
    """Modules mutated together, where (the tree itself, or a copy whose only_mutate names them alone), and
    whether the `slow` tests run."""

    modules: tuple[str, ...]
    copy: Path | None
    slow: bool


PASSES = (
    Pass(("plan", "flows", "layout", "verify", "aws", "terraform"), None, slow=False),
    Pass(("workflow",), ROOT / ".mutants-slow-pass", slow=True),  # its mutants need the `slow` tests
    Pass(("audit", "detach", "compare"), ROOT / ".mutants-verdicts-pass", slow=False),
)
COPY_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "mutants",
    ".mutants-*-pass",
    ".work",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
)
TARGET = 85.0
README_START = "<!-- mutants:start -->"
README_END = "<!-- mutants:end -->"


def status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return str(status_by_exit_code[exit_code])


def fresh_stats(cwd: Path) -> None:
    """mutmut maps each function to the tests that reach it once, and does not map functions added
    later (their mutants would count as untested): when the code, the tests or the way they run
    changed since the map was made, drop it, so that mutmut makes it anew. (Dropped, not left to
    mutmut: a changed pytest configuration would make mutmut forget every result, not the map alone.)"""
    stats = cwd / "mutants" / "mutmut-stats.json"
    if not stats.exists():
        return
    made = stats.stat().st_mtime
    sources = [
        *(cwd / "ket_infra").rglob("*.py"),
        *(cwd / "tests").rglob("*.py"),
        cwd / "bench" / "mutmut_children.py",  # the plugin that maps the children's reach, and their site
        *(cwd / "bench" / "mutmut_site").glob("*.py"),
        cwd / "pyproject.toml",
    ]
    if any(p.stat().st_mtime > made for p in sources):
        stats.unlink()
        print(f"{stats}: the code or the tests changed since it was made; mutmut maps the tests again", flush=True)
        for meta in (cwd / "mutants").rglob("*.py.meta"):  # "no tests" was said by the old map
            forget(meta, lambda code: status(code) == "no tests")


def mutmut(cwd: Path, modules: tuple[str, ...], max_children: int, skip_slow: bool) -> None:
    """Check, in CWD, the mutants of its only_mutate that have no result yet."""
    fresh_stats(cwd)
    env = {**os.environ, "NO_COLOR": "1", "KET_INFRA_SKIP_SLOW": "1" if skip_slow else "0"}
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    print(f"mutmut over {', '.join(modules)} in {cwd}", flush=True)
    run = subprocess.run(cmd, cwd=cwd, env=env)
    if run.returncode != 0:
        raise SystemExit(f"error: mutmut run exited {run.returncode} in {cwd}")


def forget(meta: Path, which: Callable[[int], bool], names: list[str] | None = None) -> None:
    """Mark the mutants of META whose result WHICH picks (and, given NAMES, whose name matches one of
    those globs) unchecked: the next run checks them again."""
    if not meta.exists():
        return
    doc = json.loads(meta.read_text())
    codes = doc["exit_code_by_key"]
    again = [
        k
        for k, code in codes.items()
        if code is not None and which(code) and (names is None or any(fnmatch.fnmatch(k, n) for n in names))
    ]
    for k in again:
        codes[k] = None
    meta.write_text(json.dumps(doc))
    if again:
        print(f"{meta.name}: {len(again)} mutant(s) to check again", flush=True)


def only_mutate(pyproject: Path, modules: tuple[str, ...]) -> None:
    """A pass's copy mutates its MODULES alone (its pyproject.toml's only_mutate)."""
    text = pyproject.read_text()
    listed = re.search(r"only_mutate = \[.*?\]", text, flags=re.S)
    if listed is None:
        raise SystemExit(f"error: {pyproject} has no [tool.mutmut] only_mutate list")
    mutate = ", ".join(f'"ket_infra/{m}.py"' for m in modules)
    made = pyproject.stat().st_mtime_ns
    pyproject.write_text(text[: listed.start()] + f"only_mutate = [{mutate}]" + text[listed.end() :])
    os.utime(pyproject, ns=(made, made))  # as old as the original: a rewrite alone does not drop the map


def scores(where: dict[str, Path], previous: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Each module's score from its pass's results; a module whose pass has left no results on this
    machine keeps its entry of the last run (PREVIOUS), with the date it was measured."""
    out: dict[str, dict[str, object]] = {}
    for module in MODULES:
        meta = where[module] / "mutants" / "ket_infra" / f"{module}.py.meta"
        if not meta.exists() and module in previous:
            out[module] = previous[module]
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        counts = Counter(status(code) for code in codes.values())
        total = sum(counts.values())
        killed = counts.get("killed", 0)
        checked = total - counts.get("not checked", 0)
        survivors = sorted(name for name, code in codes.items() if status(code) not in ("killed", "not checked"))
        out[module] = {
            "mutants": total,
            "checked": checked,
            "killed": killed,
            # a module not checked to the end has no score yet: a partial figure would mislead
            "score": round(100.0 * killed / total, 1) if total and checked == total else None,
            "counts": dict(sorted(counts.items())),
            "not_killed": survivors,
        }
    return out


def readme_line(doc: dict[str, object]) -> str:
    modules = doc["modules"]
    assert isinstance(modules, dict)

    def part(m: str, v: dict[str, object]) -> str:
        if v["score"] is not None:
            when = v.get("date", doc["date"])
            return f"{m} {v['score']}%" + (f" ({when})" if when != doc["date"] else "")
        if not v["checked"]:
            return f"{m} not run yet"
        return f"{m} not finished ({v['checked']} of {v['mutants']} checked)"

    parts = ", ".join(part(m, v) for m, v in modules.items())
    return (
        f"Mutation score (mutmut, fast tests, {doc['date']}): {parts}; "
        f"{doc['killed']} of {doc['mutants']} mutants killed in {doc['seconds']:.0f} s (`make mutants`)."
    )


def write_readme(line: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{README_START}\n{line}\n{README_END}"
    if README_START in text:
        text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), block, text, flags=re.S)
    else:
        raise SystemExit(f"error: README.md has no {README_START} ... {README_END} block to write the score into")
    readme.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "mutants.json")
    parser.add_argument("--report-only", action="store_true", help="read the last run's results; do not run mutmut")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--recheck-survivors",
        action="store_true",
        help="forget the survivors' results first, so that new tests get their chance at them",
    )
    parser.add_argument(
        "--recheck",
        metavar="GLOB",
        action="append",
        help="as --recheck-survivors, for the survivors whose name matches GLOB alone (repeatable), "
        "e.g. 'ket_infra.workflow.x_destroy__*'",
    )
    parser.add_argument(
        "--modules",
        default=",".join(MODULES),
        help="which passes to run: a module runs the pass it belongs to (all of that pass's modules): "
        "core (plan, flows, layout, verify, aws, terraform), workflow (the slow pass), verdicts (audit, "
        "detach, compare); results of earlier runs are kept and only what has none is checked; default: all",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    seconds = 0.0
    last = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous, previous_date = last.get("modules", {}), last.get("date")
    wanted = [m.strip() for m in args.modules.split(",") if m.strip()]
    ran = [m for p in PASSES if set(p.modules) & set(wanted) for m in p.modules]  # a pass runs whole
    where = {m: p.copy or ROOT for p in PASSES for m in p.modules}
    if not args.report_only:
        started = time.monotonic()
        unknown = sorted(set(wanted) - set(MODULES))
        if unknown:
            raise SystemExit(f"error: --modules: {', '.join(unknown)} not among {', '.join(MODULES)}")
        if args.recheck_survivors or args.recheck:
            for m in wanted:
                meta = where[m] / "mutants" / "ket_infra" / f"{m}.py.meta"
                forget(meta, lambda code: status(code) != "killed", None if args.recheck_survivors else args.recheck)
        for p in PASSES:
            if not set(p.modules) & set(wanted):
                continue
            if p.copy is not None:
                # the copy keeps its mutants/ between runs, so mutmut can reuse what did not change
                shutil.copytree(ROOT, p.copy, ignore=COPY_IGNORE, dirs_exist_ok=True)
                only_mutate(p.copy / "pyproject.toml", p.modules)
            mutmut(p.copy or ROOT, p.modules, args.max_children, skip_slow=not p.slow)
        seconds = time.monotonic() - started
    modules = scores(where, previous)
    for m, entry in modules.items():
        # how long the run that checked this module took (several modules checked together share it)
        if m in ran and not args.report_only:
            entry.update(seconds=round(seconds, 1), checked_with=ran, date=time.strftime("%Y-%m-%d"))
        elif m in previous:
            if "seconds" in previous[m]:
                entry["seconds"] = previous[m]["seconds"]
                entry["checked_with"] = previous[m].get("checked_with", [m])
            entry["date"] = previous[m].get("date", previous_date)
    killed = sum(int(m["killed"]) for m in modules.values())  # type: ignore[call-overload]
    total = sum(int(m["mutants"]) for m in modules.values())  # type: ignore[call-overload]
    doc: dict[str, object] = {
        "tool": "mutmut",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(
            sum({tuple(v["checked_with"]): float(v["seconds"]) for v in modules.values() if "seconds" in v}.values()), 1
        ),  # type: ignore[arg-type]
        "target": TARGET,
        "mutants": total,
        "killed": killed,
        "modules": modules,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    line = readme_line(doc)
    write_readme(line)
    print(line)
    low = [m for m, v in modules.items() if v["score"] is not None and float(v["score"]) < TARGET]  # type: ignore[arg-type]
    for m in low:
        print(f"below {TARGET}%: {m} ({modules[m]['score']}%); `mutmut results` lists the survivors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
