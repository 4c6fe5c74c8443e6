"""The small JSON file that remembers what was already said.

Written atomically (temp file in the same directory, fsync, rename, fsync of the
directory), mode 0600, its directory 0700. A file that cannot be read back (corrupt,
truncated, from a newer version) is kept aside as ``<name>.corrupt-<time>`` and the job
starts afresh: repeating this period's alerts is better than losing one.

Runs may overlap (a slow run and the next timer tick), so the whole
read-evaluate-notify-save step holds an exclusive ``fcntl`` lock on ``<name>.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from alerter.errors import AlerterError, ConfigError

STATE_VERSION = 1
log = logging.getLogger(__name__)


class StateBusy(AlerterError):
    """Another run held the state lock for the whole wait; this run did nothing."""


def fresh_state() -> dict:
    """Return an empty state."""
    return {"version": STATE_VERSION, "meters": {}}


def load_state(path: Path, keep_aside: bool = True) -> dict:
    """Given the state path, return its content; a missing file gives a fresh state.

    A file that is not a state this version understands is moved aside with a warning
    (left in place when ``keep_aside`` is False, as a dry run changes nothing).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return fresh_state()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the state file ({exc.strerror}); check its permissions"
        ) from None
    problem = _check(raw)
    if problem is None:
        return json.loads(raw)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    if not keep_aside:
        kept = "left it in place"
    else:
        try:
            os.replace(path, aside)
            kept = f"kept a copy as {aside.name}"
        except OSError:
            kept = "could not keep a copy"
    log.warning(
        "state file %s %s; %s and starting afresh (this period's alerts may repeat once)",
        path,
        problem,
        kept,
    )
    return fresh_state()


def _check(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "is not valid JSON (corrupt or truncated)"
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return "has no version"
    if data["version"] > STATE_VERSION:
        return f"is from a newer version ({data['version']})"
    if data["version"] < 1 or not isinstance(data.get("meters", {}), dict):
        return "has an unknown layout"
    return None


def save_state(path: Path, state: dict) -> None:
    """Given the state path and content, write it atomically with mode 0600."""
    ensure_private_dir(path.parent)
    data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode("utf-8")
    write_atomic(path, data)
    _remove_leftovers(path)


def _remove_leftovers(path: Path, older_than: float = 600.0) -> None:
    """Remove temp files that a killed run left behind (runs hold the lock, so none is live)."""
    cutoff = time.time() - older_than
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Given a path and bytes, replace the file so that readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_private_dir(directory: Path) -> None:
    """Create the directory (0700) when missing. Raise ConfigError when it cannot be."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot create the state directory ({exc.strerror}); "
            "set state_file to a writable path"
        ) from None


@contextlib.contextmanager
def locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` for the block; wait at most ``timeout`` s."""
    ensure_private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        give_up = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    raise StateBusy(
                        f"{lock_path}: another run has held the state lock for {timeout:.0f} s; "
                        "skipped this run (check for a stuck factory-usage-alert process)"
                    ) from None
                time.sleep(0.05)  # polling a lock held by another process
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
