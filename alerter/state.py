"""The small JSON file that remembers what was already said.

Written atomically (temp file in the same directory, fsync, rename, fsync of the
directory), mode 0600, its directory 0700. A file that cannot be read back (corrupt,
truncated, from a newer version) is kept aside as ``<name>.corrupt-<time>`` and the job
starts afresh: repeating this period's alerts is better than losing one.

Runs may overlap (a slow run and the next timer tick), so the whole
read-evaluate-notify-save step holds an exclusive ``fcntl`` lock on ``<name>.lock``.
How the file, its lock and its directory are opened and checked is in ``statefile``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import time
from pathlib import Path

from alerter.errors import StateBusy, StateError
from alerter.statefile import ensure_private_dir, locked, read_private, write_atomic

STATE_VERSION = 1
log = logging.getLogger(__name__)
# The command line takes locked from here and metrics write_atomic; callers catch the errors.
__all__ = ["StateBusy", "StateError", "fresh_state", "load_state", "locked", "save_state", "write_atomic"]


def fresh_state() -> dict:
    """Return an empty state."""
    return {"version": STATE_VERSION, "meters": {}}


def load_state(path: Path, keep_aside: bool = True) -> dict:
    """Given the state path, return its content; a missing file gives a fresh state.

    A file that is not a state this version understands is moved aside with a warning,
    and a file open to others is made 0600 (both left alone when ``keep_aside`` is False,
    as a dry run changes nothing). Raise StateError when the file or its directory is
    unsafe or odd (see ``statefile``).
    """
    raw = read_private(path, tighten=keep_aside)
    if raw is None:
        return fresh_state()
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
    """Given the state path and content, write it atomically with mode 0600.

    Raise StateError naming the file and the fix when it cannot be written.
    """
    ensure_private_dir(path.parent)
    data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode("utf-8")
    try:
        write_atomic(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free some space on the file system of {shlex.quote(str(path.parent))}"
        else:
            fix = f"make {shlex.quote(str(path.parent))} writable or set state_file to a writable path"
        raise StateError(f"{path}: cannot save the state ({exc.strerror}); {fix}") from None
    _remove_leftovers(path)


def _remove_leftovers(path: Path, older_than: float = 600.0) -> None:
    """Remove temp files that a killed run left behind (runs hold the lock, so none is live)."""
    cutoff = time.time() - older_than
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
