"""Loaded by every Python child of a test while mutmut maps the tests (see bench/mutmut_children.py).

mutmut notes which functions each test reaches in the test's own process; what a `python -m
ket_infra` child runs would be lost with the child. Here the child keeps its own list and writes
it, at exit, to the directory the test process named.
"""

import atexit
import os

_HITS = os.environ.get("KET_INFRA_MUTMUT_HITS")

if _HITS and os.environ.get("MUTANT_UNDER_TEST") == "stats":
    from mutmut.mutation import trampoline

    _reached: set[str] = set()

    def _note(name: str, caller: str | None = None) -> None:
        _reached.add(name)

    def _write() -> None:
        if _reached:
            with open(os.path.join(_HITS, f"{os.getpid()}.hits"), "w") as out:
                out.write("\n".join(sorted(_reached)))

    trampoline.record_trampoline_hit = _note  # type: ignore[assignment]
    atexit.register(_write)
