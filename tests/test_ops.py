"""Operations end to end: self-monitoring, healthcheck pings, metrics, and the setup commands.

Factory is the local stand-in (answering 500, or not listening at all, for the failed
runs); notifications arrive at the real json:// and SMTP receivers; ``app.now`` moves the
wall clock, so nothing sleeps.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from tests.conftest import DAY, LIMITS_PATH, at_local, usage_body
from tests.standins import Reply, StandIn, free_port

M = 1_000_000
HOUR = 3600
T0 = 1_780_000_000.0  # a fixed wall clock: 2026-05-28 20:26:40 UTC
DOWN = Reply(500, {"error": "internal"}, headers={"Retry-After": "3600"})  # no retry within the deadline


def titles(receiver) -> list[str]:
    return [m["title"] for m in receiver.messages()]


def limits_body(percent: float, window_end: float) -> dict:
    """A billing/limits answer with one 5-hour window."""
    return {
        "limits": {
            "standard": {"fiveHour": {"usedPercent": percent, "windowEnd": int(window_end * 1000)}},
        },
        "usesTokenRateLimitsBilling": True,
    }


@pytest.fixture
def healthchecks():
    server = StandIn().start()
    for path in ("/ping/abc", "/ping/abc/start", "/ping/abc/fail"):
        server.route("GET", path, Reply(200, b"OK"))
    yield server
    server.stop()


# --- stale data: "not working" once, "working again" once ----------------------------------


def test_api_down_three_runs_sends_one_not_working_and_one_working_again(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    start = T0 - 5 * DAY
    app.now = T0
    app.serve_usage(usage_body(16 * M, start=start))
    assert app("run").code == 0
    assert titles(receiver) == ["Factory standard at 80% (past 80%)"]

    app.serve_usage(DOWN)
    for i in range(1, 6):
        app.now = T0 + i * 900
        result = app("run")
        assert result.code == 4, result.err
        assert "HTTP 500" in result.err
        assert len(receiver.messages()) == (1 if i < 3 else 2), (i, titles(receiver))
        # the log names what was sent in the words the channel shows, not the ledger's
        told = 'sent "factory-usage-alert: usage alerts are not working" to json://'
        assert (told in result.out) == (i == 3), result.out
        assert "stale" not in result.out
    stale = receiver.messages()[1]
    assert stale["title"] == "factory-usage-alert: usage alerts are not working"
    assert "Usage alerts are not working: Factory API answered HTTP 500" in stale["message"]
    assert "3 runs in a row" in stale["message"]
    assert stale["type"] == "warning"

    app.serve_usage(usage_body(16 * M, start=start))
    app.now = T0 + 6 * 900
    assert app("run").code == 0
    assert titles(receiver)[2] == "factory-usage-alert: usage alerts are working again"
    assert "after 5 failed runs" in receiver.messages()[2]["message"]
    app.now = T0 + 7 * 900
    assert app("run").code == 0
    assert len(receiver.messages()) == 3  # and the 80 % alert was not repeated


def test_a_factory_that_is_not_listening_counts_as_a_failed_run(app, receiver):
    down = f"http://127.0.0.1:{free_port()}"
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "factory": {"base_url": down, "deadline_seconds": 1},
            "monitor": {"failures_before_alert": 1},
        }
    )
    result = app("run")
    assert result.code == 4
    assert "unreachable" in result.err
    (msg,) = receiver.messages()
    assert "not working" in msg["title"] and "unreachable" in msg["message"]
    assert "never read yet" in msg["message"]


def test_failed_runs_never_rearm_or_fire_usage_alerts(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "monitor": {"failures_before_alert": 100}})
    start = T0 - 5 * DAY
    app.now = T0
    app.serve_usage(usage_body(17 * M, start=start))
    assert app("run").code == 0
    meters_before = app.state()["meters"]
    app.serve_usage(DOWN)
    for i in range(3):
        app.now = T0 + (i + 1) * 900
        assert app("run").code == 4
    assert app.state()["meters"] == meters_before
    assert app.state()["health"]["failures"] == 3
    app.serve_usage(usage_body(17 * M, start=start))
    app.now = T0 + 4 * 900
    assert app("run").code == 0
    assert len(receiver.messages()) == 1  # neither repeated nor re-armed by the failures


def test_hours_without_success_alerts_on_a_rare_schedule(app, receiver):
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "monitor": {"failures_before_alert": 10, "hours_without_success": 24},
        }
    )
    app.now = T0
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    app.serve_usage(DOWN)
    app.now = T0 + 12 * HOUR
    assert app("run").code == 4
    assert receiver.messages() == []
    app.now = T0 + 25 * HOUR
    assert app("run").code == 4
    (msg,) = receiver.messages()
    assert "2 runs in a row" in msg["message"] and "last successful read" in msg["message"]


def test_a_channel_that_missed_the_not_working_notice_gets_it_on_a_later_failed_run(app, receiver, smtp):
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url, smtp.apprise_url]},
            "monitor": {"failures_before_alert": 1},
        }
    )
    app.serve_usage(DOWN)
    receiver.fail = True
    app.now = T0
    assert app("run").code == 4
    assert len(smtp.messages) == 1
    receiver.fail = False
    app.now = T0 + 900
    assert app("run").code == 4
    assert len(smtp.messages) == 1  # not repeated
    # the failed POST and its retry (the receiver records both)
    assert titles(receiver) == ["factory-usage-alert: usage alerts are not working"] * 2
    app.serve_usage(usage_body(1 * M))
    app.now = T0 + 1800
    assert app("run").code == 0
    assert "working again" in smtp.messages[1]["Subject"]
    assert "working again" in titles(receiver)[-1]


# --- healthcheck pings -------------------------------------------------------------------


def test_healthcheck_pings_start_and_success_or_fail(app, healthchecks):
    app.write_config({"healthcheck_url": healthchecks.url + "/ping/abc"})
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    assert [c.path for c in healthchecks.calls()] == ["/ping/abc/start", "/ping/abc"]
    app.serve_usage(DOWN)
    assert app("run").code == 4
    assert [c.path for c in healthchecks.calls()][2:] == ["/ping/abc/start", "/ping/abc/fail"]


def test_a_healthcheck_url_with_a_query_gets_the_event_in_its_path(app, healthchecks):
    """healthchecks.io takes `<ping key>/<slug>?create=1`: /start and /fail belong to the
    path; appended after the query they would ping the success URL with an odd query."""
    app.write_config({"healthcheck_url": healthchecks.url + "/ping/key/my-job/?create=1"})
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    app.serve_usage(DOWN)
    assert app("run").code == 4
    calls = [(c.path, c.query) for c in healthchecks.calls()]
    paths = ["/ping/key/my-job/start", "/ping/key/my-job", "/ping/key/my-job/start", "/ping/key/my-job/fail"]
    assert calls == [(path, {"create": "1"}) for path in paths]


def test_dry_run_does_not_ping(app, healthchecks):
    app.write_config({"healthcheck_url": healthchecks.url + "/ping/abc"})
    app.serve_usage(usage_body(1 * M))
    assert app("run", "--dry-run").code == 0
    assert healthchecks.calls() == []


def test_a_failed_ping_never_fails_the_job(app):
    app.write_config({"healthcheck_url": f"http://127.0.0.1:{free_port()}/ping/abc"})
    app.serve_usage(usage_body(1 * M))
    result = app("run")
    assert result.code == 0
    assert "healthcheck start ping to http://127.0.0.1" in result.err and "/***" in result.err
    assert "abc" not in result.err


# --- reset notices, reminders, quiet hours ------------------------------------------------


def test_reset_notice_after_a_used_up_window(app, receiver):
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "factory": {"endpoint": "limits"},
            "monitor": {"reset_notice": True},
        }
    )
    app.now = T0
    end = T0 + 2 * HOUR
    app.factory.route("GET", LIMITS_PATH, Reply(200, limits_body(100, end)))
    assert app("run").code == 0
    assert titles(receiver) == ["Factory standard.5h at 100%: standard 5-hour limit used up"]
    app.now = end + 60  # the window is over; Factory still names the old end
    assert app("run").code == 0
    assert titles(receiver)[-1] == "Factory standard.5h reset, you are back to 0%"
    app.now = end + 960
    app.factory.route("GET", LIMITS_PATH, Reply(200, limits_body(3, end + 5 * HOUR)))
    assert app("run").code == 0
    assert len(receiver.messages()) == 2  # once


def test_no_reset_notice_by_default(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "factory": {"endpoint": "limits"}})
    app.now = T0
    end = T0 + HOUR
    app.factory.route("GET", LIMITS_PATH, Reply(200, limits_body(100, end)))
    assert app("run").code == 0
    app.now = end + 60
    app.factory.route("GET", LIMITS_PATH, Reply(200, limits_body(1, end + 5 * HOUR)))
    assert app("run").code == 0
    assert len(receiver.messages()) == 1


def test_reminders_repeat_a_used_up_window_until_it_resets(app, receiver):
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "factory": {"endpoint": "limits"},
            "monitor": {"reminder_hours": 2},
        }
    )
    end = T0 + 4 * HOUR + 1800
    app.factory.route("GET", LIMITS_PATH, Reply(200, limits_body(100, end)))
    for minutes in range(0, 5 * 60, 15):
        app.now = T0 + minutes * 60
        assert app("run").code == 0
    got = titles(receiver)
    assert got[0].endswith("used up")
    assert got[1:] == ["Reminder: Factory standard.5h still at 100%"] * 2  # at +2 h and +4 h
    assert receiver.messages()[1]["type"] == "failure"


def test_quiet_hours_hold_non_critical_until_they_end_and_let_critical_through(app, receiver):
    app.write_config(
        {"notify": {"urls": [receiver.apprise_url]}, "quiet_hours": {"start": "22:00", "end": "07:00"}}
    )
    night = at_local(2026, 5, 29, 23)  # 23:00 local time
    start = night - 5 * DAY
    app.now = night
    app.serve_usage(usage_body(17 * M, start=start))
    result = app("run")
    assert result.code == 0
    assert receiver.messages() == []
    assert "quiet hours: holding 1 notification(s) until 07:00" in result.out
    app.now = night + HOUR
    app.serve_usage(usage_body(20 * M, start=start))
    assert app("run").code == 0
    assert titles(receiver) == ["Factory standard at 100%: standard token allowance used up"]
    app.serve_usage(DOWN)  # a failed run in between loses nothing
    app.now = night + 2 * HOUR
    assert app("run").code == 4
    app.serve_usage(usage_body(20 * M, start=start))
    app.now = night + 8 * HOUR + 60  # 07:01
    assert app("run").code == 0
    assert len(receiver.messages()) == 1  # 80 % is below the 100 % already sent: nothing owed
    assert [e["level"] for e in app.state()["ledger"] if e["kind"] == "threshold"] == [100.0]


def test_a_held_warning_is_delivered_after_quiet_hours(app, receiver):
    app.write_config(
        {"notify": {"urls": [receiver.apprise_url]}, "quiet_hours": {"start": "22:00", "end": "07:00"}}
    )
    night = at_local(2026, 5, 29, 23)
    start = night - 5 * DAY
    app.serve_usage(usage_body(17 * M, start=start))
    for hours in (0, 2, 5):
        app.now = night + hours * HOUR
        assert app("run").code == 0
    assert receiver.messages() == []
    app.now = night + 8 * HOUR + 60
    assert app("run").code == 0
    assert titles(receiver) == ["Factory standard at 85% (past 80%)"]


# --- Prometheus textfile -----------------------------------------------------------------


def test_prometheus_textfile_after_each_run(app, tmp_path):
    prom = tmp_path / "textfile" / "factory_usage.prom"
    prom.parent.mkdir()
    app.now = T0
    app.serve_usage(usage_body(16 * M, start=T0 - 5 * DAY))
    assert app("run", "--prometheus-textfile", str(prom)).code == 0
    text = prom.read_text()
    assert 'factory_usage_used_ratio{meter="standard"} 0.8\n' in text
    assert f'factory_usage_seconds_to_reset{{meter="standard"}} {22 * DAY}\n' in text
    assert f"factory_usage_alert_last_success_timestamp_seconds {int(T0)}\n" in text
    assert "factory_usage_alert_last_run_success 1\n" in text
    assert "# TYPE factory_usage_used_ratio gauge" in text
    # one reading: the pace is the period's average (80 % in 5 days), 22 days to go
    assert 'factory_usage_projected_ratio_at_reset{meter="standard"} 4.32\n' in text
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
    assert [p.name for p in prom.parent.iterdir()] == ["factory_usage.prom"]

    app.write_config({"prometheus_textfile": str(prom)})  # the config key does the same
    app.serve_usage(DOWN)
    app.now = T0 + 900
    assert app("run").code == 4
    text = prom.read_text()
    assert "factory_usage_used_ratio" not in text
    assert f"factory_usage_alert_last_success_timestamp_seconds {int(T0)}\n" in text
    assert "factory_usage_alert_last_run_success 0\n" in text
    assert "factory_usage_alert_consecutive_failures 1\n" in text


def test_prometheus_textfile_carries_the_forecast(app, tmp_path):
    """A steady 4 % a day from day 5 of a 27-day period runs out on day 25: say so."""
    prom = tmp_path / "factory_usage.prom"
    start = T0 - 5 * DAY
    for hour in range(0, 3 * 24 + 1, 3):
        app.now = T0 + hour * HOUR
        used = 0.2 + 0.04 * hour / 24
        app.serve_usage(usage_body(int(used * 20 * M), start=start))
        assert app("run", "--prometheus-textfile", str(prom)).code == 0
    metrics = dict(
        line.rsplit(" ", 1) for line in prom.read_text().splitlines() if line and not line.startswith("#")
    )
    at_reset = float(metrics['factory_usage_projected_ratio_at_reset{meter="standard"}'])
    to_exhaustion = float(metrics['factory_usage_seconds_to_exhaustion{meter="standard"}'])
    assert at_reset == pytest.approx(0.32 + 0.04 * 19, abs=0.01)  # 19 days left at 4 %/day
    assert to_exhaustion == pytest.approx(17 * DAY, rel=0.02)  # 68 % left at 4 %/day


def test_a_textfile_not_named_prom_is_refused_on_the_command_line_too(app, tmp_path):
    """node_exporter skips any other name without a word: say so, as the config key does."""
    app.serve_usage(usage_body(1 * M))
    result = app("run", "--prometheus-textfile", str(tmp_path / "factory_usage.txt"))
    assert result.code == 2
    assert "must end in .prom" in result.err and len(result.err.splitlines()) == 1
    assert not (tmp_path / "factory_usage.txt").exists()
    assert app.factory.calls() == []  # refused before fetching anything


def test_an_unwritable_textfile_is_a_warning_not_a_failure(app, tmp_path):
    app.serve_usage(usage_body(1 * M))
    result = app("run", "--prometheus-textfile", str(tmp_path / "missing-dir" / "x.prom"))
    assert result.code == 0
    assert "could not write the Prometheus textfile" in result.err


# --- check-config, test-notify, init -------------------------------------------------------


def test_check_config_lists_every_problem_at_once(app):
    app.config_path.write_text(
        yaml.safe_dump(
            {
                "thresholds": {"standrd": [80]},
                "monitor": {"failures_before_alert": 0, "reset_notice": "yes"},
                "quiet_hours": {"start": "25:00", "end": "07:00"},
                "notify": {"urls": ["not a url"]},
            }
        )
    )
    result = app("check-config")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    path = str(app.config_path)
    for expected in (
        "At 'thresholds.standrd': unknown key",
        "At 'monitor.failures_before_alert': must be a whole number from 1 to 1000",
        "At 'monitor.reset_notice': must be true or false",
        "At 'quiet_hours.start': must be a local time",
        "At 'notify.urls[0]': is not an apprise URL",
    ):
        assert any(line.startswith(f"{path}: {expected}") for line in lines), (expected, lines)
    assert lines[-1] == "factory-usage-alert: 5 problems in the config"


def test_check_config_shows_masked_channels(app, receiver, smtp):
    app.write_config(
        {
            "notify": {
                "urls": ["slack://TokenA/TokenB/TokenC/#alerts"],
                "channels": [
                    {"url": smtp.apprise_url, "name": "email", "severities": ["critical"], "tags": ["mail"]}
                ],
            },
            "healthcheck_url": "https://hc-ping.com/0b3c-secret-uuid",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        }
    )
    result = app("check-config")
    assert result.code == 0, result.err
    assert f"config: {app.config_path}: OK" in result.out
    assert "slack://***" in result.out and "TokenA" not in result.out
    assert "  slack://*** (all severities)\n" in result.out
    # The mail URL has `@` in its query, which might end a password holding `?`: only
    # the scheme is certain, so only the scheme is shown (the name tells channels apart).
    assert "  email: mailto://*** (critical; tags: mail)\n" in result.out
    assert "healthcheck: https://hc-ping.com/***" in result.out and "secret" not in result.out
    assert "quiet hours: 22:00-07:00 local time" in result.out
    assert "not-working notice: after 3 failed runs in a row" in result.out


def test_check_config_reports_urls_apprise_cannot_use(app):
    app.write_config({"notify": {"urls": ["nosuchservice://x/y"]}})
    result = app("check-config")
    assert result.code == 2
    assert "At 'notify': nosuchservice://***: apprise cannot use it" in result.err


def test_test_notify_reports_each_channel_and_exits_5_on_a_failure(app, receiver, smtp):
    app.write_config({"notify": {"urls": [receiver.apprise_url, smtp.apprise_url]}})
    result = app("test-notify")
    assert result.code == 0, result.err
    assert "ok     json://127.0.0.1" in result.out and "ok     mailto://***" in result.out
    assert titles(receiver) == ["factory-usage-alert: test notification"]
    assert "test notification" in smtp.messages[0]["Subject"]
    assert "No action is needed" in receiver.messages()[0]["message"]
    assert not app.state_path.exists()  # a test changes no state

    receiver.fail = True
    result = app("test-notify")
    assert result.code == 5
    assert "FAILED json://127.0.0.1" in result.out and "ok     mailto://***" in result.out
    assert "did not reach json://127.0.0.1" in result.err


def test_test_notify_with_a_tag_reaches_only_those_channels(app, receiver, smtp):
    app.write_config(
        {
            "notify": {
                "channels": [
                    {"url": receiver.apprise_url, "name": "hook", "tags": ["team"]},
                    {"url": smtp.apprise_url, "name": "email", "severities": ["critical"]},
                ]
            }
        }
    )
    result = app("test-notify", "--tag", "team")
    assert result.code == 0 and result.out.strip() == "ok     hook"
    assert len(receiver.messages()) == 1 and smtp.messages == []
    assert app("test-notify", "--tag", "nope").code == 2


def test_test_notify_without_channels_prints_to_stdout_channel(app):
    result = app("test-notify")
    assert result.code == 0
    assert "ok     stdout" in result.out
    assert "test notification" in result.err


def test_init_writes_a_private_starter_config_once(app):
    env_config = app.home / ".config" / "factory-usage-alert" / "config.yaml"
    result = app("init", config=False)
    assert result.code == 0, result.err
    assert f"wrote {env_config}" in result.out
    assert stat.S_IMODE(os.stat(env_config).st_mode) == 0o600
    text = env_config.read_text()
    assert "healthcheck_url" in text and "quiet_hours" in text and "failures_before_alert: 3" in text
    env_config.write_text(text + "# mine\n")
    again = app("init", config=False)
    assert again.code == 2
    assert "already there; not overwriting" in again.err
    assert env_config.read_text().endswith("# mine\n")
    checked = app("check-config", config=False)
    assert checked.code == 0, checked.err


def test_init_honours_config(app, tmp_path):
    target = tmp_path / "elsewhere dir" / "alert.yaml"
    result = app("init", "--config", str(target))
    assert result.code == 0
    assert target.exists()
    # The next steps it names must read the file it wrote, not the default one.
    assert f"factory-usage-alert --config '{target}' check-config" in result.out
    assert f"factory-usage-alert --config '{target}' test-notify" in result.out


def test_starter_config_loads_without_problems():
    from importlib.resources import files

    from alerter.config import build_config, parse_yaml

    text = files("alerter").joinpath("starter_config.yaml").read_text(encoding="utf-8")
    config = build_config(parse_yaml(text, None), None, {"HOME": "/home/someone"})
    assert config.monitor.failures_before_alert == 3
    # Uncommenting the optional keys gives a valid config too.
    uncommented = "\n".join(
        line.replace("# ", "", 1)
        if line.lstrip().startswith(
            ("# healthcheck_url", "# quiet_hours", "#   start", "#   end", "# prometheus")
        )
        else line
        for line in text.splitlines()
    )
    config = build_config(parse_yaml(uncommented, None), None, {"HOME": "/home/someone"})
    assert config.quiet_hours is not None and config.healthcheck_url and config.prometheus_textfile


def test_projection_series_appear_only_with_a_forecast():
    from alerter.meters import Meter, Reading
    from alerter.metrics import Projection, render
    from alerter.state import Health

    reading = Reading("limits", (Meter("standard.5h", 0.5, window_end=T0 + 3600), Meter("core.5h", 0.1)))
    text = render(reading, Health(last_success=T0), T0, {"standard.5h": Projection(1.25, 1800.0)})
    assert 'factory_usage_projected_ratio_at_reset{meter="standard.5h"} 1.25\n' in text
    assert 'factory_usage_seconds_to_exhaustion{meter="standard.5h"} 1800\n' in text
    assert 'meter="core.5h"' in text and 'projected_ratio_at_reset{meter="core.5h"}' not in text
    unsure = {"standard.5h": Projection(0.7, None)}
    assert "seconds_to_exhaustion" not in render(reading, Health(), T0, unsure)


def test_metrics_survive_a_remembered_health_of_any_shape():
    from alerter.metrics import render
    from alerter.state import load

    for health in ({"failures": "x", "last_success": "y"}, {"failures": float("nan")}, [], None):
        text = render(None, load({"version": 2, "health": health})[0].health, T0)
        assert "factory_usage_alert_consecutive_failures 0\n" in text
        assert "last_success_timestamp" not in text


# --- status shows the job's own health ------------------------------------------------------------


def test_status_shows_when_the_job_last_ran_and_what_it_last_sent_to_whom(app, receiver):
    app.write_config({"notify": {"channels": [{"url": receiver.apprise_url, "name": "phone"}]}})
    app.now = T0
    app.serve_usage(usage_body(17 * M))
    assert app("run").code == 0
    app.now = T0 + 3600
    result = app("status")
    assert result.code == 0, result.err
    job = result.out.split("\njob:\n")[1].splitlines()
    assert job[0].startswith("  last run ") and job[0].endswith(" (1h 0m ago)")
    assert job[1].startswith("  last alert ") and job[1].endswith(": standard at 80%")
    assert job[2:] == ["    to phone", f"  state file: {app.state_path}"]
    data = json.loads(app("status", "--json").out)["job"]
    assert data["consecutive_failures"] == 0 and data["state_file"] == str(app.state_path)
    assert data["last_run"] == data["last_success"] == data["last_alert"]["at"]
    assert (data["last_alert"]["kind"], data["last_alert"]["level_percent"]) == ("threshold", 80.0)
    assert data["last_alert"]["channels"] == ["phone"]


def test_status_shows_the_failing_job_even_when_usage_cannot_be_read(app):
    app.now = T0
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    app.serve_usage(DOWN)
    for minutes in (15, 30):
        app.now = T0 + minutes * 60
        assert app("run").code != 0
    app.now = T0 + 45 * 60
    result = app("status")
    assert result.code != 0 and "HTTP 500" in result.err
    lines = result.out.splitlines()
    assert lines[0] == "job:" and "(15m ago), last read usage " in lines[1]
    assert lines[2].startswith("  2 failed runs in a row since ") and "HTTP 500" in lines[2]
    assert lines[3:] == ["  no alert sent yet", f"  state file: {app.state_path}"]
    data = json.loads(app("status", "--json").out)["job"]
    assert data["consecutive_failures"] == 2 and "HTTP 500" in data["last_error"]


def test_status_before_any_run_says_so():
    from pathlib import Path

    from alerter.config import Config
    from alerter.state import State
    from alerter.status import job_health, job_lines

    lines = job_lines(job_health(State(), Path("/s/state.json"), Config()), T0)
    assert lines[2:] == [
        "  no run yet: `factory-usage-alert run` has not run with this state",
        "  state file: /s/state.json",
    ]


def test_the_last_alert_is_the_latest_delivery_and_names_removed_channels():
    from pathlib import Path

    from alerter.config import Channel, Config
    from alerter.state import DeliveryKey, State
    from alerter.status import job_health

    early = DeliveryKey("standard", "threshold", T0, 80.0)
    late = DeliveryKey("health", "stale", T0, 0.0)
    state = State(ledger={early: {"ch-a": T0 + 9}, late: {"ch-a": T0 + 5, "ch-gone": T0 + 7, "ch-b": None}})
    config = Config(channels=(Channel(id="ch-a", label="mail", url="json://a"),))
    last = job_health(state, Path("s"), config).last_alert
    assert (last.at, last.key, last.channels) == (T0 + 9, early, ("mail",))
    state.ledger[late]["ch-gone"] = T0 + 10
    last = job_health(state, Path("s"), config).last_alert
    assert (last.at, last.key, last.channels) == (T0 + 10, late, ("mail", "a removed channel"))
