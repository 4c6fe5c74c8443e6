"""Read droid's store encryption key from the OS keyring, or give up quickly and quietly.

droid keeps the key of ``auth.v2.keyring`` in the OS keyring through Node's keytar. On
Linux keytar stores Secret Service items with the attributes ``service`` and ``account``,
which Python's ``keyring`` (``service``/``username``) does not find, so there we search the
Secret Service by keytar's attributes. On macOS and Windows ``keyring.get_password`` reads
the same item droid wrote.

A keyring that is absent or locked is the normal case for a cron job (no session bus, no
unlocked login keyring): every failure returns None and logs at debug level only.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
from pathlib import Path

from alerter.stopping import leave_signals_to_the_main_thread

log = logging.getLogger(__name__)

SERVICE = "Factory CLI"
KEYRING_ACCOUNT = "auth-encryption-key"
LOGIN_KEYCHAIN_ACCOUNT = "auth-encryption-key-security-cli"

# D-Bus activation of a keyring daemon can block for the bus's default 25 s; a cron job
# must not sit there, so the lookup runs in a helper thread that we stop waiting for.
LOOKUP_TIMEOUT_SECONDS = 3.0


def lookup_key(account: str, timeout: float = LOOKUP_TIMEOUT_SECONDS) -> str | None:
    """Given a keytar account name, return the secret droid stored under ``Factory CLI``.

    Return None when there is no usable keyring, the item is absent or locked, or the
    lookup takes longer than ``timeout`` seconds. Never raise.
    """
    if sys.platform.startswith("linux") and not _session_bus_present():
        log.debug("no D-Bus session bus; skipping the Secret Service")
        return None
    lookup = _secret_service_lookup if sys.platform.startswith("linux") else _keyring_lookup
    result: list[str | None] = [None]

    def run() -> None:
        leave_signals_to_the_main_thread()
        try:
            result[0] = lookup(account)
        except Exception as exc:  # any keyring failure means "not available here"
            log.debug("OS keyring lookup failed: %s", type(exc).__name__)

    context = contextvars.copy_context()  # its log lines are named as the caller's are
    worker = threading.Thread(target=context.run, args=(run,), name="keyring-lookup", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    if worker.is_alive():
        log.debug("OS keyring did not answer within %.1f s; skipping it", timeout)
        return None
    return result[0]


def _session_bus_present() -> bool:
    """Return True when a D-Bus session bus address is known (env or the systemd socket)."""
    return _session_bus_address() is not None


def _session_bus_address() -> str | None:
    """Return the session bus address: ``$DBUS_SESSION_BUS_ADDRESS``, else the systemd socket.

    A systemd user session has its bus at ``$XDG_RUNTIME_DIR/bus`` and need not export the
    address; libsecret (droid's keytar) looks there, but jeepney only reads the variable,
    so the socket's address is built here.
    """
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    socket = Path(runtime_dir, "bus")
    if not socket.exists():
        return None
    # D-Bus addresses are "key=value,..." lists: escape what would break that syntax.
    escaped = "".join(f"%{ord(char):02x}" if char in "%,;=" else char for char in str(socket))
    return f"unix:path={escaped}"


def _secret_service_lookup(account: str) -> str | None:
    """Search the Secret Service for keytar's item; skip locked items rather than prompt."""
    import secretstorage  # comes with keyring on Linux (and brings jeepney)
    from jeepney.io.blocking import open_dbus_connection

    address = _session_bus_address()
    if address is None:
        return None
    # Not secretstorage.dbus_init(): it reads only $DBUS_SESSION_BUS_ADDRESS.
    connection = open_dbus_connection(bus=address)
    try:
        for item in secretstorage.search_items(connection, {"service": SERVICE, "account": account}):
            if item.is_locked():
                # Unlocking would pop up a prompt nobody answers in a cron job.
                log.debug("Secret Service item for %s is locked; skipping it", account)
                continue
            return item.get_secret().decode("utf-8")
    finally:
        connection.close()
    log.debug("no Secret Service item for %s", account)
    return None


def _keyring_lookup(account: str) -> str | None:
    """Read the item with ``keyring`` (macOS Keychain, Windows Credential Manager)."""
    import keyring

    return keyring.get_password(SERVICE, account)
