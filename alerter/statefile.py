"""The state file on disk: a private directory, regular files, a lock that names its holder.

The state decides what is sent, so the job uses only files that nobody else can swap:

- The state file's own directory must belong to the user running the job and must not be
  writable by group or others. Ownership is what counts for root, which permission bits do
  not stop. Only that directory is checked, not its ancestors: a unit's StateDirectory
  (``/var/lib/factory-usage-alert/<user>``, 0700, the service user's, as earlier
  releases' system unit had) lives in root's ``/var/lib``.
- The state file and ``<name>.lock`` are opened without following symlinks and without
  blocking (a FIFO would hang a read), and used only when they are regular files.
- What the job creates is private whatever the umask: directories 0700, files 0600; a
  state file or lock found readable by others is made 0600. A looser directory the job
  finds is refused, not changed: it may not be the job's to change.

Every problem is a StateError whose one line names the path and the fix.

The states earlier releases' units kept elsewhere are found here (``earlier_states``) and
merged into the state once (``alerter.state.carry_over``); until a run has done so, the
commands that change nothing read the newest of them (``state_to_read``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import pwd
import shlex
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from alerter import safefile
from alerter.errors import StateBusy, StateError

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05


def lock_path(path: Path) -> Path:
    """Given the state path, return the path of its lock file."""
    return path.with_name(path.name + ".lock")


def read_private(path: Path, *, tighten: bool) -> bytes | None:
    """Given the state path, return the file's bytes, or None when there is no state yet.

    With ``tighten`` a file readable by others is made 0600 (read-only commands change
    nothing). Raise StateError for an unsafe directory, a symlink or an odd file at the
    path, or a file that cannot be read.
    """
    if not _check_dir(path.parent, missing_ok=True):
        return None
    try:
        fd = _open_regular(path, os.O_RDONLY, "state file")
    except FileNotFoundError:
        return None
    try:
        if tighten:
            _tighten(fd, path, "state file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StateError(
            f"{path}: cannot read the state file ({exc.strerror}); check the disk, "
            "or move the file away to start afresh"
        ) from None
    finally:
        os.close(fd)


def ensure_private_dir(directory: Path) -> None:
    """Given the state directory, create it (and missing parents) 0700 whatever the umask,
    or check the one that is there. Raise StateError when it is unsafe or cannot be made.
    """
    try:
        safefile.make_private_dirs(directory)
    except OSError as exc:
        raise StateError(
            f"{exc.filename or directory}: cannot create the state directory ({exc.strerror}); "
            "create it (mode 0700) or set state_file to a writable path"
        ) from None
    _check_dir(directory, missing_ok=False)


def check_usable(path: Path) -> None:
    """Given the state path, raise StateError when a run could not lock, read and save it.

    Nothing is created or changed: this is what `check-config` and `run --dry-run` ask.
    """
    directory = path.parent
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing != directory:  # a run would create the directory in the first that exists
        if not existing.is_dir() or not _may(existing, os.W_OK | os.X_OK):
            raise StateError(
                f"{directory}: the state directory is missing and {_me()} cannot create it in "
                f"{existing}; create it (`mkdir -m 700 {shlex.quote(str(directory))}`) "
                "or set state_file to a writable path"
            )
        return
    _check_dir(directory, missing_ok=False)
    if not _may(directory, os.W_OK | os.X_OK):
        raise StateError(
            f"{directory}: the state directory is not writable by {_me()}; make it writable "
            f"(`chmod u+rwx {shlex.quote(str(directory))}`) or set state_file elsewhere"
        )
    for file, what, access in (
        (path, "state file", os.R_OK),
        (lock_path(path), "state lock", os.R_OK | os.W_OK),
    ):
        try:
            info = os.lstat(file)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            raise _odd_file(file, what, info.st_mode)
        if not _may(file, access):
            raise StateError(
                f"{file}: the {what} is not {'readable' if access == os.R_OK else 'writable'} "
                f"by {_me()}; {_give_back(file, info.st_uid)}"
            )


def earlier_states(path: Path, earlier: Sequence[Path]) -> list[tuple[Path, os.stat_result]]:
    """Given the state path and where earlier releases kept the state, return each earlier
    state file of this user's that is there, with its ``lstat``, the newest last.

    A file that is not a regular file, belongs to someone else or is the state file itself
    (two places that name one directory) is not taken.
    """
    try:
        own = os.stat(path)
    except OSError:
        own = None
    found = []
    for candidate in earlier:
        try:
            info = os.lstat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            continue
        if own is not None and (info.st_dev, info.st_ino) == (own.st_dev, own.st_ino):
            continue
        found.append((info.st_mtime, str(candidate), info))
    return [(Path(name), info) for _, name, info in sorted(found)]


def earlier_state(path: Path, earlier: Sequence[Path]) -> Path | None:
    """Given the state path and where earlier releases kept the state, return the newest
    earlier state file of this user's when there is none at the path yet, else None."""
    if os.path.lexists(path):
        return None
    found = earlier_states(path, earlier)
    return found[-1][0] if found else None


def state_to_read(path: Path, earlier: Sequence[Path]) -> Path:
    """Given the state path and the earlier places, return the file a command that changes
    nothing (`status`, `history`, a dry run) reads: the state, else the earlier one that a
    real run would carry over."""
    return earlier_state(path, earlier) or path


def earlier_tag(path: Path, info: os.stat_result, data: bytes) -> str:
    """Given an earlier state file, its ``lstat`` and its bytes, return the short digest that
    names this version of it (path, inode, content): a state remembers the tags it merged,
    so a file is merged once, and again only when it has changed since."""
    digest = hashlib.sha256(f"{path}\0{info.st_dev}\0{info.st_ino}\0".encode())
    digest.update(data)
    return digest.hexdigest()[:24]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Given a path and bytes, replace the file so that readers see old or new, never half
    (see :func:`alerter.safefile.write_atomic`). Raise OSError when it cannot be written."""
    safefile.write_atomic(path, data, mode)


@contextlib.contextmanager
def locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` for the block; wait at most ``timeout`` s.

    The holder writes its process id into the lock file, so a run that gives up can say
    who holds it. Raise StateBusy when the wait runs out, StateError when the directory or
    the lock file is unsafe or odd.
    """
    ensure_private_dir(path.parent)
    lock = lock_path(path)
    try:
        fd = _open_regular(lock, os.O_RDWR | os.O_CREAT, "state lock")
    except FileNotFoundError:  # the directory vanished between the check and the open
        raise StateError(f"{lock}: cannot create the state lock; check {path.parent}") from None
    held = False
    try:
        _tighten(fd, lock, "state lock")
        give_up = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    raise _busy(lock, fd, timeout) from None
                time.sleep(_POLL_SECONDS)  # polling a lock held by another process
        held = True
        _write_holder(fd)
        yield
    finally:
        if held:  # so that a pid left in the file never names a process that has finished
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the lock


# --- helpers ---------------------------------------------------------------------------------


def _check_dir(directory: Path, *, missing_ok: bool) -> bool:
    """Return whether the directory exists; raise StateError when it is not safe to use."""
    try:
        info = os.stat(directory)  # a link to the directory is fine: its target is checked
    except FileNotFoundError:
        if missing_ok:
            return False
        raise StateError(f"{directory}: the state directory is missing; create it (mode 0700)") from None
    except OSError as exc:
        raise StateError(f"{directory}: cannot use the state directory ({exc.strerror})") from None
    quoted = shlex.quote(str(directory))
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{directory}: is not a directory; set state_file to a path in a directory")
    if info.st_mode & stat.S_ISVTX and info.st_mode & 0o022:
        # A directory shared on purpose (/tmp, /var/tmp): anyone may create files in it, so
        # it can never hold the state, and it is not this job's to close (`chmod go-w /tmp`
        # or `chown` of it would break the system): a directory of its own in it can.
        own = directory / f"factory-usage-alert-{_me()}" / "state.json"
        raise StateError(
            f"{directory}: the state directory is shared with other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}, like /tmp); set state_file to a path in a "
            f"directory of its own (`state_file: {own}`: the job creates it, private)"
        )
    if info.st_uid != os.geteuid():
        if info.st_uid == 0:
            # A system directory (/srv, /var/lib): not the user's to take (`chown` of it
            # would hand the user what the system relies on); a directory in it can be.
            mine = shlex.quote(str(directory / "factory-usage-alert"))
            fix = (
                "set state_file to a path in a directory of yours (the default, "
                "~/.local/state/factory-usage-alert/state.json, is one), or have root make one "
                f"(`sudo install -d -m 700 -o {_me()} {mine}`)"
            )
        else:
            fix = _give_back(directory, info.st_uid)
        raise StateError(
            f"{directory}: the state directory belongs to {_user(info.st_uid)}, not to {_me()} who "
            f"runs the job; {fix}"
        )
    if info.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others", 0o022: "group and others"}[info.st_mode & 0o022]
        raise StateError(
            f"{directory}: the state directory is writable by {who} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); make it private (`chmod go-w {quoted}`)"
        )
    return True


def _open_regular(path: Path, flags: int, what: str) -> int:
    """Open a regular file without following a symlink or blocking; raise FileNotFoundError
    when there is none (and ``flags`` do not create one), StateError for anything else odd."""
    try:
        return safefile.open_regular(path, flags)
    except FileNotFoundError:
        raise
    except safefile.OddFile as exc:
        raise _odd_file(path, what, exc.mode) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            fix = f"make {shlex.quote(str(path.parent))} writable or set state_file to a writable path"
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free some space on the file system of {shlex.quote(str(path.parent))}"
        else:
            fix = f"check its owner and mode (`chown {_me()} {shlex.quote(str(path))}`)"
        raise StateError(f"{path}: cannot open the {what} ({exc.strerror}); {fix}") from None


def _odd_file(path: Path, what: str, mode: int) -> StateError:
    kind = safefile.kind_of(mode)
    return StateError(
        f"{path}: the {what} is {kind}; move it out of the way (the job creates a regular "
        "file there) or set state_file to another path"
    )


def _tighten(fd: int, path: Path, what: str) -> None:
    """Make the file 0600: no one else's, and ours to write even after a umask like 0277."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode == 0o600:
        return
    try:
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise StateError(
            f"{path}: the {what} is open to others (mode {mode:04o}) and cannot be made 0600 "
            f"({exc.strerror}); `chmod 600 {shlex.quote(str(path))}`"
        ) from None
    if mode & 0o077:
        log.warning("%s: the %s was open to others (mode %04o); made it 0600", path, what, mode)


def _write_holder(fd: int) -> None:
    """Note our pid in the lock file for a run that finds it busy; only a courtesy, so a
    full disk (the pid cannot be written) is no reason to stop."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:
        log.debug("cannot note this run's pid in the state lock (%s)", exc.strerror)


def _busy(lock: Path, fd: int, timeout: float) -> StateBusy:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        holder = int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError):
        holder = None
    if holder is None:
        who, fix = "another run", "look for a stuck factory-usage-alert process"
    else:
        who, fix = f"another run (process {holder})", f"if it is stuck, stop it (`kill {holder}`)"
    return StateBusy(
        f"{lock}: {who} has held the state lock for {timeout:g} s; this run did nothing; {fix}",
        holder=holder,
    )


def _may(path: Path, access: int) -> bool:
    # The effective ids are the ones that will open the file (for root only a read-only
    # file system says no).
    return os.access(path, access, effective_ids=os.access in os.supports_effective_ids)


def _give_back(path: Path, owner: int) -> str:
    """The fix for a path that is someone else's. Root running the job against a user's
    files must not take them (a `chown root` would break that user's own timers): it should
    run the job as that user. Anyone else may take back what is theirs to take."""
    if os.geteuid() == 0 and owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"#{owner}"
        return (
            f"run the job as that user (`sudo -u {shlex.quote(name)} factory-usage-alert ...`, or "
            "User= in the unit), not as root: giving root their files would break their own timers"
        )
    return f"run the job as its owner or give it to this user (`chown {_me()} {shlex.quote(str(path))}`)"


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _me() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
