"""Putting a renewed login into droid's store so that no kill, full disk or race loses it.

WorkOS spends the old refresh token the moment it receives a renewal request, so the pair
it answers with is the only live login there is. The steps, each durable before the next:

1. :func:`reserve`, before the token is spent: a private file beside the store, with room
   for the new store allocated, named after this process and the token about to be spent.
   A read-only or full directory stops the renewal here, while the old token still works.
2. :func:`stage`, as soon as WorkOS answered: the new store is written into the reserved
   room, fsynced, and renamed ``.<store>.renewed-<fingerprint of the spent token>``.
3. :func:`install`, under droid's write lock: if the store still holds the spent token,
   the staged file is renamed over it (through a symlink, onto its target); if droid wrote
   a newer pair meanwhile, droid's pair stays and the staged one is dropped.

A run killed between 2 and 3 leaves the staged file; the next run's :func:`recover`
installs it when the store still holds the spent token, and removes it otherwise. It does
the same with the reservation of a run killed during 2, once the new store is written into
it (only the rename was missing), and it clears the lock directories killed runs left.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alerter.credentials.identity import fingerprint
from alerter.credentials.lock_names import is_lock_entry, parse_pid
from alerter.credentials.store import FILE_MODE, StoredLogin, StoreFormatError, decode, describe, read_store

if TYPE_CHECKING:  # droid's lock module is imported only when a store is written
    from alerter.credentials.lock import Ticket

log = logging.getLogger(__name__)

STAGED_MARK = ".renewed-"
RESERVE_MARK = ".reserve-"
RESERVE_MIN_BYTES = 16 * 1024

# The reservations this process made (its threads share its pid): see _recover_reserved.
_reserved_here: set[str] = set()


class StoreNotWritable(OSError):
    """droid's store cannot be replaced (read-only, full, not ours): nothing was spent."""


@dataclass
class Reservation:
    """Room beside the store, held open until the renewed store is written into it."""

    target: Path
    path: Path
    fd: int
    size: int

    def release(self) -> None:
        """Close and remove the reservation if it was not used."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)


def target_of(path: Path) -> Path:
    """Given the store path, return the file to replace: a symlinked store's target."""
    return Path(os.path.realpath(path))


def reserve(stored: StoredLogin) -> Reservation:
    """Given the store a login came from, reserve room for its renewed version.

    Raise StoreNotWritable naming the directory and why (read-only, no space, ...).
    """
    target = target_of(stored.path)
    try:
        current = target.stat().st_size
    except OSError:
        current = 0
    size = max(RESERVE_MIN_BYTES, 4 * current)
    # The spent token's fingerprint in the name lets the next run finish a stage() killed
    # after the new store was written but before it was renamed (see recover()).
    spent = fingerprint(stored.refresh_token or "")
    path = target.with_name(f".{target.name}{RESERVE_MARK}{os.getpid()}-{secrets.token_hex(4)}-{spent}")
    _reserved_here.add(path.name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise StoreNotWritable(exc.errno, f"cannot write in {target.parent}: {describe(exc)}") from None
    reservation = Reservation(target, path, fd, size)
    try:
        _allocate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        reservation.release()
        raise StoreNotWritable(exc.errno, f"cannot write in {target.parent}: {describe(exc)}") from None
    return reservation


def stage(reservation: Reservation, text: str, spent_refresh_token: str) -> Path:
    """Write the renewed store into the reservation and make it durable; return its path.

    Raise OSError when even the reserved room cannot take it.
    """
    data = text.encode("utf-8")
    fd = reservation.fd
    os.lseek(fd, 0, os.SEEK_SET)
    _write_all(fd, data)
    os.ftruncate(fd, len(data))
    os.fsync(fd)
    os.close(fd)
    reservation.fd = -1
    staged = staged_path(reservation.target, spent_refresh_token)
    os.replace(reservation.path, staged)
    fsync_directory(staged.parent)
    return staged


def staged_path(target: Path, spent_refresh_token: str) -> Path:
    """Return where the renewal that spent this refresh token is staged."""
    return target.with_name(f".{target.name}{STAGED_MARK}{fingerprint(spent_refresh_token)}")


def install(
    stored: StoredLogin,
    staged: Path,
    spent_refresh_token: str,
    deadline: float | None,
    ticket: Ticket | None = None,
) -> StoredLogin:
    """Under droid's lock, put the staged store in place if the store still holds the spent token.

    Return what the store holds afterwards: the renewed login, or droid's newer one.
    Raise LockTimeout or OSError (the staged file then stays for the next run).
    """
    from alerter.credentials.lock import write_lock

    with write_lock(stored.path.parent, deadline, ticket):
        current = read_store(stored.path, stored.codec)
        if current.refresh_token != spent_refresh_token:
            log.info("droid renewed its login meanwhile; keeping droid's tokens in %s", stored.path)
            staged.unlink(missing_ok=True)
            return current
        target = target_of(stored.path)
        os.replace(staged, target)
        fsync_directory(target.parent)
        return read_store(stored.path, stored.codec)


def recover(stored: StoredLogin, deadline: float | None) -> StoredLogin:
    """Finish what an interrupted renewal left beside the store; return the login to use.

    A staged renewal whose spent token the store still holds is installed, and so is a
    renewal written into the reservation of a process that is gone; other staged files,
    reservations of processes that are gone, and lock directories they left are removed.
    """
    target = target_of(stored.path)
    prefix = f".{target.name}"
    try:
        names = [entry.name for entry in os.scandir(target.parent) if entry.name.startswith(prefix + ".")]
        locks = any(is_lock_entry(name) for name in os.listdir(stored.path.parent))
    except OSError:
        return stored
    if locks:  # droid's lock module is imported only when there is a lock directory to look at
        from alerter.credentials.lock import clear_abandoned

        clear_abandoned(stored.path.parent)
    for name in names:
        path = target.parent / name
        if name.startswith(prefix + RESERVE_MARK):
            stored = _recover_reserved(stored, path, name[len(prefix + RESERVE_MARK) :], deadline)
        elif name.startswith(prefix + STAGED_MARK):
            stored = _recover_staged(stored, path, name[len(prefix + STAGED_MARK) :], deadline)
    return stored


def _recover_staged(stored: StoredLogin, path: Path, spent_fp: str, deadline: float | None) -> StoredLogin:
    spent = stored.refresh_token
    if spent is None or fingerprint(spent) != spent_fp:
        log.debug("removing %s: the store has moved on", path.name)
        path.unlink(missing_ok=True)
        return stored
    try:
        renewed = decode(stored.codec, path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, StoreFormatError):
        log.warning("removing %s: it does not hold a usable login", path)
        path.unlink(missing_ok=True)
        return stored
    if renewed.get("refresh_token") in (None, spent):
        path.unlink(missing_ok=True)
        return stored
    from alerter.credentials.lock import LockTimeout

    try:
        installed = install(stored, path, spent, deadline)
    except (LockTimeout, OSError) as exc:
        log.warning("cannot yet install the renewed login an interrupted run saved (%s)", describe(exc))
        return stored
    log.info("installed the renewed login that an interrupted run had saved in %s", path.parent)
    return installed


def _recover_reserved(stored: StoredLogin, path: Path, suffix: str, deadline: float | None) -> StoredLogin:
    """A reservation whose process is gone: install the renewal it holds, else remove it."""
    pid_text, _, rest = suffix.partition("-")
    from alerter.credentials.lock import pid_alive

    pid = parse_pid(pid_text)
    # This process's pid on a reservation it did not make: an earlier run's with the same
    # pid (in a container the job may be pid 1 every time).
    gone = pid is not None and (path.name not in _reserved_here if pid == os.getpid() else not pid_alive(pid))
    if not gone:
        return stored
    spent_fp = rest.rpartition("-")[2]
    spent = stored.refresh_token
    if spent is not None and fingerprint(spent) == spent_fp and _holds_renewal(stored, path, spent):
        # Killed before stage() could sync it, maybe: make it durable before it becomes the store.
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return _recover_staged(stored, path, spent_fp, deadline)
    path.unlink(missing_ok=True)
    return stored


def _holds_renewal(stored: StoredLogin, path: Path, spent: str) -> bool:
    """True when the file holds a whole login with another refresh token than the spent one."""
    try:
        renewed = decode(stored.codec, path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, StoreFormatError):
        return False  # never written into, or cut short: nothing to save
    return renewed.get("refresh_token") not in (None, spent)


def _allocate(fd: int, size: int) -> None:
    """Make sure ``size`` bytes are allocated to the file (fallocate, else zeros)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    except AttributeError:  # not on this platform
        pass
    _write_all(fd, b"\0" * size)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer); raise OSError (ENOSPC, ...)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    """Make a rename durable; some filesystems refuse to open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
