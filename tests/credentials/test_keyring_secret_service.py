"""droid's keyring-backed store (``auth.v2.keyring``) through a real Secret Service.

Each test starts its own D-Bus session with an unlocked gnome-keyring (see
``secret_service.py``) and saves the store's key there the way droid's keytar does. The
job finds it through ``open_login`` with no stand-in for the keyring; the real droid, run in
the same session without ``FACTORY_DISABLE_KEYRING``, reads what the job wrote and the
other way round. Everything stays on unix sockets and 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from alerter.credentials import CredentialSettings, open_login, token_expiry
from alerter.credentials.keyring_source import KEYRING_ACCOUNT, SERVICE, lookup_key
from alerter.credentials.store import decrypt_envelope

from .helpers import DAY, HOUR, SOON, login_data, write_envelope_store, write_keyfile_store
from .secret_service import (
    SecretServiceUnavailable,
    libsecret_missing_reason,
    start_secret_service,
    unavailable_reason,
)
from .test_droid_interop import DROID, DROID_VERSION, droid_env, iso_ms

NO_SECRET_SERVICE = unavailable_reason()
pytestmark = pytest.mark.skipif(NO_SECRET_SERVICE is not None, reason=str(NO_SECRET_SERVICE))

LOADED = "stored login session loaded from credential storage"


@pytest.fixture
def secret_service(monkeypatch):
    """A private unlocked Secret Service; this process's D-Bus variables point at it."""
    with contextlib.ExitStack() as stack:
        try:
            service = stack.enter_context(start_secret_service())
        except SecretServiceUnavailable as exc:
            pytest.skip(f"no private Secret Service here: {exc}")
        for name, value in service.env().items():
            monkeypatch.setenv(name, value)
        yield service


def keyring_store(service, home: Path, data: dict) -> bytes:
    """Write ``auth.v2.keyring`` holding ``data`` and put its key in the keyring; return the key."""
    key = os.urandom(32)
    service.store_keytar_item(SERVICE, KEYRING_ACCOUNT, base64.b64encode(key).decode())
    write_envelope_store(home / "auth.v2.keyring", data, key)
    return key


def read_keyring_store(home: Path, key: bytes) -> dict:
    return json.loads(decrypt_envelope((home / "auth.v2.keyring").read_text(), key))


def fresh_settings(home: Path, workos_url: str) -> CredentialSettings:
    """Settings whose run deadline starts now (droid and the daemons may have taken a while)."""
    return CredentialSettings(
        home=home, workos_url=workos_url, deadline=time.monotonic() + 8, renew_reserve_seconds=1
    )


# -- the job alone ----------------------------------------------------------------------


def test_the_job_reads_the_keyring_store_through_the_secret_service(secret_service, home, workos):
    data = login_data(3 * DAY)
    key = keyring_store(secret_service, home, data)
    # An older file store beside it (droid leaves one behind when it moves to the keyring):
    # reading it instead would be the keyring path failing silently.
    write_keyfile_store(home, login_data(3 * DAY))

    assert lookup_key(KEYRING_ACCOUNT) == base64.b64encode(key).decode()
    login = open_login(fresh_settings(home, workos.url), env={})

    assert login.bearer() == data["access_token"]
    assert login.identity.source == "auth.v2.keyring"
    assert workos.requests == []  # three days left: no refresh


def test_the_lookup_finds_the_systemd_bus_socket_without_an_address(secret_service, monkeypatch):
    """A systemd user session has the bus at $XDG_RUNTIME_DIR/bus and may not export its address."""
    key_text = base64.b64encode(os.urandom(32)).decode()
    secret_service.store_keytar_item(SERVICE, KEYRING_ACCOUNT, key_text)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    assert (secret_service.runtime_dir / "bus").exists()

    assert lookup_key(KEYRING_ACCOUNT) == key_text


def test_a_near_expiry_token_is_renewed_into_the_store_with_the_same_key(secret_service, home, workos):
    whoami = {"region": "us", "isOnPrem": False, "principalKind": "user"}
    original = login_data(SOON, whoami=whoami, droid_future_field={"kept": [1, 2]})
    key = keyring_store(secret_service, home, original)
    before = (home / "auth.v2.keyring").read_text()

    login = open_login(fresh_settings(home, workos.url), env={})

    assert len(workos.issued) == 1
    new_pair = workos.issued[0]
    assert login.bearer() == new_pair["access_token"]
    assert workos.requests[0]["refresh_token"] == original["refresh_token"]
    assert (home / "auth.v2.keyring").read_text() != before
    assert read_keyring_store(home, key) == {**original, **new_pair}
    assert (home / "auth.v2.keyring").stat().st_mode & 0o777 == 0o600
    assert not (home / "auth.v2.file").exists()  # written back where it came from
    assert lookup_key(KEYRING_ACCOUNT) == base64.b64encode(key).decode()  # key untouched


def test_a_locked_keyring_is_skipped_without_a_prompt(secret_service, home, workos):
    keyring_store(secret_service, home, login_data(3 * DAY))
    file_login = login_data(3 * DAY)
    write_keyfile_store(home, file_login)
    secret_service.lock_default_collection()

    assert lookup_key(KEYRING_ACCOUNT) is None
    login = open_login(fresh_settings(home, workos.url), env={})
    assert login.bearer() == file_login["access_token"]
    assert login.identity.source == "auth.v2.file"


# -- the job and the real droid in the same session -------------------------------------

needs_droid = pytest.mark.skipif(
    DROID is None,
    reason=f"real droid {DROID_VERSION} not found: set DROID_BIN or run .ci/fetch-droid.sh",
)
NO_LIBSECRET = libsecret_missing_reason()
needs_libsecret = pytest.mark.skipif(NO_LIBSECRET is not None, reason=str(NO_LIBSECRET))


def droid_doctor_in_session(user_home: Path, workos_url: str, service) -> dict[str, dict]:
    """Run ``droid doctor --auth --json`` with the OS keyring enabled; return results by id."""
    env = {**droid_env(user_home, workos_url), **service.env()}
    del env["FACTORY_DISABLE_KEYRING"]  # droid uses keytar, in the private D-Bus session
    done = subprocess.run(
        [str(DROID), "doctor", "--auth", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stdout)
    return {result["id"]: result for result in report["results"]}


@needs_droid
@needs_libsecret
def test_droid_loads_the_keyring_store_the_job_renewed(secret_service, tmp_path, workos):
    home = tmp_path / ".factory"
    key = keyring_store(secret_service, home, login_data(SOON))
    # A stale file store with another expiry: droid reporting it would mean droid did not
    # get the key from the keyring and fell back to the file.
    write_keyfile_store(home, login_data(5 * DAY))

    login = open_login(fresh_settings(home, workos.url), env={})
    new_token = workos.issued[0]["access_token"]
    assert login.bearer() == new_token
    assert read_keyring_store(home, key)["access_token"] == new_token

    results = droid_doctor_in_session(tmp_path, workos.url, secret_service)
    assert results["auth.credentials"]["status"] == "pass"
    assert results["auth.credentials"]["detail"] == LOADED
    assert results["auth.tokenExpiry"]["detail"].startswith(
        f"access token valid until {iso_ms(token_expiry(new_token))}"
    )
    assert results["auth.verify"]["status"] == "pass"
    assert len(workos.issued) == 1  # droid did not need to renew it


@needs_droid
@needs_libsecret
def test_the_job_uses_the_keyring_login_droid_renewed(secret_service, tmp_path, workos):
    home = tmp_path / ".factory"
    original = login_data(-HOUR, whoami={"region": "us"})  # expired: droid renews it itself
    key = keyring_store(secret_service, home, original)

    results = droid_doctor_in_session(tmp_path, workos.url, secret_service)
    assert results["auth.verify"]["status"] == "pass"
    assert len(workos.issued) == 1
    assert read_keyring_store(home, key)["refresh_token"] == workos.issued[0]["refresh_token"]
    assert not (home / "auth.v2.file").exists()  # droid kept its login in the keyring store

    requests_so_far = len(workos.requests)
    login = open_login(fresh_settings(home, workos.url), env={})
    assert login.bearer() == workos.issued[0]["access_token"]
    assert login.identity.source == "auth.v2.keyring"
    assert len(workos.requests) == requests_so_far
