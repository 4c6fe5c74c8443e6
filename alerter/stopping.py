"""Holding the stop signals (SIGTERM, SIGINT, SIGHUP) while a step must not be cut in two.

One gate for the whole process, whatever thread a step runs in: a renewal that has spent
droid's refresh token, taking droid's reclaim directory, one notification being delivered
and recorded. Only the main thread can install signal handlers, so the command line calls
:func:`install` once, first thing; from then on a stop signal that arrives while any
thread holds the gate is remembered, and acted on when the last holder lets go (from a
worker thread, by sending the signal again to the process, which the main thread then
handles). A step asked to begin after a stop signal came raises :class:`StopRequested`
instead of starting: nothing new is begun once the run has been asked to stop.

Without :func:`install` (a library call, a test), a hold in the main thread installs the
handlers for its own duration, as before; a hold in another thread is then unprotected.

SIGKILL can never be held: what such a block protects must also survive SIGKILL some
other way, or keep its window as short as it can be.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequested(BaseException):
    """A stop signal came before this step began: it is not begun.

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` takes it for
    a failure of the step and carries on.
    """


class _Gate:
    """The process's one record of who holds the stop signals and which one came."""

    def __init__(self) -> None:
        # Re-entrant: the handler runs in the main thread, which may be inside a hold's
        # bookkeeping when the signal comes.
        self.lock = threading.RLock()
        self.holders = 0
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}
        self.installed = False  # for the whole process (install())
        self.reasons: list[str] = []


_gate = _Gate()


def install() -> None:
    """Route the stop signals through the gate for the rest of the process (main thread only).

    Idempotent. Call it before any thread that may hold the gate starts.
    """
    if _gate.installed or threading.current_thread() is not threading.main_thread():
        return
    _take_signals()
    _gate.installed = True


def uninstall() -> None:
    """Give the stop signals back to their earlier handlers (tests; main thread only)."""
    if not _gate.installed or threading.current_thread() is not threading.main_thread():
        return
    _gate.installed = False
    _give_back_signals()


def leave_signals_to_the_main_thread() -> None:
    """Block the stop signals in the calling thread: call it first in every worker thread.

    The kernel hands a signal sent to the process to any thread that does not block it,
    and Python runs the handler only in the main thread, when that thread next runs: a
    main thread waiting in ``join()`` for a worker that took the signal would never see
    it. Blocked in the workers, the signal always reaches the main thread, whose wait it
    interrupts. (Threads a worker starts inherit its mask.)
    """
    if threading.current_thread() is not threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)


def stop_requested() -> bool:
    """Return True once a stop signal has come and is waiting for the holders to let go."""
    return bool(_gate.pending)


@contextlib.contextmanager
def stop_deferred(why: str) -> Iterator[None]:
    """Hold the stop signals until the block ends, then act on the first one that came.

    ``why`` says in the log what the run finished before stopping. Holds nest and overlap
    across threads: the signal is acted on when the last one ends. Raise StopRequested,
    without running the block, when a stop signal is already waiting.
    """
    own = False  # handlers installed for this block alone (no install() in this process)
    with _gate.lock:
        if _gate.pending:
            raise StopRequested(f"not starting {why}: the run was asked to stop")
        main = threading.current_thread() is threading.main_thread()
        if not _gate.installed and _gate.holders == 0 and main:
            _take_signals()
            own = True
        _gate.holders += 1
        _gate.reasons.append(why)
    try:
        yield
    finally:
        with _gate.lock:
            _gate.holders -= 1
            _gate.reasons.remove(why)
            last = _gate.holders == 0
            pending = _gate.pending[0] if _gate.pending and last else None
        if own:
            _give_back_signals()
        if pending is not None:
            log.info("finishing %s before stopping (signal %d)", why, pending)
            _act(pending)


def _on_signal(number: int, frame: FrameType | None) -> None:
    """The handler (main thread): remember the signal while held, else act on it now."""
    with _gate.lock:
        _gate.pending.append(number)
        held = _gate.holders > 0
        reasons = list(_gate.reasons)
    if held:
        # Said at once: a renewal WorkOS already received may take a while to see through.
        log.info("signal %d: stopping once %s is done", number, reasons[-1] if reasons else "a step")
        return
    _act(number)


def _act(number: int) -> None:
    """Stop as the signal would have stopped the process without the gate."""
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may touch the handlers: send the signal again for it.
        os.kill(os.getpid(), number)
        return
    if _gate.installed:
        _gate.installed = False
        _give_back_signals()
    _gate.pending.clear()
    signal.raise_signal(number)


def _take_signals() -> None:
    _gate.previous = {sig: signal.signal(sig, _on_signal) for sig in HELD}


def _give_back_signals() -> None:
    for sig, handler in _gate.previous.items():
        signal.signal(sig, handler)
    _gate.previous = {}
