"""droid's write lock on its credential store (``auth.v2.write.lock``), taken droid's way.

droid 0.225.2 serialises every write to the store with a lock directory:

1. create a private ``auth.v2.write.<32 hex>.pending`` directory holding ``owner.json``
   ``{"token": <uuid>, "pid": <pid>}`` (mode 0600); this job fills it under a name of its
   own that carries its pid (``.auth.v2.write.<pid>.<32 hex>.scratch``) and renames it
   into place, and renames a lock directory to such a name before deleting it: whatever
   moment a kill comes at, no pending or lock directory is left without its owner record,
   which no one could tell from one being created, and what is left names a process;
2. ``rename()`` it to ``auth.v2.write.lock``; the rename fails (EEXIST/ENOTEMPTY) while
   someone holds the lock: poll every 15 ms, for up to 12 s;
3. a lock is stale when its owner pid is dead, or, with no readable owner, when it is over
   10 s old; a stale lock is removed only by whoever holds the sibling
   ``auth.v2.write.lock.reclaim`` directory (taken by mkdir, then its owner record: it
   cannot be filled elsewhere, as rename() would replace another's reclaim directory still
   empty; a stop signal waits until the record is written, and only SIGKILL between the
   two leaves one without, stale after 10 s for droid and the job alike);
4. release: remove the lock only if ``owner.json`` still holds our token.

Doing exactly what droid does is the point: a droid running at the same moment must see
our lock as its own kind, and we must never delete a lock droid legitimately holds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alerter.credentials.lock_names import (
    LOCK_NAME,
    LOCK_STEM,
    SCRATCH_MARK,
    is_lock_entry,
    scratch_name,
    scratch_pid,
)
from alerter.stopping import stop_deferred

log = logging.getLogger(__name__)

RECLAIM_SUFFIX = ".reclaim"
OWNER_FILE = "owner.json"
STALE_SECONDS = 10.0
WAIT_SECONDS = 12.0
POLL_SECONDS = 0.015

# The scratch names this process made (its threads share its pid): see clear_abandoned.
_made_here: set[str] = set()

# rename()/mkdir() onto a lock that exists fails with one of these, depending on the OS.
_HELD = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


class LockTimeout(Exception):
    """droid's write lock stayed held (and not stale) until we had to give up."""


@dataclass(frozen=True)
class Ticket:
    """A lock prepared but not yet taken: our private pending directory and its token.

    Preparing writes to disk (a directory and ``owner.json``); taking is only a rename.
    Preparing before a refresh token is spent means a disk that fills up meanwhile can no
    longer keep the renewed login from being installed under the lock.
    """

    lock_path: Path
    pending: Path
    token: str


def prepare(home: Path) -> Ticket:
    """Given droid's store directory, create our pending lock directory. Raise OSError."""
    lock_path = home / LOCK_NAME
    token = _owner_token()
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    pending = home / f"{LOCK_STEM}.{digest}.pending"
    # Filled under a name that says whose it is, then renamed: droid's pending name never
    # exists without its owner record, whatever moment a kill comes at.
    scratch = home / scratch_name(os.getpid(), digest)
    _made_here.add(scratch.name)
    _make_owned_dir(scratch, token)
    try:
        os.rename(scratch, pending)
    except BaseException:
        _remove_tree(scratch)
        raise
    return Ticket(lock_path, pending, token)


def discard(ticket: Ticket) -> None:
    """Remove a prepared ticket's pending directory (after it was not taken)."""
    _dispose(ticket.pending)


@contextmanager
def write_lock(home: Path, deadline: float | None = None, ticket: Ticket | None = None) -> Iterator[None]:
    """Given droid's store directory, hold its write lock for the ``with`` block.

    Wait at most 12 s, and never past ``deadline`` (a :func:`time.monotonic` value). With
    a ``ticket`` from :func:`prepare`, taking the lock writes nothing new to disk.
    Raise LockTimeout when the lock stays held, OSError when it cannot be created.
    """
    ticket = ticket or prepare(home)
    take(ticket, deadline)
    try:
        yield
    finally:
        release(ticket.lock_path, ticket.token)


def acquire(lock_path: Path, deadline: float | None = None) -> str:
    """Given the lock path, take the lock and return our owner token. Raise LockTimeout."""
    ticket = prepare(lock_path.parent)
    take(ticket, deadline)
    return ticket.token


def take(ticket: Ticket, deadline: float | None = None) -> None:
    """Rename the ticket's pending directory into place; wait while someone holds the lock.

    The pending directory is removed whatever happens. Raise LockTimeout.
    """
    lock_path, pending = ticket.lock_path, ticket.pending
    give_up = time.monotonic() + WAIT_SECONDS
    if deadline is not None:
        give_up = min(give_up, deadline)
    reclaim_path = _reclaim_path(lock_path)
    try:
        while True:
            if reclaim_path.exists():
                # Someone is reclaiming a stale lock; if that someone died, clear it.
                reclaim_token = _take_reclaim(reclaim_path)
                if reclaim_token:
                    _release_owned(reclaim_path, reclaim_token)
                    continue
            else:
                try:
                    os.rename(pending, lock_path)
                    return
                except OSError as exc:
                    if exc.errno not in _HELD:
                        raise
                if _remove_if_stale(lock_path):
                    continue
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(f"{lock_path} is held by {describe_holder(lock_path)}")
            time.sleep(min(POLL_SECONDS, remaining))
    except BaseException:
        _dispose(pending)
        raise


def _owner_token() -> str:
    """Return a random version-4 UUID string, as droid writes in ``owner.json``.

    Built from os.urandom rather than with the uuid module, whose import costs more than
    the rest of a quiet run's lock handling.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def clear_abandoned(home: Path) -> None:
    """Given droid's store directory, remove the lock directories of writers that are gone.

    A writer killed before taking the lock leaves its pending directory (no one will ever
    rename it), or, killed while this job was filling or deleting one, the directory under
    the name that carries its pid; one killed while holding the lock leaves a stale lock, removed
    the way droid removes it. Directories of live processes, or without a readable owner
    (droid's, being created), stay.
    """
    try:
        names = [entry.name for entry in os.scandir(home) if is_lock_entry(entry.name)]
    except OSError as exc:
        log.debug("cannot look for abandoned lock directories in %s (%s)", home, exc.strerror)
        return
    for name in names:
        try:
            if name.endswith(SCRATCH_MARK):
                if _abandoned_scratch(name):
                    _dispose(home / name)
            elif name.endswith(".pending"):
                owner = read_owner(home / name)
                if owner is not None and not pid_alive(owner["pid"]):
                    _dispose(home / name)
            elif name == LOCK_NAME:
                _remove_if_stale(home / LOCK_NAME)
        except OSError as exc:  # tidying only: what cannot be removed now stays, the rest goes
            log.debug("cannot remove %s in %s (%s)", name, home, exc.strerror or exc)


def writer_at_work(home: Path) -> bool:
    """Given droid's store directory, say whether another process may be writing the store.

    True when a lock, pending or reclaim directory there belongs to a live process other
    than this one, or has no owner record yet and is younger than droid's 10 s: droid
    (or another run) is taking, holding or tidying its write lock. This process's own
    directories (its prepared ticket) and what dead writers left do not count.
    """
    try:
        names = [entry.name for entry in os.scandir(home) if is_lock_entry(entry.name)]
    except OSError:
        return False
    for name in names:
        pid = scratch_pid(name)
        if pid is not None:
            if pid != os.getpid() and not _abandoned_scratch(name):
                return True
            continue
        owner = read_owner(home / name)
        if owner is None:
            age = _age(home / name)
            if age is not None and age < STALE_SECONDS:
                return True
        elif owner["pid"] != os.getpid() and pid_alive(owner["pid"]):
            return True
    return False


def _abandoned_scratch(name: str) -> bool:
    """Given a scratch directory's name, say whether the process that made it is gone.

    Its pid is dead, or it is this process's pid but this process did not make it (a run
    before this one had the same pid: in a container, the job may be pid 1 every time).
    """
    pid = scratch_pid(name)
    if pid is None:
        return False  # not a name this job makes
    if pid == os.getpid():
        return name not in _made_here
    return not pid_alive(pid)


def describe_holder(lock_path: Path) -> str:
    """Return who holds the lock, as far as its owner record says (``process 1234``)."""
    owner = read_owner(lock_path)
    return f"process {owner['pid']}" if owner else "another process"


def release(lock_path: Path, token: str) -> None:
    """Given the lock path and our token, remove the lock if it is still ours."""
    _release_owned(lock_path, token)


def read_owner(path: Path) -> dict | None:
    """Given a lock (or reclaim) path, return its owner ``{"token", "pid"}``, or None.

    None when there is no owner file or it is unreadable: a lock being created or torn down.
    """
    try:
        text = (path / OWNER_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        # droid also accepts a lock that is a plain file holding the owner record.
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    except (OSError, UnicodeDecodeError):
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    if not isinstance(owner, dict):
        return None
    token, pid = owner.get("token"), owner.get("pid")
    if not isinstance(token, str) or type(pid) is not int or pid <= 0:
        return None
    return {"token": token, "pid": pid}


def pid_alive(pid: int) -> bool:
    """Given a pid, return False only when it certainly does not exist."""
    if pid > 0xFFFFFFFF:
        return False  # larger than any process id of any system
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such pid, or none could be that large
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, it is just not ours
    return True


def _windows_pid_alive(pid: int) -> bool:
    """On Windows ``os.kill(pid, 0)`` would send CTRL_C_EVENT, so ask OpenProcess instead."""
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if handle:
        kernel32.CloseHandle(handle)
        return True
    return kernel32.GetLastError() != 87  # ERROR_INVALID_PARAMETER: no such process


def _age(path: Path) -> float | None:
    """Return how many seconds ago the path was modified, or None when it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _lock_is_stale(age: float | None, owner: dict | None) -> bool:
    """droid's rule for the lock: owner dead, or no owner and older than 10 s."""
    if owner is not None:
        return not pid_alive(owner["pid"])
    return age is not None and age >= STALE_SECONDS


def _reclaim_is_stale(age: float | None, owner: dict | None) -> bool:
    """droid's rule for the reclaim directory: older than 10 s, or owner dead."""
    return (age is not None and age >= STALE_SECONDS) or (owner is not None and not pid_alive(owner["pid"]))


def _remove_if_stale(lock_path: Path) -> bool:
    """Remove a stale lock while holding the reclaim directory; return True to retry now."""
    age = _age(lock_path)
    if age is None:
        return True  # released between our rename and now
    owner = read_owner(lock_path)
    if not _lock_is_stale(age, owner):
        return False
    reclaim_path = _reclaim_path(lock_path)
    reclaim_token = _take_reclaim(reclaim_path)
    if not reclaim_token:
        return False
    try:
        # Re-check under the reclaim directory: the lock may have changed hands meanwhile.
        if read_owner(lock_path) != owner:
            return read_owner(lock_path) is None and not lock_path.exists()
        log.info("removing droid's stale write lock %s", lock_path)
        _dispose(lock_path)
        return True
    finally:
        _release_owned(reclaim_path, reclaim_token)


def _take_reclaim(reclaim_path: Path) -> str | None:
    """Take the reclaim directory (clearing a stale one); return our token, or None."""
    while True:
        token = _owner_token()
        try:
            # droid's way is mkdir, then the owner record; a stop signal between the two
            # would leave a reclaim directory that keeps droid waiting 10 s. It waits.
            with stop_deferred("taking droid's reclaim directory"):
                _make_owned_dir(reclaim_path, token)
            return token
        except OSError as exc:
            if exc.errno not in _HELD:
                raise
        owner = read_owner(reclaim_path)
        if not _reclaim_is_stale(_age(reclaim_path), owner):
            return None
        # Look twice, like droid: remove it only if it is still the same stale one.
        owner_again = read_owner(reclaim_path)
        if owner_again != owner or not _reclaim_is_stale(_age(reclaim_path), owner_again):
            return None
        _dispose(reclaim_path)


def _make_owned_dir(path: Path, token: str) -> None:
    """Create a private directory holding our owner record. Raise OSError if it exists."""
    os.mkdir(path, 0o700)
    try:
        fd = os.open(path / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as owner_file:
            json.dump({"token": token, "pid": os.getpid()}, owner_file)
    except BaseException:
        _remove_tree(path)
        raise


def _release_owned(path: Path, token: str) -> None:
    """Remove the directory only if its owner record still holds our token."""
    owner = read_owner(path)
    if owner is None or owner["token"] != token:
        log.debug("%s is no longer ours; leaving it", path)
        return
    _dispose(path)


def _dispose(path: Path) -> None:
    """Remove a lock directory at once: rename it to a name carrying our pid, then delete it.

    Deleting a directory takes several steps; a kill between them would leave it without
    its owner record, which nobody could tell from one being created. Renamed first, what
    a kill leaves names a process that is gone, and the next run removes it.
    """
    gone = path.with_name(scratch_name(os.getpid(), os.urandom(16).hex()))
    _made_here.add(gone.name)
    try:
        os.rename(path, gone)
    except FileNotFoundError:
        return
    except OSError:
        _remove_tree(path)  # cannot rename here: delete it in place, as droid does
        return
    _remove_tree(gone)


def _remove_tree(path: Path) -> None:
    """Remove a lock directory (or file, or a symbolic link, not what it points to); it
    being gone already is fine."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
        return
    try:
        shutil.rmtree(path)
    except NotADirectoryError:
        path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


def _reclaim_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + RECLAIM_SUFFIX)
