"""One opener for every file the job trusts outside droid's store.

The state file, its lock, the parsed-config cache, the "said once" markers and the
Prometheus textfile decide what is sent, where a token goes, or what a monitor reads, so
the job opens them all here, and only here, under the same rules:

- what it creates is private whatever the umask: each directory level 0700, files 0600
  (unless a caller asks for another mode, as the textfile for node_exporter does);
- regular files only: a FIFO, a device, a socket or a directory at the path is refused,
  and opening never blocks (``O_NONBLOCK``, cleared once the file is known to be regular),
  so a FIFO cannot hang a run past its deadline;
- no symlink is followed at the last component (``O_NOFOLLOW``), nor at a directory level
  the job creates (checked by opening it ``O_DIRECTORY | O_NOFOLLOW``);
- a private directory (:func:`private_dir`) is opened once and used through its
  descriptor, so that nobody can swap it between the check and the use.

Errors are OSError: FileNotFoundError when there is nothing at the path, :class:`OddFile`
when something other than a regular file (or directory) is there, :class:`NotPrivate`
when a directory is someone else's or open to others. Callers turn them into their own
messages (``statefile``) or treat them as "not there" (the cache).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

# O_NONBLOCK: opening a FIFO for reading would wait for a writer; O_NOCTTY: a terminal
# device at the path must not become the job's controlling terminal.
OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISLNK, "a symbolic link (not followed, on purpose)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind_of(mode: int) -> str:
    """Given an ``st_mode``, return what the file is, in words ("a FIFO")."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class OddFile(OSError):
    """The path holds something other than what the job uses there."""

    def __init__(self, path: Path | str, mode: int) -> None:
        super().__init__(errno.EINVAL, kind_of(mode), str(path))
        self.mode = mode
        self.kind = kind_of(mode)


class NotPrivate(OSError):
    """A directory belongs to someone else or is open to others."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(errno.EPERM, why, str(path))


def _odd(path: Path | str, dir_fd: int | None = None) -> OddFile | None:
    """Return OddFile when something other than a regular file is at the path, else None."""
    try:
        mode = os.lstat(path, dir_fd=dir_fd).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else OddFile(path, mode)


def open_regular(
    path: Path | str, flags: int, mode: int = 0o600, *, dir_fd: int | None = None, follow: bool = False
) -> int:
    """Given a path (relative to ``dir_fd`` when given), open it as a regular file without
    following a symlink (unless ``follow``: the user's own config may be one) or blocking,
    and return the descriptor (blocking again).

    A file it creates with ``O_EXCL`` has ``mode`` whatever the umask. Raise FileNotFoundError when there
    is none (and ``flags`` create none), OddFile for anything but a regular file, OSError
    otherwise.
    """
    try:
        how = OPEN_FLAGS & ~os.O_NOFOLLOW if follow else OPEN_FLAGS
        fd = os.open(path, flags | how, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP (a symlink), ENXIO (a FIFO without reader), EISDIR, ...
        odd = None if follow else _odd(path, dir_fd)
        if odd is not None:
            raise odd from None
        raise exc from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OddFile(path, info.st_mode)
        if flags & os.O_EXCL and stat.S_IMODE(info.st_mode) != mode:
            # Created just now: the umask may have taken bits (0277). A file found there is
            # the caller's to judge (the state lock is tightened with a warning).
            os.fchmod(fd, mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, *, follow: bool = False) -> bytes:
    """Given a path, return the bytes of the regular file there, without blocking on a FIFO.
    Raise FileNotFoundError, OddFile or OSError (see :func:`open_regular`)."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int | None = None) -> bytes:
    """Given an open descriptor, return its bytes; raise OSError past ``limit`` bytes."""
    chunks, size = [], 0
    while chunk := os.read(fd, 1 << 16):
        size += len(chunk)
        if limit is not None and size > limit:
            raise OSError(errno.EFBIG, "larger than expected")
        chunks.append(chunk)
    return b"".join(chunks)


def make_private_dirs(directory: Path) -> None:
    """Given a directory, create it and every missing parent 0700 whatever the umask.

    Levels that exist are left as they are (a home's ``~/.cache`` may well be a symlink);
    each level created here is checked to be a real directory of this user's. Raise
    OSError when one cannot be created, OddFile when a symlink or file took its place.
    """
    missing = []
    here = Path(directory)
    while not os.path.lexists(here) and here != here.parent:
        missing.append(here)
        here = here.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            continue  # another run made it first; the caller checks what it uses
        try:
            fd = os.open(new, _DIR_FLAGS)
        except OSError:
            raise _odd_dir(new) or OddFile(new, 0) from None
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o700)  # mkdir's mode passes through the umask
        finally:
            os.close(fd)


@contextlib.contextmanager
def private_dir(directory: Path, *, create: bool) -> Iterator[int]:
    """Open a directory that is this user's and closed to others, for the block; yield its
    descriptor, through which the files in it are opened (see :func:`read_in`).

    With ``create`` it is made first (see :func:`make_private_dirs`). The last level is
    not followed if it is a symlink. Raise FileNotFoundError when it is missing, OddFile
    when it is not a directory, NotPrivate when it is someone else's or open to others.
    """
    if create:
        make_private_dirs(directory)
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ENOTDIR or ELOOP: a file or a symlink is there
        raise _odd_dir(directory) or exc from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise NotPrivate(directory, f"belongs to uid {info.st_uid}")
        if info.st_mode & 0o077:
            raise NotPrivate(directory, f"is open to others (mode {stat.S_IMODE(info.st_mode):04o})")
        yield fd
    finally:
        os.close(fd)


def _odd_dir(directory: Path) -> OddFile | None:
    try:
        mode = os.lstat(directory).st_mode
    except OSError:
        return None
    return None if stat.S_ISDIR(mode) else OddFile(directory, mode)


def read_in(dir_fd: int, name: str, limit: int) -> bytes:
    """Given a private directory's descriptor and a file name in it, return the file's
    bytes when it is a regular file of this user's that only this user can read.

    Raise FileNotFoundError, OddFile, NotPrivate or OSError (larger than ``limit``).
    """
    fd = open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise NotPrivate(name, "is someone else's or open to others")
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def write_in(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Given a private directory's descriptor, replace the file ``name`` in it atomically
    with ``data`` (``mode`` whatever the umask). Raise OSError when it cannot be written."""
    temp = f".{name}.{secrets.token_hex(4)}.tmp"
    fd = open_regular(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Given a path and bytes, replace the file so that readers see old or new, never half.

    The new file has ``mode`` whatever the umask; whatever is at ``path`` (a symlink, a
    FIFO) is replaced, never followed or opened. Raise OSError when it cannot be written.
    """
    directory = path.parent
    temp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = open_regular(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
