"""Exit codes, one-line errors and the status command, against the stand-in API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DAY, USAGE_PATH, usage_body
from tests.standins import Reply, free_port

M = 1_000_000


def assert_one_clean_line(err: str) -> None:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_bad_config_exits_2(app):
    app.config_path.write_text("thresholds:\n  standard: [1200]\n")
    result = app("run")
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "thresholds.standard" in result.err and str(app.config_path) in result.err


def test_missing_explicit_config_exits_2(app):
    result = app("run", "--config", str(app.home / "missing.yaml"))
    assert result.code == 2 and "config file not found" in result.err


def test_bad_command_line_exits_2(app):
    assert app("frobnicate", config=False).code == 2
    assert app("run", "--no-such-flag").code == 2


def test_no_credentials_exits_3(app):
    del app.env["FACTORY_API_KEY"]
    result = app("run")
    assert result.code == 3
    assert_one_clean_line(result.err)
    assert "run `droid` to log in" in result.err
    assert app.factory.calls() == []


def test_a_refused_token_exits_3(app):
    app.serve_usage(Reply(401, {"error": "expired"}))
    result = app("run")
    assert result.code == 3 and "HTTP 401" in result.err


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_api_key_names_the_key_and_its_fix_not_droid(app, receiver, status):
    app.write_config({"monitor": {"failures_before_alert": 1}, "notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(Reply(status, {"error": "no"}))
    app.factory.route("GET", "/api/billing/limits", Reply(status, {"error": "no"}))
    result = app("run")
    assert result.code == 3
    assert_one_clean_line(result.err)
    assert f"Factory refused FACTORY_API_KEY (HTTP {status})" in result.err
    assert "key" in result.err.split("):", 1)[1]  # the fix is about the key
    notice = receiver.messages()[0]  # the not-working notice says the same
    assert f"Factory refused FACTORY_API_KEY (HTTP {status})" in notice["message"]
    for text in (result.err, notice["title"], notice["message"]):
        assert "log in again" not in text and "run `droid`" not in text


def test_api_unreachable_exits_4(app):
    app.write_config({"factory": {"base_url": f"http://127.0.0.1:{free_port()}", "deadline_seconds": 2}})
    result = app("run")
    assert result.code == 4
    assert_one_clean_line(result.err)
    assert "unreachable" in result.err and "retry next run" in result.err


def test_server_errors_are_retried_then_exit_4(app):
    app.write_config({"factory": {"deadline_seconds": 2}})
    app.serve_usage(Reply(503, {"error": "busy"}))
    result = app("run")
    assert result.code == 4 and "HTTP 503" in result.err
    assert len(app.factory.calls()) >= 2  # retried at least once within the deadline


def test_a_transient_error_then_success_is_transparent(app):
    answers = iter([Reply(502, b"<html>bad gateway</html>"), Reply(200, usage_body(17 * M))])
    app.factory.route("GET", USAGE_PATH, lambda rec: next(answers))
    result = app("run")
    assert result.code == 0, result.err
    assert "past 80%" in result.out


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200, b"<html>maintenance</html>"), "not JSON"),
        (Reply(200, None), "empty body"),
        (Reply(200, {"error": "internal"}), "error instead of usage"),
        (Reply(200, {"usage": {"startDate": None}}), "usage.startDate"),
        (Reply(200, {"usage": {"startDate": 1, "standard": {"totalAllowance": -5}}}), "impossible value"),
        (Reply(200, [1, 2]), "not an object"),
        (Reply(400, {"error": "bad"}), "HTTP 400"),
    ],
)
def test_unusable_answers_exit_4_and_leave_state_untouched(app, reply, expected):
    app.serve_usage(usage_body(11 * M))
    assert app("run").code == 0
    before = app.state()
    app.serve_usage(reply)
    result = app("run")
    assert result.code == 4, result.err
    assert expected in result.err
    assert_one_clean_line(result.err)
    # Only the failure count (self-monitoring, issue 6) changes; what was sent does not.
    after = app.state()
    assert after.pop("health")["failures"] == 1
    before.pop("health")
    assert after == before


def test_status_shows_meters_and_sends_nothing(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(16_400_000, start=time.time() - 10 * DAY + 3600))
    result = app("status")
    assert result.code == 0, result.err
    assert "plan: Pro" in result.out
    assert "standard" in result.out and "82%" in result.out and "16.4M/20M" in result.out
    assert "login: FACTORY_API_KEY" in result.out
    assert "in 17d 0h" in result.out
    assert receiver.calls() == [] and not app.state_path.exists()
    *lines, state_line = result.out.splitlines()
    assert state_line == f"  state file: {app.state_path}"  # a path is as long as it is
    for line in lines:
        assert len(line) <= 80, line


def test_status_json_gives_the_same_data(app):
    app.serve_usage(usage_body(16_400_000))
    result = app("status", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["endpoint"] == "subscription/usage" and data["plan"] == "Pro"
    (meter,) = data["meters"]
    assert meter["id"] == "standard" and meter["used_percent"] == 82.0
    assert meter["used_tokens"] == 16_400_000 and meter["allowance_tokens"] == 20_000_000


def test_python_dash_m_and_the_console_script_run(tmp_path):
    script = Path(sys.executable).parent / "factory-usage-alert"
    for argv in ([sys.executable, "-m", "alerter", "--version"], [str(script), "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "factory-usage-alert" in done.stdout
