"""A fresh Debian 12 booted with its own systemd in a container, for tests of the real units.

The root file system is made once with ``debootstrap --variant=minbase`` and kept in
``.cache/nspawn/`` (git-ignored); each boot runs on a throw-away overlay of it
(``--volatile=overlay``), so later runs start in seconds and never change the cache. The
container shares the host's network, so stand-ins on the host's 127.0.0.1 are reachable.
Host directories are bound in (``/home``, the wheels), so the test reads what the job wrote.

This machine's PID 1 need not be systemd: the container is not registered with machined
(``--register=no --keep-unit``) and is driven with ``nsenter``. systemd-nspawn insists on
a tmpfs for its /run/systemd/nspawn, so it runs in a private mount namespace that has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "nspawn"
SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Debian 12 server has beyond minbase that the tests need: an init, D-Bus and logind
# sessions (user managers), sudo for the README's commands, and Python with its venv module.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "sudo", "python3", "python3-venv")
# The Python the container's Debian has: wheels built by the host's Python fit only if equal.
CONTAINER_PYTHON = (3, 11)
BOOT_TIMEOUT = 120.0
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unavailable(Exception):
    """The container cannot be made or booted here; the message says why (a skip reason)."""


def why_not_here() -> str | None:
    """Return why a container cannot be booted here, or None when it can be tried."""
    if sys.platform != "linux":
        return "systemd-nspawn exists only on Linux"
    if os.geteuid() != 0:
        return "booting a container with systemd-nspawn needs root"
    if os.environ.get("FACTORY_USAGE_ALERT_NO_CONTAINER"):
        return "FACTORY_USAGE_ALERT_NO_CONTAINER is set"
    if os.environ.get("FAKETIME") or "faketime" in os.environ.get("LD_PRELOAD", ""):
        return (
            "the clock is faked (libfaketime): the container's systemd keeps the real one; "
            "this test runs in the real-clock pass of .ci/run"
        )
    for tool in ("systemd-nspawn", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            package = "systemd-container" if tool == "systemd-nspawn" else "util-linux"
            return f"no {tool} here (apt-get install {package})"
    return None


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def rootfs() -> Path:
    """Return the cached root file system, made with debootstrap the first time.

    Raise Unavailable when there is none and debootstrap is missing or fails (no mirror).
    """
    path = CACHE / f"{SUITE}-minbase-{_key(SUITE, *PACKAGES)}"
    if (path / "usr" / "lib" / "systemd" / "systemd").exists():
        return path
    if shutil.which("debootstrap") is None:
        raise Unavailable(
            f"no cached root file system in {CACHE} and no debootstrap to make one "
            "(apt-get install debootstrap)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(building),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise Unavailable(f"debootstrap of {SUITE} from {MIRROR} failed: {' | '.join(tail)}")
        # The container's apt lists and caches are of no use to the tests; keep the cache small.
        shutil.rmtree(building / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        os.rename(building, path)  # whole or not at all: an interrupted build is never used
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return path


def wheelhouse() -> Path | None:
    """Return a directory of wheels for the package's dependencies and build backend, made
    with the host's pip once and cached; None when the host's Python is not the
    container's (then pip in the container uses the package index)."""
    if sys.version_info[:2] != CONTAINER_PYTHON:
        return None
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    path = CACHE / f"wheels-cp{''.join(map(str, CONTAINER_PYTHON))}-{_key(*wanted)}"
    if path.is_dir():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="wheels-", dir=CACHE))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(building), *wanted],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise Unavailable(f"pip could not gather the wheels: {done.stderr.strip()[-300:]}")
        building.chmod(0o755)  # mkdtemp's 0700 would keep the container's users out
        os.rename(building, path)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return path


def checkout_copy(dest: Path) -> Path:
    """Copy this checkout's files (not its virtualenv, caches or git data) to ``dest``."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis"
        ),
    )
    return dest


class Machine:
    """A booted container: ``run`` commands in it, always ``stop`` it (a context manager)."""

    def __init__(self, root: Path, binds: Mapping[Path, str], log: Path) -> None:
        self.root = root
        self.binds = binds
        self.log = log
        self.process: subprocess.Popen | None = None
        self.pid1: int | None = None

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Boot the container and wait until its systemd has finished starting up.

        Raise Unavailable (with the console's last lines) when it does not boot.
        """
        Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
        binds = [f"--bind={host}:{inside}" for host, inside in self.binds.items()]
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.root}",
            f"--machine=fua-test-{os.getpid()}",
            "--register=no",  # no machined needed on the host
            "--keep-unit",  # no transient scope: the host's PID 1 need not be systemd
            "--volatile=overlay",  # writes go to a tmpfs; the cached tree stays as made
            "--console=passive",
            "--resolv-conf=copy-host",
            "--timezone=off",
            *binds,
            "--boot",
        ]
        script = 'mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"'
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *nspawn],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        give_up = time.monotonic() + BOOT_TIMEOUT
        while self.pid1 is None:
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise Unavailable(f"systemd-nspawn did not boot: {self._console_tail()}")
            self.pid1 = self._container_init()
            time.sleep(0.1)
        while True:  # until its systemd answers (its socket appears a moment after it starts)
            state = self.run(["systemctl", "is-system-running", "--wait"], timeout=BOOT_TIMEOUT)
            answer = state.stdout.strip()
            if answer in ("running", "degraded"):
                return
            if answer or self.process.poll() is not None or time.monotonic() > give_up:
                why = answer or state.stderr.strip()
                raise Unavailable(f"the container's systemd is not up ({why}): {self._console_tail()}")
            time.sleep(0.2)

    def _container_init(self) -> int | None:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return None

    def _console_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-5:])
        return "(no console output)"

    def run(
        self,
        argv: list[str],
        *,
        input: str | None = None,
        timeout: float = 120.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` as root inside the container (all its namespaces); return the result.

        With ``check``, raise AssertionError showing the output when it fails.
        """
        assert self.pid1 is not None, "the container is not running"
        done = subprocess.run(
            ["nsenter", f"--target={self.pid1}", "--all", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"},
        )
        if check and done.returncode != 0:
            output = f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
            raise AssertionError(f"{argv} exited {done.returncode}\n{output}")
        return done

    def sh(self, script: str, *, user: str | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run a shell script in the container: as root, or as ``user`` in a login session
        (``su -l``: PAM, a logind session, the user's own .profile, as after logging in)."""
        if user is None:
            return self.run(["bash", "-c", script], **kwargs)
        return self.run(["su", "-l", user, "-s", "/bin/bash", "-c", script], **kwargs)

    def stop(self) -> None:
        """Shut the container down (SIGTERM makes systemd-nspawn power it off), then make sure."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def booted(binds: Mapping[Path, str], log: Path) -> Iterator[Machine]:
    """Boot the cached Debian with ``binds`` (host path -> container path); stop it after.

    Raise Unavailable with the reason when it cannot be booted here.
    """
    reason = why_not_here()
    if reason:
        raise Unavailable(reason)
    with Machine(rootfs(), binds, log) as machine:
        yield machine
