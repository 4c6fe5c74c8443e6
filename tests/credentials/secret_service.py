"""A private, unlocked Secret Service (gnome-keyring on its own D-Bus session) for tests.

droid keeps the key of ``auth.v2.keyring`` in the OS keyring through keytar, which on
Linux talks to the Secret Service over the D-Bus session bus. To test that path for real,
:func:`start_secret_service` starts a ``dbus-daemon`` with a private configuration (no
service directories, so nothing is D-Bus-activated behind our back) and a
``gnome-keyring-daemon`` on it whose login collection is created and unlocked with a
password fed on stdin, all under a temporary HOME / XDG_DATA_HOME / XDG_RUNTIME_DIR.
Nothing listens anywhere but on a unix socket in that runtime directory.

The packages (``dbus-daemon``, ``gnome-keyring``; ``libsecret-1-0`` for
droid's keytar) come from ``.ci/install-test-deps.sh``. Where they are missing,
:func:`unavailable_reason` says so and the tests skip.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# keytar's libsecret schema: libsecret adds this attribute to every item it stores and to
# every lookup, so an item droid can find must carry it too.
KEYTAR_SCHEMA = "org.freedesktop.Secret.Generic"
INSTALL_HINT = "run .ci/install-test-deps.sh as root"
# Generous: only a hang detector, never a measurement.
STARTUP_TIMEOUT_SECONDS = 20.0
KEYRING_PASSWORD = b"test-login-password-not-a-secret"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def unavailable_reason() -> str | None:
    """Return why a private Secret Service cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the Secret Service test needs Linux (D-Bus + gnome-keyring)"
    for program, package in (("dbus-daemon", "dbus-daemon"), ("gnome-keyring-daemon", "gnome-keyring")):
        if shutil.which(program) is None:
            return f"{program} not found (Debian package {package}); {INSTALL_HINT}"
    try:
        import secretstorage  # noqa: F401  (comes with keyring on Linux)
    except ImportError:
        return "the Python package secretstorage is not installed"
    return None


def libsecret_missing_reason() -> str | None:
    """Return why droid's keytar cannot reach the Secret Service here, or None when it can.

    droid's embedded ``keytar.node`` is linked against ``libsecret-1.so.0``; without it
    droid's dlopen fails and droid silently uses its file store only.
    """
    if ctypes.util.find_library("secret-1") is None:
        return (
            "libsecret-1.so.0 not found (Debian package libsecret-1-0): droid's keytar cannot "
            f"load, so droid cannot use the OS keyring; {INSTALL_HINT}"
        )
    return None


class SecretServiceUnavailable(RuntimeError):
    """The private bus or gnome-keyring did not come up (an environment problem, not a bug)."""


@dataclass
class SecretService:
    """A running private Secret Service: its bus address and runtime directory."""

    address: str
    runtime_dir: Path
    home: Path

    def env(self) -> dict[str, str]:
        """Return the variables a client needs to find this session bus."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address, "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    @contextlib.contextmanager
    def connection(self) -> Iterator:
        """Yield a jeepney connection to this bus (not the one in os.environ)."""
        from jeepney.io.blocking import open_dbus_connection

        connection = open_dbus_connection(bus=self.address)
        try:
            yield connection
        finally:
            connection.close()

    def store_keytar_item(self, service: str, account: str, secret: str) -> None:
        """Save ``secret`` under ``service``/``account`` the way keytar's setPassword does."""
        import secretstorage

        attributes = {"service": service, "account": account, "xdg:schema": KEYTAR_SCHEMA}
        with self.connection() as connection:
            collection = secretstorage.get_default_collection(connection)
            collection.create_item(f"{service}/{account}", attributes, secret.encode(), replace=True)

    def lock_default_collection(self) -> None:
        """Lock the login collection, as after a screen lock or on a headless boot."""
        import secretstorage

        with self.connection() as connection:
            collection = secretstorage.get_default_collection(connection)
            collection.lock()
            assert collection.is_locked()


def _read_line(stream, timeout: float) -> str:
    """Read one line from a pipe, failing instead of hanging when none comes."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise SecretServiceUnavailable("dbus-daemon printed no address")
    return stream.readline().decode().strip()


def _stop(process: subprocess.Popen) -> None:
    """End a process we started, by its pid, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_unlocked(service: SecretService) -> None:
    """Wait until gnome-keyring owns org.freedesktop.secrets with an unlocked default collection."""
    import secretstorage

    give_up = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last_error: Exception | None = None
    while time.monotonic() < give_up:
        try:
            with service.connection() as connection:
                if secretstorage.check_service_availability(connection):
                    collection = secretstorage.get_default_collection(connection)
                    if not collection.is_locked():
                        return
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(0.05)
    raise SecretServiceUnavailable(
        f"gnome-keyring did not come up with an unlocked login collection ({type(last_error).__name__})"
    )


@contextlib.contextmanager
def start_secret_service() -> Iterator[SecretService]:
    """Start a private session bus and an unlocked gnome-keyring on it; stop both after.

    Raise SecretServiceUnavailable when either does not come up (call
    :func:`unavailable_reason` first).
    """
    # A short directory of our own: a unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ss-"))
    runtime_dir, home, data = root / "run", root / "home", root / "data"
    for path in (runtime_dir, home, data):
        path.mkdir(mode=0o700)
    socket = runtime_dir / "bus"
    config = root / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket), encoding="utf-8")
    processes: list[subprocess.Popen] = []
    try:
        bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        processes.append(bus)
        address = _read_line(bus.stdout, STARTUP_TIMEOUT_SECONDS)
        service = SecretService(address=address, runtime_dir=runtime_dir, home=home)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(data),
            "XDG_CONFIG_HOME": str(root / "config"),
            **service.env(),
        }
        # --unlock reads the login password from stdin and creates the login collection
        # (the default alias) when there is none; --foreground keeps it our child.
        keyring = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(keyring)
        keyring.stdin.write(KEYRING_PASSWORD)
        keyring.stdin.close()
        _wait_until_unlocked(service)
        yield service
    finally:
        for process in reversed(processes):
            _stop(process)
            if process.stdout:
                process.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
