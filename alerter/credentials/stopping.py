"""Holding the stop signals (SIGTERM, SIGINT, SIGHUP) while a step must not be cut in two.

Only the main thread can install signal handlers; elsewhere the block runs unprotected
(a worker thread of a run over several accounts). SIGKILL can never be held: what such a
block protects must also survive SIGKILL some other way, or keep its window as short as
it can be.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def stop_deferred(why: str) -> Iterator[None]:
    """Hold the stop signals until the block ends, then act on the first one that came.

    ``why`` says in the log what the run finished before stopping. Blocks nest: an inner
    one hands a signal it held on to the outer one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: caught.append(number)) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            log.info("finishing %s before stopping (signal %d)", why, caught[0])
            signal.raise_signal(caught[0])
