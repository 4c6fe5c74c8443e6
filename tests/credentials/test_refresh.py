"""Renewing droid's login with WorkOS (a stand-in on 127.0.0.1) and writing it back."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
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
    keyring_holding,
    login_data,
    no_keyring,
    write_envelope_store,
    write_keyfile_store,
)


def stored_json(home, key) -> dict:
    return json.loads(decrypt_envelope((home / "auth.v2.file").read_text(), key))


def test_token_expiring_within_the_margin_is_renewed_and_written_back(home, settings, workos):
    old = login_data(12 * HOUR, whoami={"region": "eu"}, unknown_field={"kept": True})
    key = write_keyfile_store(home, old)

    login = open_login(settings, env={}, key_lookup=no_keyring)

    new = workos.issued[0]
    assert login.bearer() == new["access_token"]
    assert login.identity.expires_at == token_expiry(new["access_token"])
    assert login.identity.region == "eu"
    assert stored_json(home, key) == {**old, **new}
    assert not list(home.glob("auth.v2.write*"))  # lock released, nothing pending

    # A second run finds a fresh token and leaves WorkOS alone.
    again = open_login(settings, env={}, key_lookup=no_keyring)
    assert again.bearer() == new["access_token"]
    assert len(workos.requests) == 1


def test_refresh_request_is_droids(home, settings, workos):
    old = login_data(1 * HOUR)
    write_keyfile_store(home, old)
    open_login(settings, env={}, key_lookup=no_keyring)
    request = workos.requests[0]
    assert request["_path"] == "/user_management/authenticate"
    assert request["_content_type"] == "application/x-www-form-urlencoded"
    assert {k: v for k, v in request.items() if not k.startswith("_")} == {
        "grant_type": "refresh_token",
        "refresh_token": old["refresh_token"],
        "client_id": CLIENT_ID,
        "organization_id": "org_A",
    }


def test_no_organization_id_is_sent_when_the_store_has_none(home, settings, workos):
    write_keyfile_store(home, login_data(1 * HOUR, active_organization_id=None))
    open_login(settings, env={}, key_lookup=no_keyring)
    assert "organization_id" not in workos.requests[0]


def test_token_outside_the_margin_is_not_renewed(home, settings, workos):
    write_keyfile_store(home, login_data(2 * DAY))
    open_login(settings, env={}, key_lookup=no_keyring)
    assert workos.requests == []


def test_margin_is_configurable(home, settings, workos):
    write_keyfile_store(home, login_data(12 * HOUR))
    open_login(dataclasses.replace(settings, refresh_margin_seconds=HOUR), env={}, key_lookup=no_keyring)
    assert workos.requests == []


def test_renewal_after_a_rejection_happens_once(home, settings, workos):
    key = write_keyfile_store(home, login_data(2 * DAY))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.refresh_after_rejection() is True
    assert login.bearer() == workos.issued[0]["access_token"]
    assert stored_json(home, key)["refresh_token"] == workos.issued[0]["refresh_token"]
    assert login.refresh_after_rejection() is False
    assert len(workos.requests) == 1


def test_when_droid_rotated_meanwhile_droids_tokens_are_used(home, settings, workos):
    key = write_keyfile_store(home, login_data(2 * DAY))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    # droid renews between our read and the API's 401.
    droids = login_data(3 * DAY)
    write_envelope_store(home / "auth.v2.file", droids, key)

    assert login.refresh_after_rejection() is True
    assert login.bearer() == droids["access_token"]
    assert workos.requests == []
    assert stored_json(home, key) == droids


def test_keyring_store_is_written_back_to_the_keyring_store(home, settings, workos):
    key = b"K" * 32
    write_envelope_store(home / "auth.v2.keyring", login_data(HOUR), key)
    lookup = keyring_holding({"auth-encryption-key": key})
    login = open_login(settings, env={}, key_lookup=lookup)
    stored = json.loads(decrypt_envelope((home / "auth.v2.keyring").read_text(), key))
    assert stored["access_token"] == login.bearer() == workos.issued[0]["access_token"]
    assert not (home / "auth.v2.file").exists()


def test_auth_json_is_written_back_as_plain_json(home, settings, workos):
    (home / "auth.json").write_text(json.dumps(login_data(HOUR)))
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert json.loads((home / "auth.json").read_text())["access_token"] == login.bearer()


def test_rejected_refresh_token_is_permanent_and_store_untouched(home, settings, workos):
    write_keyfile_store(home, login_data(HOUR))
    workos.script = [(400, {"error": "invalid_grant", "error_description": "Session expired"})]
    before = (home / "auth.v2.file").read_bytes()
    with pytest.raises(AuthError, match="invalid_grant.*run `droid` to log in again") as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert err.value.permanent
    assert (home / "auth.v2.file").read_bytes() == before
    assert len(workos.requests) == 1


def test_rate_limit_is_retried_then_succeeds(home, settings, workos):
    write_keyfile_store(home, login_data(HOUR))
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
    write_keyfile_store(home, login_data(HOUR))
    workos.script = [answer] * 50
    before = (home / "auth.v2.file").read_bytes()
    settings = CredentialSettings(home=home, workos_url=workos.url, deadline=time.monotonic() + 1)
    # Were the deadline ignored, the renewal would succeed once the 50 failures ran out.
    with pytest.raises(UpstreamError, match="cannot renew the Factory login"):
        open_login(settings, env={}, key_lookup=no_keyring)
    assert len(workos.requests) >= 2  # it retried
    assert (home / "auth.v2.file").read_bytes() == before
    assert not list(home.glob("auth.v2.write*"))


def test_workos_timeout_is_an_upstream_error(home, workos):
    write_keyfile_store(home, login_data(HOUR))
    workos.script = ["hang"] * 10
    settings = CredentialSettings(
        home=home, workos_url=workos.url, timeout_seconds=0.2, deadline=time.monotonic() + 1
    )
    with pytest.raises(UpstreamError, match="did not answer"):
        open_login(settings, env={}, key_lookup=no_keyring)


def test_unreachable_workos_is_an_upstream_error(home):
    write_keyfile_store(home, login_data(HOUR))
    settings = CredentialSettings(
        home=home, workos_url="http://127.0.0.1:9/user_management", deadline=time.monotonic() + 1
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
    old = login_data(HOUR)
    key = write_keyfile_store(home, old)
    secrets_seen = [old["access_token"], old["refresh_token"], key.hex()]
    secrets_seen.append(base64.b64encode(key).decode())

    def settings(seconds=1.0):
        return CredentialSettings(home=home, workos_url=workos.url, deadline=time.monotonic() + seconds)

    errors = []
    with caplog.at_level(logging.DEBUG):
        login = open_login(settings(), env={}, key_lookup=no_keyring)  # success
        repr(login), repr(login.identity)
        workos.script = [(500, {"error": "x"})] * 50
        with pytest.raises(UpstreamError) as err:
            login.refresh_after_rejection()
        errors.append(err.value)
        workos.script = [(400, {"error": "invalid_grant"})]
        with pytest.raises(AuthError) as err:
            open_login(settings(), env={}, key_lookup=no_keyring).refresh_after_rejection()
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


def test_renewal_that_cannot_be_saved_is_permanent(home, settings, workos):
    write_keyfile_store(home, login_data(HOUR))

    def block_the_store():  # while WorkOS answers, the file becomes unreplaceable
        (home / "auth.v2.file").unlink()
        (home / "auth.v2.file").mkdir()
        (home / "auth.v2.file" / "x").touch()

    workos.script = [block_the_store]
    with pytest.raises(AuthError, match="refresh token is spent") as err:
        open_login(settings, env={}, key_lookup=no_keyring)
    assert err.value.permanent
    assert not list(home.glob(".auth.v2.file.*.tmp"))
