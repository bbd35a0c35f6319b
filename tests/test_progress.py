"""Live progress: plain lines at least every 10 s off a terminal, a bar on one, colour only where wanted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ket_infra.progress import Live


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain() -> tuple[Live, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Live("terraform apply", stream=out, clock=clock, tty=False), out, clock


def test_plain_lines_name_the_phase_and_say_something_every_ten_seconds() -> None:
    live, out, clock = plain()
    live.enter("starting")
    live.enter("applying", 222)
    for second in range(1, 26):
        clock.now += 1
        live.step(2)
        live.tick()
        if second == 9:
            assert out.getvalue().count("\n") == 2  # nothing yet: ten seconds have not passed
    live.finish("222 added, 0 changed, 0 removed")
    assert out.getvalue().splitlines() == [
        "terraform apply: starting",
        "terraform apply: applying 222 resource change(s)",
        "still applying: 20/222 done, 10 s",
        "still applying: 40/222 done, 20 s",
        "terraform apply: 222 added, 0 changed, 0 removed in 25 s",
    ]


def test_a_line_said_resets_the_ten_seconds_and_a_phase_restarts_the_count() -> None:
    live, out, clock = plain()
    live.enter("refreshing")
    clock.now += 6
    live.step(3)
    live.enter("planning")  # a new phase is a line of its own
    clock.now += 6
    live.tick()  # 6 s since the last line: quiet
    clock.now += 4
    live.tick()
    live.enter("planning")  # the same phase again: no line
    assert out.getvalue().splitlines() == [
        "terraform apply: refreshing",
        "terraform apply: planning",
        "still planning: 16 s",
    ]
    assert live.done == 0


def test_a_terminal_gets_a_bar_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, clock = io.StringIO(), Clock()
    live = Live("terraform apply", stream=out, clock=clock, tty=True)
    live.enter("applying", 4)
    clock.now += 1
    live.step(2)
    clock.now += 1
    live.finish("4 added, 0 changed, 0 removed")
    text = out.getvalue()
    assert "\n" not in text.rsplit("\r", 1)[0]  # the bar is redrawn on one line, never scrolled
    assert "\x1b[32m" + "#" * 12 + "\x1b[0m" + "-" * 12 + "] 2/4 applying, 1 s" in text
    assert text.endswith("\rterraform apply: 4 added, 0 changed, 0 removed in 2 s\n")


def test_no_colour_with_no_color_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out, clock = io.StringIO(), Clock()
    live = Live("terraform apply", stream=out, clock=clock, tty=True)
    live.enter("applying", 4)
    clock.now += 1
    live.step(4)
    assert "\x1b" not in out.getvalue()
    assert "[" + "#" * 24 + "] 4/4 applying, 1 s" in out.getvalue()


def test_not_a_terminal_means_no_bar_and_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()  # isatty() is False
    live = Live("terraform plan", stream=out)
    live.enter("planning")
    live.step(5)
    live.finish("done")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue() and "#" not in out.getvalue()


def test_a_hidden_live_keeps_count_and_says_it_once_shown() -> None:
    """A plan started ahead of discovery: its progress waits until the plan is known to be the one wanted."""
    out, clock = io.StringIO(), Clock()
    live = Live("terraform plan", stream=out, clock=clock, tty=False, shown=False)
    live.enter("starting")
    live.enter("refreshing")
    live.step(3)
    clock.now += 30
    live.tick()
    assert out.getvalue() == ""
    live.show()
    live.show()  # once
    live.enter("planning")
    live.finish("1 to add, 0 to change, 0 to remove")
    assert out.getvalue().splitlines() == [
        "terraform plan: refreshing",
        "terraform plan: planning",
        "terraform plan: 1 to add, 0 to change, 0 to remove in 30 s",
    ]


def test_a_hidden_bar_is_drawn_once_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out, clock = io.StringIO(), Clock()
    live = Live("terraform plan", stream=out, clock=clock, tty=True, shown=False)
    live.enter("planning", 4)
    live.step(1)
    live.tick()
    assert out.getvalue() == ""
    live.show()
    assert out.getvalue() == "\rterraform plan: [######------------------] 1/4 planning, 0 s"


def signals_blocked(native_id: int | None) -> int:
    """The mask of signals the thread NATIVE_ID blocks, as the kernel shows it (bit N-1 for signal N)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("SigBlk:")).split()[1], 16)


def test_the_heartbeat_thread_leaves_ctrl_c_and_termination_signals_to_the_main_thread() -> None:
    """A signal the kernel hands to the heartbeat's thread would leave the main thread asleep in a blocking call
    (Ctrl-C unanswered for as long): the thread blocks SIGINT, SIGTERM and SIGHUP, so they reach the main one."""
    import signal
    import threading
    import time

    from ket_infra.progress import Heartbeat

    with Heartbeat(lambda _line: None, interval=60):
        (beat,) = [t for t in threading.enumerate() if t.name == "heartbeat"]
        deadline = time.monotonic() + 5
        blocked = 0
        while time.monotonic() < deadline:
            blocked = signals_blocked(beat.native_id)
            if blocked:
                break
            time.sleep(0.01)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert blocked & (1 << (sig - 1)), f"{sig.name} not blocked in the heartbeat thread"


def test_every_background_thread_is_born_with_the_stopping_signals_blocked() -> None:
    """A thread of ket-infra's (Terraform's output readers, the plan started ahead, the node lookup) blocks SIGINT,
    SIGTERM and SIGHUP from its first instruction; the main thread's own mask is as it was."""
    import signal
    import threading

    from ket_infra.progress import background

    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    seen: list[int] = []

    def first_thing() -> None:
        seen.append(signals_blocked(threading.get_native_id()))

    background(first_thing, "probe").join(timeout=10)
    (blocked,) = seen
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert blocked & (1 << (sig - 1)), f"{sig.name} not blocked in the thread"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
