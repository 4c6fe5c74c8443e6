"""The OS keyring lookup gives up quickly and quietly where there is no usable keyring."""

from __future__ import annotations

import logging
import threading

import pytest

from alerter.credentials import keyring_source


@pytest.fixture
def linux_without_session_bus(monkeypatch, tmp_path):
    monkeypatch.setattr(keyring_source.sys, "platform", "linux")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no "bus" socket in there


def test_no_session_bus_means_no_key_without_touching_dbus(linux_without_session_bus, monkeypatch, caplog):
    def must_not_run(account):
        raise AssertionError("the Secret Service was contacted")

    monkeypatch.setattr(keyring_source, "_secret_service_lookup", must_not_run)
    with caplog.at_level(logging.DEBUG):
        assert keyring_source.lookup_key("auth-encryption-key") is None
    assert caplog.records and all(r.levelno == logging.DEBUG for r in caplog.records)


@pytest.fixture
def linux_with_session_bus(monkeypatch):
    monkeypatch.setattr(keyring_source.sys, "platform", "linux")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")


def test_secret_service_found_by_keytars_attributes(linux_with_session_bus, monkeypatch):
    monkeypatch.setattr(keyring_source, "_secret_service_lookup", lambda account: f"key-{account}")
    assert keyring_source.lookup_key("auth-encryption-key") == "key-auth-encryption-key"


def test_a_failing_keyring_is_quiet(linux_with_session_bus, monkeypatch, caplog):
    def locked(account):
        raise RuntimeError("org.freedesktop.Secret.Error.IsLocked")

    monkeypatch.setattr(keyring_source, "_secret_service_lookup", locked)
    with caplog.at_level(logging.DEBUG):
        assert keyring_source.lookup_key("auth-encryption-key") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_a_hanging_keyring_is_abandoned_after_the_timeout(linux_with_session_bus, monkeypatch):
    release, answered = threading.Event(), threading.Event()

    def late_keyring(account):
        release.wait(60)
        answered.set()
        return "key-from-a-keyring-that-answered-late"

    monkeypatch.setattr(keyring_source, "_secret_service_lookup", late_keyring)
    try:
        assert keyring_source.lookup_key("auth-encryption-key", timeout=0.1) is None
        assert not answered.is_set()  # given up on while it still hung, not waited for
    finally:
        release.set()


def test_real_secret_service_absent_is_quiet(monkeypatch, caplog):
    """With a bus address that leads nowhere, the real secretstorage path fails, quietly."""
    monkeypatch.setattr(keyring_source.sys, "platform", "linux")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    with caplog.at_level(logging.DEBUG):
        # A timeout long enough that only a hang would reach it: the lookup must fail, not time out.
        assert keyring_source.lookup_key("auth-encryption-key", timeout=30) is None
    ours = [r for r in caplog.records if r.name == keyring_source.log.name]
    assert [r.levelno for r in ours] == [logging.DEBUG]
    assert ours[0].getMessage().startswith("OS keyring lookup failed")


def test_what_the_lookup_logs_is_named_after_the_account_it_runs_for(linux_with_session_bus, monkeypatch):
    import types

    from alerter.accounts import each_account

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    def locked(account):  # runs in the lookup's own worker thread
        raise RuntimeError("org.freedesktop.Secret.Error.IsLocked")

    monkeypatch.setattr(keyring_source, "_secret_service_lookup", locked)
    logger = logging.getLogger("alerter")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        accounts = (types.SimpleNamespace(name="home"), types.SimpleNamespace(name="work"))
        each_account(accounts, lambda account: keyring_source.lookup_key("auth-encryption-key"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sorted(lines) == [f"[{n}] OS keyring lookup failed: RuntimeError" for n in ("home", "work")]
