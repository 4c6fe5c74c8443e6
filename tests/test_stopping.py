"""The stop gate: a stop signal waits for a held step in any thread, then stops the process.

Each scenario runs in its own Python process (signal handlers belong to a process), with
real signals; the steps wait on files, not on the clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path
    from alerter import stopping

    here = Path(sys.argv[1])
    mode = sys.argv[2]
    if mode != "not-installed":
        stopping.install()

    def held_step():
        stopping.leave_signals_to_the_main_thread()  # as the job's worker threads do
        with stopping.stop_deferred("a test step"):
            (here / "inside").touch()
            while not (here / "go").exists():
                time.sleep(0.01)
            # The signal reaches the main thread's handler when that thread next runs:
            # "waiting" begins there, so the refuse-new scenario waits for it.
            while mode == "refuse-new" and not stopping.stop_requested():
                time.sleep(0.01)
            (here / "finished").touch()

    def later_step():
        stopping.leave_signals_to_the_main_thread()
        while not (here / "finished").exists():
            time.sleep(0.01)
        try:
            with stopping.stop_deferred("a second step"):
                (here / "second-began").touch()
        except stopping.StopRequested:
            (here / "second-refused").touch()

    worker = threading.Thread(target=held_step)
    worker.start()
    if mode == "refuse-new":
        threading.Thread(target=later_step, daemon=True).start()
    worker.join()
    time.sleep(0.01)  # the re-sent signal reaches the main thread's handler here at the latest
    for _ in range(500):
        time.sleep(0.01)
    (here / "survived").touch()
    """
)


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path), mode])


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    while not path.exists():
        assert process.poll() is None, "the process ended before the step began"
        os.sched_yield()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_waits_for_a_step_held_in_a_worker_thread(tmp_path: Path, sig: int) -> None:
    process = _start(tmp_path, "installed")
    _wait_for(tmp_path / "inside", process)
    process.send_signal(sig)
    # The signal came while the worker held the gate: the process must still be there.
    assert process.poll() is None or (tmp_path / "finished").exists()
    (tmp_path / "go").touch()
    code = process.wait(timeout=60)
    assert (tmp_path / "finished").exists(), "the held step was cut in two"
    assert not (tmp_path / "survived").exists(), "the signal was lost: the process went on"
    # SIGINT: a KeyboardInterrupt in the main thread, which Python ends by SIGINT, as
    # without the gate.
    assert code == -sig


def test_without_the_gate_a_worker_thread_is_not_protected(tmp_path: Path) -> None:
    """The scenario can fail: without install(), the same signal cuts the step in two."""
    process = _start(tmp_path, "not-installed")
    _wait_for(tmp_path / "inside", process)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    assert code == -signal.SIGTERM
    assert not (tmp_path / "finished").exists()


def test_no_step_begins_once_a_stop_signal_is_waiting(tmp_path: Path) -> None:
    process = _start(tmp_path, "refuse-new")
    _wait_for(tmp_path / "inside", process)
    process.send_signal(signal.SIGTERM)
    (tmp_path / "go").touch()
    assert process.wait(timeout=60) == -signal.SIGTERM
    assert (tmp_path / "finished").exists()
    assert not (tmp_path / "second-began").exists()


def _stop_signals_blocked() -> bool:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return all(sig in blocked for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))


def test_the_jobs_worker_threads_leave_the_stop_signals_to_the_main_thread():
    """A worker that took a stop signal would leave the main thread waiting in join(),
    never running the handler: every worker thread the job starts blocks them."""
    from alerter import http
    from alerter.accounts import each_account
    from alerter.config import Account, Config

    assert not _stop_signals_blocked()  # the main thread takes them
    assert http.call_within(time.monotonic() + 60, "a test", _stop_signals_blocked)
    accounts = tuple(Account(name, None, None, Config()) for name in ("home", "work"))
    assert each_account(accounts, lambda account: _stop_signals_blocked()) == [True, True]
