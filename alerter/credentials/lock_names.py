"""The names droid's write lock (and this job's part in it) takes in droid's store directory.

Apart from :mod:`alerter.credentials.lock` so that a run that only looks for leftovers
need not import the lock's machinery (hashing, JSON, tree removal).
"""

from __future__ import annotations

LOCK_NAME = "auth.v2.write.lock"
LOCK_STEM = LOCK_NAME.removesuffix(".lock")  # every lock directory of droid's starts "auth.v2.write."
# A lock directory of this job's while it is filled or deleted: ".auth.v2.write.<pid>.<32 hex>.scratch"
SCRATCH_MARK = ".scratch"


def is_lock_entry(name: str) -> bool:
    """Given a file name in droid's store directory, say whether it belongs to the write lock."""
    return name.startswith((LOCK_STEM + ".", "." + LOCK_STEM + "."))


def scratch_name(pid: int, digest: str) -> str:
    """Return the name this job fills or deletes a lock directory under: it carries the pid."""
    return f".{LOCK_STEM}.{pid}.{digest}{SCRATCH_MARK}"


def scratch_pid(name: str) -> int | None:
    """Given a name made by :func:`scratch_name`, return its pid; None for any other name."""
    if not (name.startswith("." + LOCK_STEM + ".") and name.endswith(SCRATCH_MARK)):
        return None
    parts = name[len(LOCK_STEM) + 2 : -len(SCRATCH_MARK)].split(".")
    return parse_pid(parts[0]) if len(parts) == 2 else None


def parse_pid(text: str) -> int | None:
    """Given the digits of a process id in a file name, return it; None unless it is one
    (ASCII digits, no leading zero, at most 10 of them)."""
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit() and text[0] != "0"):
        return None
    return int(text)
