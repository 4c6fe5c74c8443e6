"""droid's write lock: held by a live process we wait; left by a dead one we reclaim."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest

from alerter.credentials import CredentialSettings, open_login
from alerter.credentials.lock import (
    LOCK_NAME,
    LockTimeout,
    acquire,
    clear_abandoned,
    prepare,
    release,
    write_lock,
)
from alerter.credentials.lock_names import is_lock_entry, scratch_name, scratch_pid
from alerter.credentials.store import decrypt_envelope

from .helpers import SOON, login_data, no_keyring, wait_for, write_keyfile_store

HOLDER = """
import sys
from pathlib import Path
from alerter.credentials.lock import acquire, release
lock = Path(sys.argv[1])
token = acquire(lock)
print("held", flush=True)
sys.stdin.readline()
release(lock, token)
"""


def dead_pid() -> int:
    """Return the pid of a process that has exited (and been reaped)."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(process.stdout)


def make_lock(home, owner: dict | None, age: float = 0.0):
    """Make droid's lock directory; owner None leaves an unreadable owner record."""
    lock = home / LOCK_NAME
    lock.mkdir(mode=0o700)
    # (An empty directory would not block anyone: rename() replaces an empty directory.)
    (lock / "owner.json").write_text(json.dumps(owner) if owner else "{half-writ")
    # Its age is told by the clock the job reads, not left to the file system's stamp (they
    # differ under CI's faked clocks, and a "fresh" lock must be fresh by the job's clock).
    made = time.time() - age
    os.utime(lock, (made, made))
    return lock


def test_lock_is_droids_directory_with_owner_record(home):
    with write_lock(home):
        lock = home / LOCK_NAME
        owner = json.loads((lock / "owner.json").read_text())
        assert owner["pid"] == os.getpid() and len(owner["token"]) == 36
        assert stat.S_IMODE(os.stat(lock / "owner.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o700
        assert not list(home.glob("*.pending"))
    assert list(home.iterdir()) == []


def test_job_asks_workos_outside_the_lock_and_waits_for_it_only_to_write(home, settings, workos):
    key = write_keyfile_store(home, login_data(SOON))
    before = (home / "auth.v2.file").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home / LOCK_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = {}

        def run_job():
            try:
                outcome["login"] = open_login(settings, env={}, key_lookup=no_keyring)
            except Exception as exc:  # reported by the assertions below
                outcome["error"] = exc

        job = threading.Thread(target=run_job)
        job.start()
        # WorkOS was asked while droid held its lock; the renewed pair is staged on disk and
        # the job waits for the lock only to put it into the store.
        wait_for(lambda: any(home.glob(".auth.v2.file.renewed-*")))
        assert job.is_alive() and len(workos.requests) == 1
        assert (home / "auth.v2.file").read_bytes() == before

        holder.stdin.write("\n")
        holder.stdin.flush()
        job.join(timeout=10)
        assert outcome.get("error") is None
        assert outcome["login"].bearer() == workos.issued[0]["access_token"]
        stored = json.loads(decrypt_envelope((home / "auth.v2.file").read_text(), key))
        assert stored["refresh_token"] == workos.issued[0]["refresh_token"]
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not list(home.glob("*auth.v2.write*"))


def test_stale_lock_of_a_dead_pid_is_reclaimed(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    make_lock(home, {"token": "0c5f2a3e-0000-4000-8000-000000000000", "pid": dead_pid()})
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == workos.issued[0]["access_token"]
    assert not list(home.glob("*auth.v2.write*"))


def test_lock_with_unreadable_owner_older_than_10_s_is_reclaimed(home):
    make_lock(home, None, age=30)
    with write_lock(home, deadline=time.monotonic() + 2):
        owner = json.loads((home / LOCK_NAME / "owner.json").read_text())
        assert owner["pid"] == os.getpid()


def test_fresh_lock_with_unreadable_owner_is_respected_until_the_deadline(home):
    lock = make_lock(home, None)
    with pytest.raises(LockTimeout):
        acquire(lock, deadline=time.monotonic() + 0.2)
    assert lock.is_dir()
    assert not list(home.glob("*.pending"))


def test_live_owner_lock_is_respected_even_when_old(home):
    lock = make_lock(home, {"token": "t", "pid": os.getppid()}, age=60)
    with pytest.raises(LockTimeout):
        acquire(lock, deadline=time.monotonic() + 0.2)
    assert (lock / "owner.json").exists()


def test_stale_reclaim_directory_of_a_dead_pid_is_cleared(home):
    reclaim = home / (LOCK_NAME + ".reclaim")
    reclaim.mkdir()
    (reclaim / "owner.json").write_text(json.dumps({"token": "t", "pid": dead_pid()}))
    token = acquire(home / LOCK_NAME, deadline=time.monotonic() + 2)
    assert not reclaim.exists()
    release(home / LOCK_NAME, token)


def test_release_leaves_a_lock_that_is_no_longer_ours(home):
    lock = home / LOCK_NAME
    token = acquire(lock)
    (lock / "owner.json").write_text(json.dumps({"token": "someone-else", "pid": os.getppid()}))
    release(lock, token)
    assert lock.is_dir()


def test_a_lock_held_past_the_deadline_keeps_the_renewal_staged_for_the_next_run(home, workos):
    key = write_keyfile_store(home, login_data(SOON))
    lock = make_lock(home, {"token": "t", "pid": os.getppid()})

    def settings():
        return CredentialSettings(
            home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.1
        )

    login = open_login(settings(), env={}, key_lookup=no_keyring)
    new = workos.issued[0]
    assert login.bearer() == new["access_token"]  # used in this run, not lost
    assert len(list(home.glob(".auth.v2.file.renewed-*"))) == 1

    shutil.rmtree(lock)  # droid let go of its lock
    again = open_login(settings(), env={}, key_lookup=no_keyring)
    assert again.bearer() == new["access_token"]
    stored = json.loads(decrypt_envelope((home / "auth.v2.file").read_text(), key))
    assert stored["refresh_token"] == new["refresh_token"]
    assert len(workos.requests) == 1
    assert not list(home.glob(".auth.v2.file.*")) and not list(home.glob("*auth.v2.write*"))


def test_a_pending_lock_directory_left_by_a_killed_run_is_removed_by_the_next(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    orphan = home / "auth.v2.write.0123456789abcdef0123456789abcdef.pending"
    orphan.mkdir()
    (orphan / "owner.json").write_text(json.dumps({"token": "t", "pid": dead_pid()}))
    alive = home / "auth.v2.write.fedcba9876543210fedcba9876543210.pending"
    alive.mkdir()
    (alive / "owner.json").write_text(json.dumps({"token": "u", "pid": os.getppid()}))
    open_login(settings, env={}, key_lookup=no_keyring)
    assert not orphan.exists()
    assert alive.exists()  # a live process's ticket is its own business


def test_a_reservation_of_this_pid_that_this_process_did_not_make_is_an_earlier_runs(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    mine = home / f".auth.v2.file.reserve-{os.getpid()}-0a0b0c0d-fp"  # a container's pid 1, say
    live = home / f".auth.v2.file.reserve-{os.getppid()}-0a0b0c0d-fp"
    odd = home / ".auth.v2.file.reserve-\u00b3-0a0b0c0d-fp"  # not a pid: left alone, no crash
    for path in (mine, live, odd):
        path.write_bytes(b"\0" * 64)
    open_login(settings, env={}, key_lookup=no_keyring)
    assert not mine.exists()
    assert live.exists() and odd.exists()


def test_a_reservation_this_process_holds_survives_another_accounts_recovery(home):
    # A run looking at a store while another part of the same process (a thread) holds a
    # reservation beside it must leave it alone, though its pid is its own. (The config
    # refuses two accounts of one droid home; this holds whatever the way there.)
    from alerter.credentials import writeback
    from alerter.credentials.store import find_stored_login

    write_keyfile_store(home, login_data(SOON))
    stored = find_stored_login(home, None)
    held = writeback.reserve(stored)
    try:
        writeback.recover(stored, None)
        assert held.path.exists()
    finally:
        held.release()
    assert not held.path.exists()


def test_lock_directories_of_writers_that_are_gone_are_cleared(home):
    gone = dead_pid()
    for name, pid in (("dead", gone), ("live", os.getpid())):
        pending = home / f"auth.v2.write.{name}.pending"
        pending.mkdir()
        (pending / "owner.json").write_text(json.dumps({"token": name, "pid": pid}))
    (home / "auth.v2.write.unowned.pending").mkdir()  # droid's, being created: no owner yet
    # This job's lock directories while they are filled or deleted: their name carries the
    # pid. One of a live process stays; one of this pid that this process did not make is
    # an earlier run's that had the same pid (a container's pid 1, say).
    hexes = "0123456789abcdef0123456789abcdef"
    for pid in (gone, os.getppid(), os.getpid()):
        (home / scratch_name(pid, hexes)).mkdir()
    (home / ".auth.v2.write.x.0123.scratch").mkdir()  # not a name this job makes: not touched
    make_lock(home, {"token": "t3", "pid": gone})

    clear_abandoned(home)
    assert sorted(p.name for p in home.iterdir()) == sorted(
        [
            ".auth.v2.write.x.0123.scratch",
            scratch_name(os.getppid(), hexes),
            "auth.v2.write.live.pending",
            "auth.v2.write.unowned.pending",
        ]
    )

    make_lock(home, {"token": "t4", "pid": os.getpid()})
    clear_abandoned(home)
    assert (home / LOCK_NAME).exists()  # a live holder's lock stays


def test_a_prepared_ticket_is_droids_pending_directory_with_its_owner_and_nothing_else(home):
    ticket = prepare(home)
    assert [p.name for p in home.iterdir()] == [ticket.pending.name]
    assert ticket.pending.name.startswith("auth.v2.write.") and ticket.pending.name.endswith(".pending")
    owner = json.loads((ticket.pending / "owner.json").read_text())
    assert owner == {"token": ticket.token, "pid": os.getpid()}


def test_the_name_a_pending_directory_is_filled_under_tells_its_pid_and_is_a_lock_entry():
    name = scratch_name(4242, "ab" * 16)
    assert scratch_pid(name) == 4242 and is_lock_entry(name)
    for other in (
        "auth.v2.write.lock",
        "auth.v2.write.4242.abab.scratch",  # droid's prefix, not ours
        ".auth.v2.write.0.abab.scratch",
        ".auth.v2.write.-1.abab.scratch",
        ".auth.v2.write.4242.scratch",
        ".auth.v2.write.4242.a.b.scratch",
        ".auth.v2.write.4242.abab.pending",
        ".auth.v2.file.4242.abab.scratch",
    ):
        assert scratch_pid(other) is None, other
    assert not is_lock_entry(".auth.v2.file.reserve-1") and not is_lock_entry("auth.v2.file")


def test_odd_entries_beside_the_store_neither_stop_a_run_nor_keep_the_others(home, tmp_path):
    gone = dead_pid()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the job's")
    odd = [
        ".auth.v2.write.\u00b2.abab.scratch",  # a digit int() cannot read
        ".auth.v2.write.99999999999.abab.scratch",  # 11 digits: no process id
        ".auth.v2.write.007.abab.scratch",  # not a pid as this job writes one
    ]
    for name in odd:
        (home / name).mkdir()
    huge = home / scratch_name(9_999_999_999, "abab")  # no system has such a pid: gone
    huge.mkdir()
    (home / scratch_name(gone, "link")).symlink_to(elsewhere, target_is_directory=True)
    for name, pid in (("huge", 2**40), ("dead", gone)):
        pending = home / f"auth.v2.write.{name}.pending"
        pending.mkdir()
        (pending / "owner.json").write_text(json.dumps({"token": name, "pid": pid}))
    make_lock(home, {"token": "t", "pid": gone})

    clear_abandoned(home)
    assert sorted(p.name for p in home.iterdir()) == sorted(odd)
    assert (elsewhere / "keep.txt").read_text() == "not the job's"  # a link goes, not its target


def test_an_entry_that_cannot_be_removed_leaves_the_others_to_be_cleared(home, monkeypatch):
    from alerter.credentials import lock

    gone = dead_pid()
    stuck = home / scratch_name(gone, "stuck")
    stuck.mkdir()
    pending = home / "auth.v2.write.dead.pending"
    pending.mkdir()
    (pending / "owner.json").write_text(json.dumps({"token": "d", "pid": gone}))
    make_lock(home, {"token": "t", "pid": gone})
    real_rename = os.rename

    def refuse(src, dst):
        if os.fspath(src) == os.fspath(stuck):
            raise PermissionError(13, "Permission denied")
        return real_rename(src, dst)

    real_scandir = os.scandir

    def stuck_first(path=".", *args):  # whatever order the file system lists them in
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) != os.fspath(home):
            return real_scandir(path, *args)
        return sorted(real_scandir(path), key=lambda entry: entry.name != stuck.name)

    monkeypatch.setattr(lock.os, "rename", refuse)
    monkeypatch.setattr(lock.os, "scandir", stuck_first)
    monkeypatch.setattr(lock.shutil, "rmtree", _refusing_rmtree(stuck, lock.shutil.rmtree))
    clear_abandoned(home)
    assert [p.name for p in home.iterdir()] == [stuck.name]


def _refusing_rmtree(stuck, rmtree):
    def remove(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(stuck):
            raise PermissionError(13, "Permission denied")
        return rmtree(path, *args, **kwargs)

    return remove
