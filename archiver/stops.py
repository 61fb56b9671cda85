"""How a command stops on SIGINT (Ctrl-C) and SIGTERM (systemd, ``kill``, ``timeout``).

One handler serves the whole process, from the command's start to its exit:

* The **first** signal asks for a stop. Outside a pass (start-up, migrations, ``serve``
  once it has closed its connections, ``status``) the command exits at once, 130 (SIGINT)
  or 143 (SIGTERM), without a word: nothing there needs finishing (a migration is one
  transaction, which the database rolls back), and unwinding from an arbitrary point
  (Python turns an exception in some places into another error, or ignores it) could
  print a traceback or lose the stop. In a pass (:func:`in_pass`, the command's lock
  held) the pass is told to stop: it starts no new work, finishes the writes in flight,
  records its run ``interrupted``, frees its lock and leases, prints its summary and
  exits 130 or 143.
* A **repeat** within :data:`REPEAT_WINDOW_S` of the previous one is the same stop: GNU
  ``timeout`` signals its child and then the child's process group, and a shell's
  ``kill -- -PGID`` does the same, so one stop often arrives twice.
* A **later** one means "stop now": a pass abandons its requests and transfers in flight,
  but still records its run ``interrupted`` and frees its lock (best effort).
* One **more** ends the process at once (the signal's default action): its run is then
  ``crashed``, and the next run finds it so.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Signals that stop a command.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A stop signal this soon after the previous one is the same stop.
REPEAT_WINDOW_S = 1.0


class StopRequested(SystemExit):
    """A stop asked for while a pass waits for its lock (:func:`check`): the command exits
    with 130 or 143, without a word (a SystemExit, so no ``except Exception`` swallows it
    and click does not turn it into ``Aborted!``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(exit_code(signum))
        self.signum = signum


def exit_code(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM: 128 + the signal number, as shells report it."""
    return 128 + int(signum)


class Arrival(enum.Enum):
    """What one stop signal means, given the ones before it."""

    FIRST = "first"
    REPEAT = "repeat"
    NOW = "now"
    KILL = "kill"


@dataclass
class StopState:
    """The stop signals of one process so far (pure: the clock is an argument)."""

    #: The first stop signal (it sets the exit code), None before any.
    signum: int | None = None
    last_at: float = 0.0
    #: Later signals so far (beyond the repeat window of the one before).
    escalations: int = 0

    def arrive(self, signum: int, now: float) -> Arrival:
        if self.signum is None:
            self.signum, self.last_at = signum, now
            return Arrival.FIRST
        repeat = now - self.last_at < REPEAT_WINDOW_S
        self.last_at = now
        if repeat:
            return Arrival.REPEAT
        self.escalations += 1
        return Arrival.NOW if self.escalations == 1 else Arrival.KILL


#: ``hook(signum, arrival)``: what a pass does with a FIRST or NOW arrival; it runs in the
#: signal handler (the main thread, between two bytecodes), so it only schedules work.
Hook = Callable[[int, Arrival], None]


class _Controller:
    def __init__(self) -> None:
        self.state = StopState()
        self.installed = 0
        self.passes = 0
        self.hook: Hook | None = None

    def handle(self, signum: int, _frame: Any) -> None:
        arrival = self.state.arrive(signum, time.monotonic())
        if arrival is Arrival.KILL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if arrival is Arrival.REPEAT:
            return
        if self.passes:
            # In a pass: it stops by itself, and its run must be recorded; never unwind it
            # from here (a transaction of the run's bookkeeping may be under way).
            if self.hook is not None:
                self.hook(signum, arrival)
            return
        assert self.state.signum is not None
        exit_now(self.state.signum)


def exit_now(signum: int) -> None:
    """End the process at once with 130 or 143, what was written so far flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(exit_code(signum))


_controller = _Controller()


@contextmanager
def handling() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as the module docstring says, until the block ends.
    Nested blocks share the outer one's handler; outside the main thread (where Python
    cannot handle signals) it does nothing."""
    outermost = not _controller.installed
    if outermost and threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    if outermost:
        _controller.state = StopState()
        for signum in STOP_SIGNALS:
            # A signal ignored from the start stays ignored (a shell's background job
            # ignores SIGINT, so Ctrl-C in its terminal is not meant for it).
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, _controller.handle)
    _controller.installed += 1
    try:
        yield
    finally:
        _controller.installed -= 1
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def in_pass() -> Iterator[None]:
    """A pass with its lock held: a stop signal is recorded and handed to the pass's hook
    (:func:`pass_hook`) instead of unwinding the command."""
    _controller.passes += 1
    try:
        yield
    finally:
        _controller.passes -= 1


@contextmanager
def pass_hook(hook: Hook) -> Iterator[None]:
    """Hand this pass's stop signals to ``hook`` while the block runs."""
    _controller.hook = hook
    try:
        yield
    finally:
        _controller.hook = None


def requested() -> int | None:
    """The signal of the stop asked for so far, if any."""
    return _controller.state.signum if _controller.installed else None


def check() -> None:
    """Raise StopRequested if a stop has been asked for (for loops that wait)."""
    signum = requested()
    if signum is not None:
        raise StopRequested(signum)
