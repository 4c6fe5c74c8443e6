"""Secrets never reach error text: config mistakes and Factory's own error messages.

A config value quoted in an error is masked (it may be a channel URL with a password, a
ping key or a token put in the wrong place), and what Factory says in an error field is
stripped of anything token-like before it reaches stderr, the state or a notification.
"""

from __future__ import annotations

import json

import pytest

from tests.standins import Reply

CONFIG_SECRETS = {
    "password with a slash": "Pa55/w0rdX",
    "path token": "t0kenPathX",
    "ping key": "0b3c8e2a-9d1f-4c5e-8a7b-5ecre7uuid",
    "apprise password": "hunter2X",
    "misplaced key": "fk-0123456789SECRET",
    "channel token": "T00000000/B00000000/XXXXXXXXXXXXXXXX",
}


def secret_config() -> dict:
    s = CONFIG_SECRETS
    return {
        "factory": {
            "base_url": f"http://user:{s['password with a slash']}@api.example.com/{s['path token']}",
            "workos_url": f"ftp://bob:{s['apprise password']}@example.com/",
            "source": s["misplaced key"],
        },
        "healthcheck_url": f"http://hc-ping.com/{s['ping key']}",
        "monitor": {"reset_notice": f"https://hooks.slack.com/services/{s['channel token']}"},
    }


@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_a_config_error_quoting_secret_urls_shows_none_of_them(app, command):
    app.write_config(secret_config())
    result = app(command)
    assert result.code == 2, result.err
    for problem in (
        "At 'factory.base_url': use https://",
        "At 'factory.workos_url': must be an http(s) URL, not 'ftp://***'",
        "At 'factory.source': must be one of auto, limits, allowance, not 'fk-***'",
        "At 'healthcheck_url': use https:// ('http://hc-ping.com/***' is plain http://",
        "At 'monitor.reset_notice': must be true or false, not 'https://hooks.slack.com/***'",
    ):
        assert problem in result.err, (problem, result.err)
    for name, secret in CONFIG_SECRETS.items():
        for piece in {secret, *secret.split("/"), secret.split("-")[-1]}:
            assert piece not in result.out + result.err, (name, piece)


SHORT_SECRETS = {"ping key": "k3yShort", "channel password": "pw9", "query token": "sh0rt"}


def test_a_config_error_shows_no_short_secret_from_a_mistyped_url(app):
    s = SHORT_SECRETS
    app.write_config(
        {
            "healthcheck_url": f"https:/hc-ping.com/{s['ping key']}",  # one slash short
            "factory": {"base_url": f"api.example.com/?token={s['query token']}"},  # no scheme
            "monitor": {"reset_notice": f"bob:{s['channel password']}@mail"},
        }
    )
    result = app("check-config")
    assert result.code == 2, result.err
    for problem in ("At 'healthcheck_url'", "At 'factory.base_url'", "At 'monitor.reset_notice'"):
        assert problem in result.err, (problem, result.err)
    for name, secret in SHORT_SECRETS.items():
        assert secret not in result.out + result.err, name


def test_plain_http_to_another_host_is_refused_with_the_fix(app):
    app.write_config({"factory": {"base_url": "http://api.factory.ai"}})
    result = app("check-config")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0] == (
        f"{app.config_path}: At 'factory.base_url': use https:// ('http://api.factory.ai' is plain "
        "http://, which is allowed only to 127.0.0.0/8, ::1 or localhost)"
    )
    assert lines[-1] == "factory-usage-alert: 1 problem in the config"


JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyXzAxSDQ1In0."
    "c2lnbmF0dXJlLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tbWF0dGVy"
)
FACTORY_KEY = "fk-live-8d7f6e5a4b3c2d1eSECRET"
EMAIL_USER = "alice.smith"


@pytest.mark.parametrize("field", ["error", "message"])
def test_a_factory_error_holding_a_token_is_redacted_everywhere(app, receiver, field):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "monitor": {"failures_before_alert": 1}})
    text = f"token {JWT} for key {FACTORY_KEY} ({EMAIL_USER}@example.com) was rejected"
    app.serve_usage(Reply(200, {field: text}))
    result = app("run")

    assert result.code == 4, result.err
    lines = [line for line in result.err.splitlines() if "error instead of usage" in line]
    assert len(lines) == 1, result.err
    assert "token *** for key fk-*** (***@example.com) was rejected" in lines[0]
    state = app.state_path.read_text()
    assert "fk-***" in json.loads(state)["health"]["last_error"]
    messages = [call.body.decode() for call in receiver.calls("POST", "/notify")]
    assert len(messages) == 1 and "error instead of usage" in messages[0]
    for secret in (JWT, *JWT.split("."), FACTORY_KEY, FACTORY_KEY[3:], EMAIL_USER):
        for where in (result.out, result.err, state, *messages):
            assert secret not in where, secret


def test_a_factory_error_quoting_the_api_key_across_two_lines_shows_no_piece_of_it(app, receiver):
    """An error text wrapped at a fixed width cuts the key the job sent in two: the piece
    after ``fk-`` was too short for any pattern, and reached stderr, the state and the
    notification. The key the job sent is hidden in whatever shape it comes back."""
    from tests.conftest import API_KEY

    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "monitor": {"failures_before_alert": 1}})
    head, tail = API_KEY[:13], API_KEY[13:]
    app.serve_usage(Reply(200, {"error": f"the API key {head}\n{tail} is revoked"}))
    result = app("run")

    assert result.code == 4, result.err
    assert "the API key *** is revoked" in result.err
    state = app.state_path.read_text()
    messages = [call.body.decode() for call in receiver.calls("POST", "/notify")]
    assert len(messages) == 1 and "the API key *** is revoked" in messages[0]
    for where in (result.out, result.err, state, *messages):
        assert tail not in where and head[3:] not in where
