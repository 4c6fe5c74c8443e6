"""Make ``time.sleep`` work under libfaketime 0.9.10 with a real monotonic clock.

Loaded (through PYTHONPATH) only by the faked-clock runs in ``.ci/run``. There the wall
clock is faked and the monotonic clock is left real (FAKETIME_DONT_FAKE_MONOTONIC=1),
because with a faked monotonic clock Python's timed lock waits (sem_clockwait) never
return. But ``time.sleep`` (Python 3.11 and later) sleeps until an absolute monotonic time
(clock_nanosleep with TIMER_ABSTIME), which libfaketime 0.9.10 shifts by the fake offset
even when told not to fake that clock, and the kernel refuses it with EINVAL
(wolfcw/libfaketime#426). So sleep here on ``select`` with a relative timeout instead:
same meaning, no absolute time handed to the library. The code under test is unchanged.
"""

import os
import select
import time

if "faketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep
