"""The state file, its lock and its directory: real files, real modes, FIFOs and processes.

As root the kernel skips permission checks, so ownership is tested by giving files to
another uid (os.chown), and "not writable" with a read-only bind mount in a private
mount namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from alerter.errors import EXIT_BUSY, EXIT_STATE, StateError
from alerter.state import State, load_state, locked, save_state
from alerter.statefile import check_usable, ensure_private_dir, lock_path
from tests.conftest import python_path, same_clock, usage_body
from tests.standins import Reply, StandIn

M = 1_000_000
ROOT = Path(__file__).resolve().parent.parent
OTHER_UID = 65534  # nobody
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="only root can give a directory to another uid")
VALID = b'{"meters":{},"version":1}'


class Hung(BaseException):
    """Raised by the alarm; a BaseException so that the command line cannot swallow it."""


@pytest.fixture(autouse=True)
def hang_detector():
    """A read that blocks (a FIFO opened for reading) fails the test instead of hanging it."""

    def fire(signum, frame):
        raise Hung("the command hung (a blocking open or read?)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(top: Path) -> dict:
    """Every entry under ``top`` (not following links): kind, mode, owner, content or target."""
    seen = {}
    for here, dirs, files in os.walk(top):
        if Path(here) == top and ".cache" in dirs:
            dirs.remove(".cache")  # a real run remembers the parsed config there: not the state
        for name in dirs + files:
            path = Path(here) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                what = path.read_bytes()
            else:
                what = None
            seen[str(path.relative_to(top))] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                what,
            )
    return seen


# --- odd things where the state or its lock belongs ---------------------------------------


def _symlink(path: Path) -> None:
    target = path.parent.parent / "elsewhere.json"
    target.write_bytes(VALID)
    path.symlink_to(target)


def _fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


def _socket(path: Path) -> None:
    # AF_UNIX paths are short: bind by a name relative to the directory.
    here = Path.cwd()
    os.chdir(path.parent)
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path.name)
        sock.close()  # the socket file stays
    finally:
        os.chdir(here)


def _device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def _directory(path: Path) -> None:
    path.mkdir()


ODD = {"symlink": _symlink, "fifo": _fifo, "socket": _socket, "device": _device, "directory": _directory}
ODD_WORDS = {
    "symlink": "symbolic link",
    "fifo": "FIFO",
    "socket": "socket",
    "device": "character device",
    "directory": "a directory",
}


def _make_odd(app, kind: str, which: str) -> Path:
    app.state_path.parent.mkdir(mode=0o700)
    path = app.state_path if which == "state" else lock_path(app.state_path)
    ODD[kind](path)
    return path


@pytest.mark.parametrize("which", ["state", "lock"])
@pytest.mark.parametrize("kind", list(ODD))
def test_an_odd_file_at_the_state_or_lock_path_is_an_error_not_a_hang(app, receiver, kind, which):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(17 * M))  # 85 %: a run would send an alert
    path = _make_odd(app, kind, which)
    before = snapshot(app.home)
    result = app("run")
    assert result.code == EXIT_STATE, result
    line = one_error_line(result.err)
    assert str(path) in line and ODD_WORDS[kind] in line and "move it out of the way" in line
    assert app.factory.calls() == [] and receiver.messages() == []
    after = snapshot(app.home)
    if which == "state":  # the run took its lock before it found the state unusable
        assert after.pop("state/state.json.lock") == (stat.S_IFREG, 0o600, os.geteuid(), b"")
    assert after == before  # the odd file, and whatever a link points to, untouched


@pytest.mark.parametrize("command", [["status"], ["history"], ["run", "--dry-run"], ["check-config"]])
@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_commands_that_only_read_the_state_refuse_odd_files_too(app, kind, command):
    app.serve_usage(usage_body(17 * M))
    path = _make_odd(app, kind, "state")
    before = snapshot(app.home)
    result = app(*command)
    assert result.code == EXIT_STATE, result
    assert str(path) in one_error_line(result.err)
    assert snapshot(app.home) == before


def test_a_symlink_is_not_followed_even_to_a_valid_state(tmp_path):
    real = tmp_path / "real.json"
    real.write_bytes(b'{"meters":{},"version":1,"mine":true}')
    (tmp_path / "state.json").symlink_to(real)
    with pytest.raises(StateError, match="symbolic link"):
        load_state(tmp_path / "state.json")
    victim = tmp_path / "victim"
    lock_path(tmp_path / "other.json").symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"), locked(tmp_path / "other.json", 1):
        pass
    assert not victim.exists()  # the lock did not create the file the link names


# --- the directory: whose it is, who may write it -----------------------------------------


@needs_root
def test_a_state_directory_owned_by_another_user_is_refused(app):
    app.serve_usage(usage_body(17 * M))
    directory = app.state_path.parent
    directory.mkdir(mode=0o700)
    app.state_path.write_bytes(VALID)
    os.chown(directory, OTHER_UID, OTHER_UID)
    before = snapshot(app.home)
    for command in (["run"], ["run", "--dry-run"], ["status"], ["check-config"]):
        result = app(*command)
        assert result.code == EXIT_STATE, (command, result)
        line = one_error_line(result.err)
        assert str(directory) in line and "uid 65534" in line
        # Root must not take the user's directory (their own timers would fail): run as them.
        assert "chown" not in line and "run the job as that user (`sudo -u" in line
    assert app.factory.calls() == []
    assert snapshot(app.home) == before  # no lock file in it, nothing written


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777, 0o720])
def test_a_state_directory_that_others_can_write_is_refused_not_changed(app, mode):
    app.serve_usage(usage_body(17 * M))
    directory = app.state_path.parent
    directory.mkdir()
    directory.chmod(mode)
    before = snapshot(app.home)
    for command in (["run"], ["run", "--dry-run"], ["history"], ["check-config"]):
        result = app(*command)
        assert result.code == EXIT_STATE, (command, result)
        line = one_error_line(result.err)
        assert str(directory) in line and f"mode {mode:04o}" in line
        # A sticky directory is shared on purpose (/tmp): closing it is no fix.
        fix = "shared with other users" if mode & stat.S_ISVTX else "chmod go-w"
        assert fix in line, line
    assert app.factory.calls() == []
    assert snapshot(app.home) == before
    assert stat.S_IMODE(directory.stat().st_mode) == mode


def test_a_state_file_in_a_shared_directory_like_tmp_is_told_where_to_go_instead(app):
    """`state_file: /tmp/state.json`: root was told to `chmod go-w /tmp` (and a user to
    `chown` it), which would break the system; the fix is a directory of the job's own
    there, and the path the error names works as it is."""
    app.serve_usage(usage_body(17 * M))
    shared = app.home / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is: root's, sticky, open to all
    app.state_path = shared / "state.json"
    app.write_config({"state_file": str(app.state_path)})
    for command in (["run"], ["check-config"]):
        result = app(*command)
        assert result.code == EXIT_STATE, (command, result)
        line = one_error_line(result.err)
        assert "shared with other users" in line and "chmod" not in line and "chown" not in line, line
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    suggested = line.split("`state_file: ", 1)[1].split("`", 1)[0]
    assert Path(suggested).parent.parent == shared
    app.state_path = Path(suggested)
    app.write_config({"state_file": suggested})
    result = app("run")
    assert result.code == 0, result.err
    assert stat.S_IMODE(Path(suggested).parent.stat().st_mode) == 0o700


@needs_root
def test_a_user_is_not_told_to_chown_a_system_directory(tmp_path):
    """A user whose state_file is in a directory of root's (/srv) was told to `chown` it
    to themselves; now to use a directory of their own, or have root make one in it."""
    system = Path(tempfile.mkdtemp(prefix="fua-srv-", dir="/tmp"))
    try:
        system.chmod(0o755)
        # The interpreter may live where nobody cannot read (/root): it becomes nobody
        # once started, as a service's User= would be.
        probe = (
            "import os; from pathlib import Path; from alerter.statefile import check_usable\n"
            f"os.setgid({OTHER_UID}); os.setuid({OTHER_UID})\n"
            "try:\n    check_usable(Path(%r))\nexcept Exception as exc:\n    print(exc)\n"
        ) % str(system / "state.json")
        line = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "HOME": "/nonexistent", "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        assert "belongs to root" in line, line
        assert "chown" not in line and "sudo install -d -m 700 -o nobody" in line, line
    finally:
        shutil.rmtree(system)


def test_only_the_state_files_own_directory_is_checked(app):
    """systemd's StateDirectory: /var/lib is root's, the leaf (0700) the service user's."""
    app.serve_usage(usage_body(1 * M))
    above = app.home / "var-lib"
    above.mkdir()
    leaf = above / "factory-usage-alert"
    leaf.mkdir(mode=0o700)
    above.chmod(0o777)  # even an open parent: what protects the state is the leaf
    if IS_ROOT:
        os.chown(above, OTHER_UID, OTHER_UID)
    app.state_path = leaf / "state.json"
    app.write_config({"state_file": str(app.state_path)})
    assert app("check-config").code == 0
    result = app("run")
    assert result.code == 0, result.err
    assert app.state()["version"] == 2


def test_an_existing_directory_that_is_private_enough_is_used_as_it_is(app):
    app.serve_usage(usage_body(1 * M))
    app.state_path.parent.mkdir()
    app.state_path.parent.chmod(0o755)  # the job's own, others can only look in
    assert app("run").code == 0
    assert stat.S_IMODE(app.state_path.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(app.state_path.stat().st_mode) == 0o600


def test_a_state_directory_reached_through_a_symlink_is_used(app):
    app.serve_usage(usage_body(1 * M))
    real = app.home / "disk" / "state"
    real.mkdir(parents=True, mode=0o700)
    app.state_path.parent.symlink_to(real)
    assert app("run").code == 0
    assert json.loads((real / "state.json").read_bytes())["version"] == 2


# --- modes whatever the umask; looser files are tightened ---------------------------------


@pytest.mark.parametrize("umask", [0, 0o022, 0o077, 0o277])
def test_created_directories_are_0700_and_files_0600_whatever_the_umask(app, umask):
    app.serve_usage(usage_body(1 * M))
    app.state_path = app.home / "a" / "b" / "state.json"
    app.write_config({"state_file": str(app.state_path)})
    previous = os.umask(umask)
    try:
        result = app("run")
    finally:
        os.umask(previous)
    assert result.code == 0, result.err
    modes = {
        name: stat.S_IMODE(os.stat(app.home / name).st_mode)
        for name in ("a", "a/b", "a/b/state.json", "a/b/state.json.lock")
    }
    assert modes == {"a": 0o700, "a/b": 0o700, "a/b/state.json": 0o600, "a/b/state.json.lock": 0o600}


@pytest.mark.parametrize("umask", [0, 0o077])
def test_save_state_alone_creates_private_directories(tmp_path, umask):
    path = tmp_path / "x" / "y" / "state.json"
    previous = os.umask(umask)
    try:
        save_state(path, State())
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path.parent.parent, path.parent, path)] == [
        0o700,
        0o700,
        0o600,
    ]


def test_a_state_file_open_to_others_is_made_0600_by_a_run_not_by_a_read(tmp_path, caplog):
    path = tmp_path / "state.json"
    path.write_bytes(VALID)
    path.chmod(0o644)
    assert load_state(path, keep_aside=False) == State()  # dry run, status, history
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_state(path) == State()  # a run
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "was open to others (mode 0644); made it 0600" in caplog.text
    lock = lock_path(path)
    lock.write_bytes(b"")
    lock.chmod(0o666)
    with locked(path, 1):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600


# --- the lock: who holds it, and a non-zero exit ------------------------------------------

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    from pathlib import Path
    from alerter.statefile import locked
    path = Path(sys.argv[1])
    if sys.argv[2] == "job":
        with locked(path, timeout=10):
            print("held", flush=True)
            sys.stdin.read()
    else:  # some other program that takes the lock and writes nothing in it
        fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """
)


@contextlib.contextmanager
def lock_held_by_another_process(path: Path, how: str = "job"):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), how],
        env={**os.environ, "PYTHONPATH": python_path(str(ROOT))},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.stdin.close()  # the holder's read ends, it leaves the block and exits
        proc.wait(timeout=20)
        proc.stdout.close()


def test_a_run_that_finds_the_lock_held_names_the_holder_and_exits_non_zero(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "factory": {"deadline_seconds": 1}})
    app.serve_usage(usage_body(17 * M))
    app.state_path.parent.mkdir(mode=0o700)
    lock = lock_path(app.state_path)
    with lock_held_by_another_process(app.state_path) as holder:
        assert lock.read_text() == f"{holder.pid}\n"
        result = app("run")
        assert result.code == EXIT_BUSY == 7, result
        line = one_error_line(result.err)
        assert str(lock) in line and f"process {holder.pid}" in line and f"kill {holder.pid}" in line
        assert app.factory.calls() == [] and receiver.messages() == []
        assert lock.read_text() == f"{holder.pid}\n"  # the waiting run wrote nothing
    assert lock.read_text() == ""  # released: no pid left to mislead
    result = app("run")
    assert result.code == 0, result.err
    assert len(receiver.messages()) == 1


def test_a_run_that_waited_for_the_lock_still_gives_factory_its_whole_deadline(app, receiver):
    # The audit: the lock held for 3 s of a 4 s deadline left Factory 1 s: "Factory API
    # timed out", exit 4, counted towards a false "usage alerts are not working". The
    # deadline starts when the run holds the lock; the wait is bounded on its own.
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "factory": {"deadline_seconds": 4},
            "monitor": {"failures_before_alert": 1},
        }
    )
    app.serve_usage(Reply(200, usage_body(17 * M), delay=2.0))  # Factory takes 2 s to answer
    app.state_path.parent.mkdir(mode=0o700)
    with lock_held_by_another_process(app.state_path) as holder:
        release = threading.Timer(3.0, holder.stdin.close)  # the other run ends after 3 s
        release.start()
        result = app("run")
        release.join()
    assert result.code == 0, result.err
    (message,) = receiver.messages()
    assert "past 80%" in message["title"]
    assert app.state()["health"]["failures"] == 0


def test_a_lock_held_without_a_process_id_is_still_a_busy_exit(app):
    app.write_config({"factory": {"deadline_seconds": 1}})
    app.serve_usage(usage_body(1 * M))
    app.state_path.parent.mkdir(mode=0o700)
    with lock_held_by_another_process(app.state_path, how="plain"):
        result = app("run")
    assert result.code == EXIT_BUSY, result
    line = one_error_line(result.err)
    assert "another run has held the state lock" in line and "process" not in line.split(";")[0]
    assert app.factory.calls() == []


# --- a place the job cannot write -----------------------------------------------------------


def _can_unshare() -> bool:
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def run_with_read_only(app, directory: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the command in a private mount namespace where ``directory`` is read-only."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    argv = ["unshare", "-m", "sh", "-c", script, "sh", str(directory)]
    argv += [sys.executable, "-m", "alerter", *args, "--config", str(app.config_path)]
    env = {**app.env, "TZ": "UTC", **same_clock(), "PYTHONPATH": python_path(str(ROOT))}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) for a read-only bind mount")
def test_a_read_only_state_directory_is_reported_before_anything_is_fetched(app):
    app.serve_usage(usage_body(17 * M))
    directory = app.state_path.parent
    directory.mkdir(mode=0o700)
    app.state_path.write_bytes(VALID)
    before = snapshot(app.home)
    for command, words in (
        (["check-config"], "not writable by root"),
        (["run", "--dry-run"], "not writable by root"),
        (["run"], "Read-only file system"),
    ):
        result = run_with_read_only(app, directory, *command)
        assert result.returncode == EXIT_STATE, (command, result.stderr)
        line = one_error_line(result.stderr)
        assert str(directory) in line and words in line
    assert app.factory.calls() == []
    assert snapshot(app.home) == before


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) for a read-only bind mount")
def test_a_run_on_a_read_only_state_directory_pings_fail_and_names_the_fix_that_helps(app):
    # The lock is the first file a run writes: its failure is the run's failure, which
    # monitoring must hear of (README: exit 6 and a failure ping), and chown cannot help.
    health = StandIn().start()
    try:
        for path in ("/check", "/check/start", "/check/fail"):
            health.route("GET", path, Reply(200, b"OK"))
        app.write_config({"healthcheck_url": f"{health.url}/check"})
        app.serve_usage(usage_body(17 * M))
        directory = app.state_path.parent
        directory.mkdir(mode=0o700)
        app.state_path.write_bytes(VALID)
        for lock_there in (False, True):
            if lock_there:
                lock_path(app.state_path).write_bytes(b"")
            result = run_with_read_only(app, directory, "run")
            assert result.returncode == EXIT_STATE, result.stderr
            line = one_error_line(result.stderr)
            assert "Read-only file system" in line and "chown" not in line, line
            assert f"make {directory} writable" in line
        assert [c.path for c in health.calls()] == ["/check/fail", "/check/fail"]
        assert app.factory.calls() == []
    finally:
        health.stop()


@pytest.mark.skipif(IS_ROOT, reason="root writes through a directory's mode; see the read-only mount test")
def test_a_state_directory_without_write_permission_is_reported(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir(mode=0o500)
    with pytest.raises(StateError, match="not writable by"):
        check_usable(directory / "state.json")


def test_a_missing_state_directory_under_a_plain_file_is_reported(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StateError, match="cannot create it in"):
        check_usable(tmp_path / "file" / "sub" / "state.json")
    with pytest.raises(StateError, match="cannot create the state directory"):
        ensure_private_dir(tmp_path / "file" / "sub")


def test_check_config_shows_the_summary_then_the_state_problem(app):
    app.state_path.parent.mkdir()
    app.state_path.parent.chmod(0o777)
    result = app("check-config")
    assert result.code == EXIT_STATE
    assert f"state file: {app.state_path} (cannot be used: see below)" in result.out
    assert "channels:" in result.out  # the rest of the summary is still there
    assert str(app.state_path.parent) in one_error_line(result.err)


def test_a_state_that_cannot_be_saved_is_a_state_error_naming_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.mkdir()  # rename cannot replace a directory with a file
    with pytest.raises(StateError, match=r"state\.json: cannot save the state"):
        save_state(path, State())
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


def test_check_usable_writes_nothing(tmp_path):
    path = tmp_path / "new" / "deeper" / "state.json"
    check_usable(path)
    assert list(tmp_path.iterdir()) == []
