"""Rate-limit billing: 5-hour / weekly / monthly windows from billing/limits."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import LIMITS_PATH, USAGE_PATH, at_local, usage_body
from tests.standins import Reply

HOUR = 3600
M = 1_000_000


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def window(percent: float, end: float | None, *, ms: bool = False, now: float | None = None) -> dict:
    """A limits window as Factory answers it at ``now`` (default: the wall clock)."""
    if end is None:
        return {"usedPercent": percent, "windowEnd": None, "secondsRemaining": None}
    return {
        "usedPercent": percent,
        "windowEnd": int(end * 1000) if ms else iso(end),
        "secondsRemaining": int(end - (time.time() if now is None else now)),
    }


def limits_body(
    five: dict,
    weekly: dict | None = None,
    monthly: dict | None = None,
    core=None,
    now: float | None = None,
    **extra,
) -> dict:
    """A billing/limits answer at ``now`` (default: the wall clock)."""
    now = time.time() if now is None else now
    standard = {
        "fiveHour": five,
        "weekly": weekly or window(10, now + 3 * 86400, now=now),
        "monthly": monthly or window(5, now + 20 * 86400, now=now),
    }
    limits = {"standard": standard}
    if core is not None:
        limits["core"] = core
    return {"limits": limits, "extraUsageAllowed": True, **extra}


def use_limits(app, body):
    app.factory.route("GET", LIMITS_PATH, Reply(200, body))


def auto(app, receiver=None):
    extra = {"factory": {"endpoint": "auto"}}
    if receiver is not None:
        extra["notify"] = {"urls": [receiver.apprise_url]}
    app.write_config(extra)


def test_limits_only_alerts_on_the_5h_window_once_per_window(app, receiver):
    """The issue's scenario: 80 % alerts, the next run is quiet, the next window re-arms."""
    auto(app, receiver)
    t0 = time.time()
    end1 = t0 + 2 * HOUR
    use_limits(app, limits_body(window(81, end1)))
    result = app("run")
    assert result.code == 0, result.err
    (msg,) = receiver.messages()
    assert "standard.5h" in msg["title"] and "81%" in msg["title"] and "past 80%" in msg["title"]
    assert "5-hour limit" in msg["message"]

    use_limits(app, limits_body(window(84, end1 + 120)))  # same window, end drifted 2 minutes
    assert app("run").code == 0
    assert len(receiver.messages()) == 1

    app.now = end1 + HOUR  # the next 5-hour window
    use_limits(app, limits_body(window(82, end1 + 5 * HOUR)))
    assert app("run").code == 0
    assert len(receiver.messages()) == 2
    assert "standard.5h" in receiver.messages()[1]["title"]
    assert app.factory.calls("GET", USAGE_PATH) == []


def test_a_steady_auto_run_makes_one_request(app):
    auto(app)
    use_limits(app, limits_body(window(10, time.time() + HOUR)))
    assert app("run").code == 0
    assert app("run").code == 0
    assert app("run").code == 0
    assert len(app.factory.calls()) == 3
    assert app.state()["endpoint"]["name"] == "limits"


def test_auto_falls_back_to_the_allowance_when_limits_is_404(app, receiver):
    auto(app, receiver)
    app.serve_usage(usage_body(17 * M))
    result = app("run")
    assert result.code == 0, result.err
    assert [c.path for c in app.factory.calls()] == [LIMITS_PATH, USAGE_PATH]
    assert "standard at 85%" in receiver.messages()[0]["title"]
    assert app("run").code == 0
    assert [c.path for c in app.factory.calls()][2:] == [USAGE_PATH]  # remembered
    assert app.state()["endpoint"]["name"] == "allowance"


def test_auto_uses_the_allowance_when_the_account_is_not_on_limits_billing(app):
    auto(app)
    use_limits(app, {"usesTokenRateLimitsBilling": False, "limits": None})
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    assert app.state()["endpoint"]["name"] == "allowance"


def test_auto_probes_again_when_the_remembered_endpoint_goes_away_and_once_a_day(app):
    auto(app)
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0  # limits 404 -> allowance
    use_limits(app, limits_body(window(10, time.time() + HOUR)))
    app.now = time.time() + 25 * HOUR
    use_limits(app, limits_body(window(10, app.now + HOUR)))
    assert app("run").code == 0  # a day later: probes, finds limits
    assert app.state()["endpoint"]["name"] == "limits"
    app.factory.route("GET", LIMITS_PATH, Reply(404, {"error": "gone"}))
    assert app("run").code == 0  # remembered one gone: probes, falls back
    assert app.state()["endpoint"]["name"] == "allowance"


def test_windows_in_the_past_null_or_ms_and_no_core(app):
    auto(app)
    now = time.time()
    body = limits_body(
        window(100, now - 60),  # ended a minute ago: reset, no alert
        weekly=window(97, None),  # no windowEnd: inactive
        monthly=window(96, now + 9 * 86400, ms=True),  # unix ms
    )
    use_limits(app, body)
    result = app("run")
    assert result.code == 0, result.err
    assert "standard.monthly" in result.out and "96%" in result.out
    assert "standard.5h" not in result.out and "standard.weekly" not in result.out
    status = app("status")
    assert "standard.5h" in status.out and "reset" in status.out


def test_core_pool_and_above_100_percent(app):
    auto(app)
    now = app.now = float(int(time.time()))  # whole seconds, so the window ends exactly an hour on
    core = {
        "fiveHour": window(120, now + HOUR, now=now),
        "weekly": window(1, now + 86400, now=now),
        "monthly": window(1, now + 86400, now=now),
    }
    use_limits(
        app, limits_body(window(1, now + HOUR, now=now), core=core, now=now, extraUsageBalanceCents=1234)
    )
    result = app("run")
    assert result.code == 0, result.err
    assert "Factory core.5h at 120%: core 5-hour limit used up" in result.out
    assert "Extra usage balance: $12.34." in result.out
    assert "in 1h 0m" in result.out


@pytest.mark.parametrize(
    "hour, resets",
    [(9, "Resets 11:14 (in 2h 14m)."), (23, "Resets Sat 30 May 01:14 (in 2h 14m).")],
    ids=["the same day", "the next day"],
)
def test_a_window_at_100_percent_says_which_window_and_when_it_resets(app, receiver, hour, resets):
    auto(app, receiver)
    now = app.now = at_local(2026, 5, 29, hour)  # a Friday; times in messages are local
    end = now + 2 * HOUR + 14 * 60 + 30
    use_limits(app, limits_body(window(100, end, now=now), now=now, extraUsageBalanceCents=0))
    assert app("run").code == 0
    (msg,) = receiver.messages()
    assert msg["type"] == "failure"
    assert msg["title"] == "Factory standard.5h at 100%: standard 5-hour limit used up"
    assert resets in msg["message"]
    assert "Extra usage balance: $0.00." in msg["message"]


def test_thresholds_per_meter_id_and_default(app, receiver):
    app.write_config(
        {
            "factory": {"endpoint": "limits"},
            "notify": {"urls": [receiver.apprise_url]},
            "thresholds": {"default": [99], "standard.weekly": [60]},
        }
    )
    now = time.time()
    use_limits(app, limits_body(window(90, now + HOUR), weekly=window(61, now + 86400)))
    assert app("run").code == 0
    (msg,) = receiver.messages()
    assert "standard.weekly at 61%" in msg["title"]


def test_status_shows_a_bar_per_window_in_80_columns(app):
    auto(app)
    now = app.now = time.time()
    use_limits(app, limits_body(window(61, now + 2 * HOUR + 14 * 60 + 30, now=now), now=now))
    result = app("status")
    assert result.code == 0, result.err
    assert "from billing/limits" in result.out
    line = next(line for line in result.out.splitlines() if line.startswith("standard.5h"))
    assert "[############--------]  61%  resets in 2h 14m" in line
    assert all(len(line) <= 80 for line in result.out.splitlines()[:-1])  # the last: the state file
    data = json.loads(app("status", "--json").out)
    assert data["endpoint"] == "billing/limits"
    five = next(m for m in data["meters"] if m["id"] == "standard.5h")
    assert five["used_percent"] == 61 and five["active"] is True


def test_status_names_a_window_end_past_the_calendar_instead_of_crashing(app):
    # Each of `status`, `status --json` and `run` stopped with "internal error: ValueError"
    # (or alerted on the nonsense) when Factory said a window ends after the year 9999.
    app.now = at_local(2026, 5, 29, 12)
    app.write_config({"factory": {"endpoint": "limits"}})
    five = {"usedPercent": 100, "windowEnd": "9999-12-31T23:59:59-14:00", "secondsRemaining": None}
    use_limits(app, limits_body(five, now=app.now))
    for command in (["status"], ["status", "--json"]):
        result = app(*command)
        assert result.code != 0 and "internal error" not in result.err, result.err
        assert "impossible time in limits.standard.fiveHour.windowEnd" in result.err
