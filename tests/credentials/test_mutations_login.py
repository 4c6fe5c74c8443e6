"""Renewing droid's login: the cases a small slip in the lock or the renewal would get wrong.

Each test here fails under one specific wrong version of the code that the rest of the
suite let through (issue 11): no re-check while holding droid's reclaim directory, every
reclaim directory counted as stale, WorkOS's Retry-After ignored, a redirect followed with
the refresh token, and WorkOS asked while the job holds droid's write lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alerter.credentials import CredentialSettings, lock, open_login
from alerter.credentials.lock import LOCK_NAME, LockTimeout, acquire, read_owner, write_lock
from alerter.errors import UpstreamError
from tests.standins import Reply, StandIn

from .helpers import HOUR, SOON, login_data, no_keyring, write_keyfile_store
from .test_lock import dead_pid, make_lock

# A process that takes droid's lock (our module does it droid's way) and holds it until told.
LOCK_HOLDER = """
import sys
from pathlib import Path
from alerter.credentials.lock import acquire, release
lock = Path(sys.argv[1])
token = acquire(lock)
print(token, flush=True)
sys.stdin.readline()
release(lock, token)
"""

# A process that takes the reclaim directory as droid does (mkdir, then its owner record)
# and holds it until told.
RECLAIM_HOLDER = """
import json, os, sys
from pathlib import Path
reclaim = Path(sys.argv[1])
reclaim.mkdir(mode=0o700)
owner = {"token": "5d1c7f3a-0000-4000-8000-00000000d401", "pid": os.getpid()}
(reclaim / "owner.json").write_text(json.dumps(owner))
print("held", flush=True)
sys.stdin.readline()
"""


def start_holder(script: str, path: Path) -> tuple[subprocess.Popen, str]:
    """Start a holder process on ``path``; return it and the first line it printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline().strip()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.write("\n")
        process.stdin.flush()
    try:
        process.wait(timeout=10)
    finally:
        process.kill()
        process.wait()


# --- droid's reclaim directory -----------------------------------------------------------------


def test_a_stale_lock_that_changed_hands_before_the_reclaim_is_left_to_its_new_owner(home, monkeypatch):
    # The job finds a lock left by a dead process. Before it takes the reclaim directory,
    # droid reclaims that lock itself and takes it for its own save. Holding the reclaim
    # directory, the job must see that the lock is no longer the stale one it judged.
    lock_path = make_lock(home, {"token": "0c5f2a3e-0000-4000-8000-000000000000", "pid": dead_pid()})
    holders: list[subprocess.Popen] = []
    real_take_reclaim = lock._take_reclaim

    def droid_moves_first(reclaim_path: Path) -> str | None:
        if not holders:
            shutil.rmtree(lock_path)  # droid's reclaim of the stale lock...
            process, token = start_holder(LOCK_HOLDER, lock_path)  # ...and droid taking it
            holders.append(process)
            assert read_owner(lock_path) == {"token": token, "pid": process.pid}
        return real_take_reclaim(reclaim_path)

    monkeypatch.setattr(lock, "_take_reclaim", droid_moves_first)
    try:
        with pytest.raises(LockTimeout, match=r"held by process \d+"):
            acquire(lock_path, deadline=time.monotonic() + 0.3)
        assert holders, "the job never came to reclaim the stale lock"
        owner = read_owner(lock_path)
        assert owner is not None and owner["pid"] == holders[0].pid  # droid's lock is still droid's
        assert not (home / (LOCK_NAME + ".reclaim")).exists()  # and the reclaim directory is let go
    finally:
        for process in holders:
            stop(process)
    assert not lock_path.exists()  # droid released its own lock normally


def test_a_fresh_reclaim_directory_of_a_live_process_is_respected(home):
    # Someone alive is reclaiming the stale lock right now: the job waits for it rather than
    # clearing its reclaim directory and the lock under it.
    lock_path = make_lock(home, {"token": "0c5f2a3e-0000-4000-8000-000000000000", "pid": dead_pid()})
    reclaim = home / (LOCK_NAME + ".reclaim")
    process, said = start_holder(RECLAIM_HOLDER, reclaim)
    try:
        assert said == "held"
        # Fresh by this test's clock too (the kernel stamps files with the real time, which a
        # faked clock in CI does not share).
        os.utime(reclaim, (time.time(), time.time()))
        with pytest.raises(LockTimeout):
            acquire(lock_path, deadline=time.monotonic() + 0.3)
        assert read_owner(reclaim) == {"token": "5d1c7f3a-0000-4000-8000-00000000d401", "pid": process.pid}
        assert lock_path.is_dir()  # left to the one reclaiming it
        assert not list(home.glob("*.pending"))
    finally:
        stop(process)


# --- WorkOS's answers ----------------------------------------------------------------------------


def test_a_429_with_retry_after_is_retried_no_sooner_than_asked(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    workos.script = [(429, {"error": "slow_down"}, {"Retry-After": "3"})]
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == workos.issued[0]["access_token"]
    first, second = workos.arrived
    assert second - first >= 3.0  # a lower bound on the stand-in's own clock


def test_a_retry_after_beyond_the_deadline_ends_the_run_without_asking_again(home, workos):
    write_keyfile_store(home, login_data(-HOUR))
    before = (home / "auth.v2.file").read_bytes()
    workos.script = [(429, {"error": "slow_down"}, {"Retry-After": "120"})]
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 5, renew_reserve_seconds=0.5
    )
    with pytest.raises(UpstreamError, match="cannot renew the Factory login: WorkOS answered HTTP 429"):
        open_login(settings, env={}, key_lookup=no_keyring)
    assert len(workos.requests) == 1
    assert (home / "auth.v2.file").read_bytes() == before


def test_a_redirect_from_workos_never_carries_the_refresh_token_elsewhere(home, workos):
    elsewhere = StandIn().start()
    try:
        pair = {"access_token": "stolen-access", "refresh_token": "stolen-refresh"}
        elsewhere.route("POST", "/authenticate", Reply(200, pair))
        data = login_data(-HOUR)
        write_keyfile_store(home, data)
        location = {"Location": elsewhere.url + "/authenticate"}
        workos.script = [(307, {}, location), (308, {}, location)] * 10
        settings = CredentialSettings(
            home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.1
        )
        with pytest.raises(UpstreamError, match="WorkOS answered HTTP 30[78]"):
            open_login(settings, env={}, key_lookup=no_keyring)
        assert workos.requests and workos.requests[0]["refresh_token"] == data["refresh_token"]
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()


# --- droid's lock is never held across a network wait -------------------------------------------


def test_workos_is_never_asked_while_the_job_holds_droids_lock(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    seen: list[dict | None] = []

    def look_at_the_lock() -> None:
        seen.append(read_owner(home / LOCK_NAME))

    workos.script = [look_at_the_lock]
    open_login(settings, env={}, key_lookup=no_keyring)
    assert len(workos.requests) == 1
    assert seen == [None] and not (home / LOCK_NAME).exists()


def test_while_workos_is_slow_droid_can_take_its_lock_and_save(home, settings, workos):
    # droid waits only 12 s for its lock: a slow WorkOS must never be waited for under it.
    write_keyfile_store(home, login_data(SOON))
    observed: list[str] = []

    def slow_answer() -> None:
        for _ in range(3):
            if (home / LOCK_NAME).exists():
                observed.append(f"lock held by {read_owner(home / LOCK_NAME)}")
            try:
                with write_lock(home, deadline=time.monotonic() + 0.3):  # droid saving meanwhile
                    observed.append("droid saved")
            except LockTimeout:
                observed.append("droid could not take its lock")
            time.sleep(0.2)

    workos.script = [slow_answer]
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert observed == ["droid saved"] * 3
    assert login.bearer() == workos.issued[0]["access_token"]
    assert not list(home.glob("*auth.v2.write*"))
