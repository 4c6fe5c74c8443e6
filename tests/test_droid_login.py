"""The job on droid's own login: refresh, write-back, the real droid, expiry, secrets."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from alerter.config import EU_BASE_URL, build_config
from alerter.credentials.identity import token_expiry
from alerter.credentials.store import decrypt_envelope
from alerter.factory import connect
from tests.conftest import USAGE_PATH, python_path, same_clock, usage_body
from tests.credentials.helpers import DAY, HOUR, SOON, login_data, write_keyfile_store
from tests.credentials.test_droid_interop import DROID, droid_doctor, iso_ms
from tests.standins import Reply

M = 1_000_000
EXAMPLE_TRACE = Path(__file__).resolve().parent.parent / "alerter" / "sample-month.jsonl"


@pytest.fixture
def droid_app(app, workos, receiver):
    """The app with no API key: droid's file store under $HOME/.factory, WorkOS stand-in."""
    del app.env["FACTORY_API_KEY"]
    del app.env["FACTORY_HOME_OVERRIDE"]
    app.write_config({"factory": {"workos_url": workos.url}, "notify": {"urls": [receiver.apprise_url]}})
    app.store = app.home / ".factory"
    return app


def stored_tokens(app) -> dict:
    return json.loads(decrypt_envelope((app.store / "auth.v2.file").read_text(), app.store_key))


def test_a_login_near_expiry_is_refreshed_written_back_and_used(droid_app, workos, receiver):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(SOON, whoami={"region": "us"}))
    before = stored_tokens(app)
    app.serve_usage(usage_body(17 * M))

    result = app("run")
    assert result.code == 0, result.err
    assert len(workos.requests) == 1
    after = stored_tokens(app)
    assert after["refresh_token"] == workos.issued[0]["refresh_token"] != before["refresh_token"]
    assert after["whoami"] == {"region": "us"} and after["active_organization_id"] == "org_A"
    (call,) = app.factory.calls("GET", USAGE_PATH)
    assert call.headers["authorization"] == f"Bearer {after['access_token']}"
    assert call.query["userId"] == "user_01ALICE"
    assert len(receiver.messages()) == 1

    if DROID is not None:  # the real droid loads what the job wrote
        report = droid_doctor(app.home, workos.url)
        assert report["auth.credentials"]["status"] == "pass"
        expected = iso_ms(token_expiry(after["access_token"]))
        assert f"access token valid until {expected}" in report["auth.tokenExpiry"]["detail"]

    refreshes = len(workos.requests)  # droid doctor probes WorkOS too
    assert app("run").code == 0
    assert len(workos.requests) == refreshes  # the new token is days from expiry: no refresh
    assert len(receiver.messages()) == 1


def test_a_rejected_token_is_refreshed_once_and_the_request_repeated(droid_app, workos):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(5 * DAY))
    old = stored_tokens(app)["access_token"]
    app.factory.route(
        "GET",
        USAGE_PATH,
        lambda rec: (
            Reply(401, {"error": "expired"})
            if old in rec.headers["authorization"]
            else Reply(200, usage_body(M))
        ),
    )
    result = app("run")
    assert result.code == 0, result.err
    assert len(workos.requests) == 1 and len(app.factory.calls("GET", USAGE_PATH)) == 2


def test_an_expired_login_is_notified_once_until_a_login_works_again(droid_app, workos, receiver):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(-HOUR))
    workos.script = [(400, {"error": "invalid_grant"})] * 3
    app.serve_usage(usage_body(M))
    for _ in range(2):
        result = app("run")
        assert result.code == 3, result.err
        assert "droid" in result.err
    (msg,) = receiver.messages()
    assert msg["title"] == "Factory login expired: run `droid` to log in again"
    assert msg["type"] == "failure"
    assert app.factory.calls() == []

    app.store_key = write_keyfile_store(app.store, login_data(5 * DAY))  # the user logged in
    assert app("run").code == 0
    app.store_key = write_keyfile_store(app.store, login_data(-HOUR))
    assert app("run").code == 3
    assert len(receiver.messages()) == 2


def test_workos_down_exits_4_without_notifying(droid_app, workos, receiver):
    app = droid_app
    app.write_config({"factory": {"workos_url": workos.url, "deadline_seconds": 2}})
    app.store_key = write_keyfile_store(app.store, login_data(-HOUR))
    workos.script = [(503, {"error": "down"})] * 20
    result = app("run")
    assert result.code == 4, result.err
    assert receiver.messages() == []


def test_status_names_the_source_the_masked_email_the_org_and_the_expiry(droid_app):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(3 * DAY))
    app.serve_usage(usage_body(M))
    result = app("status")
    assert result.code == 0, result.err
    login = next(line for line in result.out.splitlines() if line.startswith("login:"))
    assert "auth.v2.file" in login and "a***@example.com" in login and "org org_A" in login
    assert "token valid until" in login and "(in 2d 23h)" in login
    data = json.loads(app("status", "--json").out)
    assert data["login"]["source"] == "auth.v2.file" and data["login"]["email"] == "a***@example.com"


def test_eu_logins_use_the_eu_api_unless_base_url_is_set(tmp_path):
    store = tmp_path / ".factory"
    write_keyfile_store(store, login_data(5 * DAY, whoami={"region": "eu"}))
    env = {"HOME": str(tmp_path)}
    deadline = time.monotonic() + 5
    assert connect(build_config({}, None, env), env, deadline).base_url == EU_BASE_URL
    pinned = build_config({"factory": {"base_url": "https://api.factory.ai"}}, None, env)
    assert connect(pinned, env, deadline).base_url == "https://api.factory.ai"


def test_no_secret_reaches_output_logs_state_or_notifications(droid_app, workos, receiver):
    app = droid_app
    data = login_data(12 * HOUR)
    app.store_key = write_keyfile_store(app.store, data)
    channel_secret = "chan-pw-S3CRET"
    url = receiver.apprise_url.replace("json://", f"json://bob:{channel_secret}@")
    app.write_config({"factory": {"workos_url": workos.url}, "notify": {"urls": [url]}})
    app.serve_usage(usage_body(19_500_000))
    seen = []
    commands = (
        ["run", "-v"],
        ["run", "-vv", "--dry-run"],
        ["status", "-v"],
        ["status", "-v", "--json"],
        ["check-config", "-v"],
        ["test-notify", "-v"],
        ["history", "-v", "--jsonl"],
        ["backtest", "-v", str(EXAMPLE_TRACE)],
    )
    for argv in commands:
        result = app(*argv)
        assert result.code == 0, (argv, result.err)
        seen += [result.out, result.err]
    init = app("init", "-v", "--config", str(app.home / "new" / "config.yaml"))
    assert init.code == 0, init.err
    seen += [init.out, init.err]
    app.serve_usage(Reply(401, {"error": "no"}))
    workos.script = [(400, {"error": "invalid_grant"})]
    seen += [app("run", "-vv").err]  # the failure paths log the most
    assert len(receiver.messages()) == 3  # the alert, the test message, the login-expired notice
    seen += [app.state_path.read_text(), json.dumps(receiver.messages())]
    renewed = stored_tokens(app)
    secrets = [
        data["access_token"],
        data["refresh_token"],
        renewed["access_token"],
        renewed["refresh_token"],
        base64.b64encode(app.store_key).decode(),
        channel_secret,
        "alice@example.com",
    ]
    blob = "\n".join(seen)
    for secret in secrets:
        assert secret not in blob
    assert "a***@example.com" in blob  # the masked form is what appears


@pytest.mark.parametrize("token", ["rt-secret-0123456789abcdef01234567", "Zq9sh0rt"])
def test_a_workos_that_echoes_the_refresh_token_in_its_error_leaks_it_nowhere(
    droid_app, workos, receiver, token
):
    """A WorkOS (or a proxy in front of it) that quotes the refresh token back, in ``error``
    (which looks like an error code) or in ``error_description``, however short it is."""
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(-HOUR, refresh_token=token))
    workos.script = [(400, {"error": token, "error_description": f"bad refresh_token {token}"})]
    app.serve_usage(usage_body(M))
    result = app("run", "-vv")
    assert result.code == 3, result.err
    assert "WorkOS rejected the refresh token (HTTP 400, ***)" in result.err
    blob = result.out + result.err + app.state_path.read_text() + json.dumps(receiver.messages())
    assert token not in blob


def test_a_refusal_that_outlives_a_renewal_does_not_renew_again_on_later_runs(droid_app, workos, receiver):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(2 * DAY))
    app.serve_usage(Reply(401, {"error": "unauthorized"}))
    first = app("run")
    assert first.code == 3
    assert f"Factory refused droid's login from {app.store / 'auth.v2.file'} (HTTP 401)" in first.err
    assert "FACTORY_API_KEY" not in first.err
    assert len(workos.requests) == 1  # renewed once, refused again
    renewed = stored_tokens(app)["access_token"]
    for _ in range(2):
        later = app("run")
        assert later.code == 3, later.err
    assert len(workos.requests) == 1  # the same refused token is not renewed on every run
    calls = app.factory.calls("GET", USAGE_PATH)
    assert [c.headers["authorization"] for c in calls[-2:]] == [f"Bearer {renewed}"] * 2
    # Not "login expired": the login is live and Factory refuses it; three failed runs in a
    # row give the usual "not working" notice.
    titles = [m["title"] for m in receiver.messages()]
    assert titles == ["factory-usage-alert: usage alerts are not working"]


def test_a_dry_run_never_renews_nor_writes_droids_store(droid_app, workos, receiver):
    app = droid_app
    app.store_key = write_keyfile_store(app.store, data := login_data(SOON))
    before = (app.store / "auth.v2.file").read_bytes()
    app.serve_usage(usage_body(17 * M))
    result = app("run", "--dry-run")
    assert result.code == 0, result.err
    assert "[dry-run] would send" in result.out
    (call,) = app.factory.calls("GET", USAGE_PATH)
    assert call.headers["authorization"] == f"Bearer {data['access_token']}"

    app.store_key = write_keyfile_store(app.store, login_data(-HOUR))
    before = (app.store / "auth.v2.file").read_bytes()
    expired = app("run", "--dry-run")
    assert expired.code == 3
    assert "needs renewing" in expired.err and "a dry run never does" in expired.err
    assert workos.requests == [] and receiver.messages() == []
    assert (app.store / "auth.v2.file").read_bytes() == before
    assert sorted(p.name for p in app.store.iterdir()) == ["auth.v2.file", "auth.v2.key"]


def test_the_steady_path_reads_the_token_claims_from_the_state_not_with_pyjwt(droid_app, tmp_path):
    import os
    import subprocess
    import sys

    app = droid_app
    app.store_key = write_keyfile_store(app.store, login_data(5 * DAY))
    app.serve_usage(usage_body(M))
    env = {**app.env, **same_clock(), "PYTHONPATH": python_path(str(Path(__file__).resolve().parent.parent))}
    argv = [sys.executable, "-X", "importtime", "-m", "alerter", "run", "--config", str(app.config_path)]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert " jwt" in first.stderr  # a token seen for the first time is decoded with pyjwt
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert " jwt" not in second.stderr
    assert "alice" not in app.state_path.read_text()
    assert os.environ.get("FACTORY_API_KEY") is None or "FACTORY_API_KEY" not in env


def test_a_dry_run_after_an_expired_login_shows_what_the_real_run_sends(droid_app, workos, receiver):
    # A real run learnt that WorkOS rejected droid's refresh token for good and said so once.
    # The dry run after it must show what the next real run sends (nothing new), not a
    # "not working" notice for a login it merely declined to renew.
    app = droid_app
    app.write_config(
        {
            "factory": {"workos_url": workos.url},
            "notify": {"urls": [receiver.apprise_url]},
            "monitor": {"failures_before_alert": 2},
        }
    )
    app.store_key = write_keyfile_store(app.store, login_data(-HOUR))
    workos.script = [(400, {"error": "invalid_grant"})] * 3
    assert app("run").code == 3
    assert [m["title"] for m in receiver.messages()] == ["Factory login expired: run `droid` to log in again"]

    dry = app("run", "--dry-run")
    real = app("run")
    assert real.code == 3, real.err
    sent = [m["title"] for m in receiver.messages()[1:]]
    shown = [line for line in dry.out.splitlines() if line.startswith("[dry-run] would send")]
    assert sent == [] and shown == []
    assert dry.code == real.code
    assert len(workos.requests) == 1  # the rejected token is never sent again
