"""Live progress of a long Terraform run, on stderr.

A bar redrawn in place when stderr is a terminal; otherwise plain lines: one when a phase
starts, one at least every 10 s while Terraform works ("still applying: 40/222 done, 20 s"),
one at the end. Colour only on a terminal and only when NO_COLOR is unset
(https://no-color.org). The caller feeds it what Terraform's machine-readable UI reports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TextIO

# --quiet: a Live made while this is set says nothing (the CLI sets it for one command and resets it after)
QUIET: ContextVar[bool] = ContextVar("ket_infra_quiet", default=False)
INTERVAL = 10.0  # seconds between plain lines while nothing else is said
BAR_WIDTH = 24
REDRAW = 0.1  # seconds between redraws of the bar


_said = [time.monotonic()]  # when anything was last said on stderr (a Live's line or bar, a progress line)


def said() -> None:
    """Something was just said: a heartbeat waits a full INTERVAL from now."""
    _said[0] = time.monotonic()


STOPPING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def background(target: Callable[[], object], name: str) -> threading.Thread:
    """Start TARGET in a daemon thread that leaves Ctrl-C, SIGTERM and SIGHUP to the main thread.

    The kernel hands a process's signal to any thread that does not block it. Delivered to a thread
    of ours, it would leave the main thread asleep in whatever call it is in (a lock, a pipe read, a
    socket read of up to 30 s) until that returns, and the run would not stop for as long. The
    thread is started with them blocked (it inherits the mask), so no signal reaches it even at its
    first instruction; a signal that comes meanwhile waits for the main thread's mask to be put back.
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return thread


class Heartbeat:
    """A line whenever INTERVAL passes with nothing said, through the whole command (a node lookup, an init,
    a verify after the apply), not only while Terraform streams: `still working: <what was said last>, N s`."""

    def __init__(self, say: Callable[[str], None], interval: float | None = None) -> None:
        self.say = say
        self.interval = INTERVAL if interval is None else interval
        self.last = ""  # what was said last, to name where the command is
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, message: str) -> None:
        self.last = message
        said()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 4)):
            if time.monotonic() - _said[0] >= self.interval:
                elapsed = f"{time.monotonic() - self.started:.0f} s"
                self.say(f"still working: {self.last}, {elapsed}" if self.last else f"still working, {elapsed}")
                said()

    def __enter__(self) -> Heartbeat:
        said()
        self._thread = background(self._run, "heartbeat")  # Ctrl-C stays the main thread's
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def wants_colour(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


class Live:
    """The progress of one Terraform command: its phase, resources done of total, elapsed time."""

    def __init__(
        self,
        what: str,
        stream: TextIO | None = None,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
        shown: bool = True,
    ) -> None:
        self.what = what  # e.g. "terraform apply"
        self.shown = shown  # a hidden Live keeps count and says nothing until show()
        self.silent = QUIET.get()  # --quiet: keeps count, says nothing ever
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.tty = self.stream.isatty() if tty is None else tty
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        self.started = clock()
        self.phase = ""
        self.done = 0
        self.total: int | None = None
        self._said = self.started  # when the last plain line was written
        self._drawn = 0.0
        self._width = 0  # length of the bar line on screen
        self._lock = threading.Lock()

    # --- what Terraform reports ------------------------------------------------------------------

    def enter(self, phase: str, total: int | None = None) -> None:
        """A new phase (refreshing, planning, applying, destroying), with its total when known."""
        with self._lock:
            if phase == self.phase and total == self.total:
                return
            self.phase, self.total, self.done = phase, total, 0
            self._say_phase()

    def show(self) -> None:
        """From now on, say what happens; first where it stands."""
        with self._lock:
            if not self.shown:
                self.shown = True
                self._say_phase()

    def step(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self.tty and self.shown:
                self._draw()

    def tick(self) -> None:
        """Called about once a second: a plain line when INTERVAL has passed in silence, or a redraw."""
        with self._lock:
            if not self.shown:
                return
            if self.tty:
                self._draw()
            elif self.clock() - self._said >= self.interval:
                self._line(f"still {self.phase or 'working'}: {self._count()}{self._elapsed()}")

    def finish(self, message: str) -> None:
        with self._lock:
            if self.tty and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self._width = 0
            self._line(f"{self.what}: {message} in {self._elapsed()}")

    # --- output ----------------------------------------------------------------------------------

    def _say_phase(self) -> None:
        if not self.shown:
            return
        if self.tty:
            self._draw(force=True)
        else:
            self._line(f"{self.what}: {self.phase}" + (f" {self.total} resource change(s)" if self.total else ""))

    def _elapsed(self) -> str:
        return f"{self.clock() - self.started:.0f} s"

    def _count(self) -> str:
        if self.total:
            return f"{self.done}/{self.total} done, "
        return f"{self.done} done, " if self.done else ""

    def _line(self, text: str) -> None:
        if self.silent:
            return
        self.stream.write(text + "\n")
        self.stream.flush()
        self._said = self.clock()
        said()

    def _draw(self, force: bool = False) -> None:
        if self.silent:
            return
        now = self.clock()
        if not force and now - self._drawn < REDRAW:
            return
        self._drawn = now
        if self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
            full, empty = "#" * filled, "-" * (BAR_WIDTH - filled)
            if self.colour:
                full = f"\x1b[32m{full}\x1b[0m"
            bar = f"[{full}{empty}] {self.done}/{self.total} "
        else:
            bar = f"{self.done} " if self.done else ""
        text = f"{self.what}: {bar}{self.phase}, {self._elapsed()}"
        visible = len(text) - (9 if self.colour and self.total else 0)
        pad = " " * max(0, self._width - visible)
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()
        said()
        self._width = visible
