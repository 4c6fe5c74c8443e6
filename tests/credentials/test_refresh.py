"""Renewing droid's login with WorkOS (a stand-in on 127.0.0.1) and writing it back."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
import time
import traceback

import pytest

from alerter.credentials import CredentialSettings, open_login, token_expiry
from alerter.credentials.refresh import CLIENT_ID
from alerter.credentials.store import decrypt_envelope, encrypt_envelope
from alerter.errors import AuthError, UpstreamError

from .helpers import (
    DAY,
    HOUR,
    SOON,
    keyring_holding,
    login_data,
    make_jwt,
    no_keyring,
    write_envelope_store,
    write_keyfile_store,
)


def stored_json(home, key) -> dict:
    return json.loads(decrypt_envelope((home / "auth.v2.file").read_text(), key))


def test_token_expiring_within_minutes_is_renewed_and_written_back(home, settings, workos):
    old = login_data(SOON, whoami={"region": "eu"}, unknown_field={"kept": True})
    key = write_keyfile_store(home, old)

    login = open_login(settings, env={}, key_lookup=no_keyring)

    new = workos.issued[0]
    assert login.bearer() == new["access_token"]
    assert login.identity.expires_at == token_expiry(new["access_token"])
    assert login.identity.region == "eu"
    assert stored_json(home, key) == {**old, **new}
    assert not list(home.glob("*auth.v2.write*"))  # lock released, nothing pending

    # A second run finds a fresh token and leaves WorkOS alone.
    again = open_login(settings, env={}, key_lookup=no_keyring)
    assert again.bearer() == new["access_token"]
    assert len(workos.requests) == 1


def test_refresh_request_is_droids(home, settings, workos):
    old = login_data(SOON)  # the store names an organization: droid still does not send it
    write_keyfile_store(home, old)
    open_login(settings, env={}, key_lookup=no_keyring)
    request = workos.requests[0]
    assert request["_path"] == "/user_management/authenticate"
    assert request["_content_type"] == "application/x-www-form-urlencoded"
    assert {k: v for k, v in request.items() if not k.startswith("_")} == {
        "grant_type": "refresh_token",
        "refresh_token": old["refresh_token"],
        "client_id": CLIENT_ID,
    }


@pytest.mark.parametrize("expires_in", [10 * 60, HOUR, 12 * HOUR, 2 * DAY])
def test_a_token_valid_beyond_the_next_minutes_is_not_renewed(home, settings, workos, expires_in):
    data = login_data(expires_in)
    write_keyfile_store(home, data)
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert workos.requests == []
    assert login.bearer() == data["access_token"]


def test_renewal_after_a_rejection_happens_once(home, settings, workos):
    key = write_keyfile_store(home, login_data(2 * DAY))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.renew_after_refusal() is True
    assert login.bearer() == workos.issued[0]["access_token"]
    assert stored_json(home, key)["refresh_token"] == workos.issued[0]["refresh_token"]
    assert login.renew_after_refusal() is False
    assert len(workos.requests) == 1


def test_when_droid_rotated_meanwhile_droids_tokens_are_used(home, settings, workos):
    key = write_keyfile_store(home, login_data(2 * DAY))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    # droid renews between our read and the API's 401.
    droids = login_data(3 * DAY)
    write_envelope_store(home / "auth.v2.file", droids, key)

    assert login.renew_after_refusal() is True
    assert login.bearer() == droids["access_token"]
    assert workos.requests == []
    assert stored_json(home, key) == droids


def droid_renews_first(home, key, workos, old: dict) -> dict:
    """Play droid winning the race: its request spends the token at WorkOS, then it saves."""
    droids = {**old, "access_token": make_jwt(3 * DAY), "refresh_token": "rt-secret-droids-own"}
    workos.spent.add(old["refresh_token"])  # called while the stand-in holds its lock
    workos.issued.append({k: droids[k] for k in ("access_token", "refresh_token")})
    write_envelope_store(home / "auth.v2.file", droids, key)
    return droids


def test_droids_save_that_landed_before_workos_rejected_us_is_used(home, settings, workos):
    old = login_data(SOON)
    key = write_keyfile_store(home, old)
    droid = []
    # droid's request reaches WorkOS first and droid saves, all before our rejection arrives.
    workos.script = [lambda: droid.append(droid_renews_first(home, key, workos, old))]

    login = open_login(settings, env={}, key_lookup=no_keyring)

    assert login.bearer() == droid[0]["access_token"]
    assert stored_json(home, key) == droid[0]
    assert len(workos.requests) == 1


def test_droids_save_that_lands_after_workos_rejected_us_is_awaited(home, settings, workos, monkeypatch):
    monkeypatch.setattr("alerter.credentials.refresh.DROID_SAVE_WAIT_SECONDS", 5.0)
    old = login_data(SOON)
    key = write_keyfile_store(home, old)
    droid = []

    def droid_spends_now_and_saves_later():
        workos.spent.add(old["refresh_token"])
        threading.Timer(0.2, lambda: droid.append(droid_renews_first(home, key, workos, old))).start()

    workos.script = [droid_spends_now_and_saves_later]
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == droid[0]["access_token"]
    assert stored_json(home, key) == droid[0]


# -- the run's deadline never abandons a request WorkOS has received -----------------------


def test_a_workos_answer_after_the_run_deadline_is_awaited_and_installed(home, workos):
    key = write_keyfile_store(home, login_data(-HOUR))
    workos.answer_delay = 2.0  # the token is spent on arrival; the answer comes after the deadline
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.5
    )
    login = open_login(settings, env={}, key_lookup=no_keyring)
    (pair,) = workos.issued
    assert login.bearer() == pair["access_token"]
    assert stored_json(home, key)["refresh_token"] == pair["refresh_token"]
    assert not [p.name for p in home.iterdir() if p.name.startswith((".auth", "auth.v2.write"))]


# -- a rejection is "login ended" only when no renewal may be in flight elsewhere --------------


def test_a_rejection_while_the_access_token_is_valid_is_transient_and_the_token_is_used(
    home, settings, workos
):
    old = login_data(SOON)  # droid renews it too (within 60 s of expiry), maybe right now
    key = write_keyfile_store(home, old)
    workos.spent.add(old["refresh_token"])  # droid's request reached WorkOS first
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == old["access_token"]
    assert login.memory.dead is None  # the token is sent again next run, once droid saved or not
    assert stored_json(home, key) == old


def test_a_rejection_while_droid_holds_its_lock_is_not_the_end_of_the_login(home, settings, workos):
    old = login_data(-HOUR)  # expired: only the lock says droid is at work
    write_keyfile_store(home, old)
    droid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = home / "auth.v2.write.lock"
        lock.mkdir()
        (lock / "owner.json").write_text(json.dumps({"token": "droids", "pid": droid.pid}))
        workos.spent.add(old["refresh_token"])
        with pytest.raises(UpstreamError, match="is writing droid's store") as err:
            open_login(settings, env={}, key_lookup=no_keyring)
        assert "log in again" not in str(err.value)
    finally:
        droid.kill()
        droid.wait()


def test_a_rejection_after_droids_store_changed_is_not_the_end_of_the_login(home, settings, workos):
    old = login_data(-HOUR)
    key = write_keyfile_store(home, old)

    # droid rewrites its store while our request is at WorkOS (same token: droid's own
    # renewal is still on its way).
    def droid_rewrites_its_store() -> None:
        workos.spent.add(old["refresh_token"])
        write_envelope_store(home / "auth.v2.file", old, key)

    workos.script = [droid_rewrites_its_store]
    with pytest.raises(UpstreamError, match="store changed since it was read"):
        open_login(settings, env={}, key_lookup=no_keyring)


def test_a_dead_writers_lock_does_not_hide_the_end_of_the_login(home, settings, workos):
    old = login_data(-HOUR)
    write_keyfile_store(home, old)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pending = home / "auth.v2.write.0123456789abcdef0123456789abcdef.pending"
    pending.mkdir()
    (pending / "owner.json").write_text(json.dumps({"token": "t", "pid": int(gone.stdout)}))
    workos.spent.add(old["refresh_token"])
    with pytest.raises(AuthError, match="log in again") as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert err.value.permanent


def test_keyring_store_is_written_back_to_the_keyring_store(home, settings, workos):
    key = b"K" * 32
    write_envelope_store(home / "auth.v2.keyring", login_data(SOON), key)
    lookup = keyring_holding({"auth-encryption-key": key})
    login = open_login(settings, env={}, key_lookup=lookup)
    stored = json.loads(decrypt_envelope((home / "auth.v2.keyring").read_text(), key))
    assert stored["access_token"] == login.bearer() == workos.issued[0]["access_token"]
    assert not (home / "auth.v2.file").exists()


def test_auth_json_is_written_back_as_plain_json(home, settings, workos):
    (home / "auth.json").write_text(json.dumps(login_data(SOON)))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert json.loads((home / "auth.json").read_text())["access_token"] == login.bearer()


def test_rejected_refresh_token_is_permanent_and_store_untouched(home, settings, workos):
    write_keyfile_store(home, login_data(-HOUR))  # expired, and no renewal anywhere else
    workos.script = [(400, {"error": "invalid_grant", "error_description": "Session expired"})]
    before = (home / "auth.v2.file").read_bytes()
    with pytest.raises(AuthError, match="invalid_grant.*run `droid` to log in again") as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert err.value.permanent
    assert (home / "auth.v2.file").read_bytes() == before
    assert len(workos.requests) == 1


def test_an_error_code_with_a_line_break_is_not_repeated_in_the_one_line_error(home, settings, workos):
    write_keyfile_store(home, login_data(-HOUR))
    workos.script = [(400, {"error": "invalid_grant\n"})]  # a pattern's $ matches before it
    with pytest.raises(AuthError) as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    said = str(err.value)
    assert "\n" not in said and "invalid_grant" not in said


def test_rate_limit_is_retried_then_succeeds(home, settings, workos):
    write_keyfile_store(home, login_data(SOON))
    workos.script = [(429, {"error": "slow_down"}, {"Retry-After": "0"})]
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == workos.issued[0]["access_token"]
    assert len(workos.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [(500, {"error": "boom"}), (429, {"error": "slow_down"}), (200, "<html>portal</html>")],
    ids=["5xx", "429", "not a token pair"],
)
def test_transient_failures_until_the_deadline_are_upstream_errors(home, workos, answer):
    write_keyfile_store(home, login_data(-HOUR))
    workos.script = [answer] * 50
    before = (home / "auth.v2.file").read_bytes()
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.1
    )
    # Were the deadline ignored, the renewal would succeed once the 50 failures ran out.
    with pytest.raises(UpstreamError, match="cannot renew the Factory login"):
        open_login(settings, env={}, key_lookup=no_keyring)
    assert len(workos.requests) >= 2  # it retried
    assert (home / "auth.v2.file").read_bytes() == before
    assert not list(home.glob("*auth.v2.write*"))


def test_workos_timeout_is_an_upstream_error(home, workos, monkeypatch):
    # An answer that never comes is awaited up to the cap past the deadline, then given up.
    monkeypatch.setattr("alerter.credentials.refresh.ANSWER_CAP_SECONDS", 0.5)
    write_keyfile_store(home, login_data(-HOUR))
    workos.script = ["hang"] * 10
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.5
    )
    with pytest.raises(UpstreamError, match="did not answer"):
        open_login(settings, env={}, key_lookup=no_keyring)


def test_unreachable_workos_is_an_upstream_error(home):
    write_keyfile_store(home, login_data(-HOUR))
    settings = CredentialSettings(
        home=home,
        workos_url="http://127.0.0.1:9/user_management",
        deadline=time.monotonic() + 1,
        renew_reserve_seconds=0.1,
    )
    with pytest.raises(UpstreamError, match="cannot reach WorkOS"):
        open_login(settings, env={}, key_lookup=no_keyring)


def test_expired_token_without_refresh_token_is_permanent(home, settings, workos):
    data = login_data(-HOUR)
    del data["refresh_token"]
    write_keyfile_store(home, data)
    with pytest.raises(AuthError) as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert err.value.permanent
    assert workos.requests == []


# -- no secret in any message -----------------------------------------------------------


def all_text(caplog, errors) -> str:
    parts = [record.getMessage() for record in caplog.records]
    parts += [repr(record.args) for record in caplog.records]
    for err in errors:
        parts += ["".join(traceback.format_exception(type(err), err, err.__traceback__))]
        parts += [repr(err), str(err.__cause__), str(err.__context__)]
    return "\n".join(parts)


def test_no_secret_reaches_a_log_record_or_an_error(home, workos, caplog):
    old = login_data(SOON)
    key = write_keyfile_store(home, old)
    secrets_seen = [old["access_token"], old["refresh_token"], key.hex()]
    secrets_seen.append(base64.b64encode(key).decode())

    def settings(seconds=1.0):
        return CredentialSettings(
            home=home, workos_url=workos.url, deadline=time.monotonic() + seconds, renew_reserve_seconds=0.1
        )

    errors = []
    with caplog.at_level(logging.DEBUG):
        login = open_login(settings(), env={}, key_lookup=no_keyring)  # success
        repr(login), repr(login.identity), login.memory.dump()
        workos.script = [(500, {"error": "x"})] * 50
        with pytest.raises(UpstreamError) as err:
            open_login(settings(), env={}, key_lookup=no_keyring).renew_after_refusal()
        errors.append(err.value)
        workos.script = [(400, {"error": "invalid_grant"})]
        with pytest.raises(AuthError) as err:
            open_login(settings(), env={}, key_lookup=no_keyring).renew_after_refusal()
        errors.append(err.value)
        # A broken store, then a wrong keyring key.
        (home / "auth.v2.file").write_text(encrypt_envelope(b"not json", key))
        with pytest.raises(AuthError) as err:
            open_login(settings(), env={}, key_lookup=no_keyring)
        errors.append(err.value)
        write_envelope_store(home / "auth.v2.keyring", old, key)
        with pytest.raises(AuthError):
            open_login(settings(), env={}, key_lookup=keyring_holding({"x": key}))
    secrets_seen += [pair[name] for pair in workos.issued for name in pair]
    text = all_text(caplog, errors)
    assert caplog.records, "expected some log records to check"
    for secret in secrets_seen:
        assert secret not in text


def test_a_renewal_that_cannot_be_installed_is_used_now_and_installed_by_the_next_run(home, settings, workos):
    old = login_data(SOON)
    key = write_keyfile_store(home, old)
    store = home / "auth.v2.file"
    saved = store.read_bytes()

    def block_the_store():  # while WorkOS answers, the store becomes unreadable
        store.unlink()
        store.mkdir()

    workos.script = [block_the_store]
    login = open_login(settings, env={}, key_lookup=no_keyring)
    new = workos.issued[0]
    assert login.bearer() == new["access_token"]
    (staged,) = home.glob(".auth.v2.file.renewed-*")
    assert json.loads(decrypt_envelope(staged.read_text(), key))["refresh_token"] == new["refresh_token"]

    store.rmdir()
    store.write_bytes(saved)  # the store is back, still holding the spent token
    again = open_login(settings, env={}, key_lookup=no_keyring)
    assert again.bearer() == new["access_token"]
    assert stored_json(home, key) == {**old, **new}
    assert len(workos.requests) == 1
    assert not list(home.glob(".auth.v2.file.*"))


def test_a_transient_failure_while_the_token_still_works_uses_it_with_a_warning(home, workos, caplog):
    data = login_data(SOON)
    write_keyfile_store(home, data)
    workos.script = [(503, {"error": "down"})] * 50
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.1
    )
    with caplog.at_level(logging.WARNING):
        login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == data["access_token"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "cannot renew the Factory login" in warning and "using the current token" in warning


@pytest.mark.parametrize(
    "body",
    ['{"access_token": "' + "a" * (2 << 20) + '"}', "[" * 100_000 + "]" * 100_000],
    ids=["2 MB answer", "nested 100000 deep"],
)
def test_an_oversized_or_absurdly_nested_workos_answer_is_refused_not_used(home, workos, body):
    write_keyfile_store(home, login_data(-HOUR))
    before = (home / "auth.v2.file").read_bytes()
    workos.script = [(200, body)] * 20
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 1, renew_reserve_seconds=0.1
    )
    with pytest.raises(UpstreamError, match="cannot renew the Factory login") as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert (home / "auth.v2.file").read_bytes() == before
    assert not list(home.glob(".auth.v2.file.*")) and not list(home.glob("*auth.v2.write*"))
