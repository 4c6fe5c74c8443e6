"""backtest and history: replaying recorded usage through the same evaluation as `run`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerter.backtest import Observation, TraceError, export_history, parse_line, read_trace, replay
from alerter.config import build_config
from alerter.meters import BadAnswer
from alerter.rules import evaluate
from alerter.state import State, dump
from tests.conftest import DAY

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "alerter" / "sample-month.jsonl"
HOUR = 3600


def trace_lines(path: Path = SAMPLE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_backtest_gives_the_same_notifications_as_running_the_job_hourly(app, receiver, local_zone):
    # The recorded month (its story, as in the README, is told in UTC), run by the real job
    # once an hour against the stand-in Factory, with daily reminders after 100 % and quiet
    # hours that hold the non-critical ones...
    local_zone("UTC")
    app.write_config(
        {
            "notify": {"urls": [receiver.apprise_url]},
            "monitor": {"reminder_hours": 24, "reset_notice": True},
            "quiet_hours": {"start": "17:00", "end": "20:00"},
        }
    )
    lines = trace_lines()
    for line in lines:
        app.now = line["at"] / 1000
        app.serve_usage({"usage": line["usage"], "source": "cache", "cacheUpdated": False})
        result = app("run", "-q")
        assert result.code == 0, result.err
    arrived = [(m["title"], m["message"]) for m in receiver.messages()]
    # ...sends exactly what backtest says it would have, in the same order.
    app.now = None
    result = app("backtest", str(SAMPLE), "--json")
    assert result.code == 0, result.err
    replayed = json.loads(result.out)["notifications"]
    assert [(n["title"], n["body"]) for n in replayed] == arrived
    kinds = [n["kind"] for n in replayed]
    assert kinds[:3] == ["threshold", "forecast", "threshold"] and kinds.count("forecast") == 1
    assert kinds.count("threshold") == 4 and kinds.count("reminder") == 4
    # the forecast came at 19:11, inside quiet hours: it waited for the 20:11 run
    assert time.strftime("%H:%M", time.localtime(replayed[1]["at"] / 1000)) == "20:11"


def test_backtest_prints_the_notifications_with_their_times(app, local_zone):
    local_zone("UTC")  # the README shows this output in UTC
    result = app("backtest", str(SAMPLE))
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert "threshold (info) standard" in first and first.startswith("Thu 2025-10-30 23:11")
    assert "\nFri 2025-11-07 19:11  forecast (warning) standard\n" in result.out
    assert "At this pace standard runs out" in result.out
    assert "To last until the reset: at most" in result.out
    assert result.out.rstrip().endswith("5 notifications from 744 observations")
    assert app.factory.requests == []  # no network


def test_backtest_json_has_the_documented_fields(app):
    result = app("backtest", str(SAMPLE), "--json")
    notes = json.loads(result.out)["notifications"]
    assert set(notes[0]) == {"at", "meter", "kind", "severity", "title", "body"}
    assert {n["at"] for n in notes} <= {line["at"] for line in trace_lines()}
    assert [n["severity"] for n in notes] == ["info", "warning", "warning", "warning", "critical"]


def test_backtest_uses_the_configured_thresholds(app):
    app.write_config({"thresholds": {"default": [90]}, "forecast": {"enabled": False}})
    notes = json.loads(app("backtest", str(SAMPLE), "--json").out)["notifications"]
    titles = [(n["kind"], n["title"].split(" (")[0]) for n in notes]
    assert titles == [("threshold", "Factory standard at 90%")]


def test_a_bad_trace_line_is_one_clean_error_naming_the_line(app, tmp_path):
    trace = tmp_path / "trace.jsonl"
    good = json.dumps(trace_lines()[0])
    for bad, expected in [
        ("not json", "trace.jsonl:2: not a JSON object"),
        ('{"at": 1764000000, "usage": {}}', "looks like seconds"),
        ('{"at": 1764000000000}', 'exactly one of "usage", "limits" or "error"'),
        ('{"at": 1700000000000, "usage": {}}', "goes back in time"),
        ('{"at": 1800000000000, "account": 7, "usage": {}}', "must be an account's name"),
        ('{"at": 1800000000000, "account": "a\\u001b[2J", "usage": {}}', "must be an account's name"),
    ]:
        trace.write_text(good + "\n" + bad + "\n")
        result = app("backtest", str(trace))
        assert result.code == 2, (bad, result)
        assert expected in result.err and result.err.count("\n") == 1, result.err
    result = app("backtest", str(tmp_path / "missing.jsonl"))
    assert result.code == 2 and "cannot read the trace" in result.err


def test_each_account_of_a_trace_is_in_time_order_on_its_own():
    def line(at: int, account: str) -> str:
        return json.dumps({"at": at, "account": account, "error": "down"})

    ok = [line(1800000000000, "a"), line(1800000060000, "a"), line(1800000000000, "b")]
    assert [(o.account, o.at) for o in read_trace(ok, "t")][2] == ("b", 1800000000000)
    with pytest.raises(TraceError, match="t:4: goes back in time; observations of account 'a'"):
        read_trace([*ok, line(1800000030000, "a")], "t")


def test_whole_answers_are_accepted_as_well_as_the_documented_objects():
    line = trace_lines()[0]
    answer = {"usage": line["usage"], "source": "cache"}
    whole = parse_line(json.dumps({"at": line["at"], "usage": answer}), "t")
    assert whole == parse_line(json.dumps(line), "t")
    limits = {"standard": {"fiveHour": {"usedPercent": 12.5, "windowEnd": "2030-01-01T00:00:00Z"}}}
    inner = parse_line(json.dumps({"at": line["at"], "limits": limits}), "t")
    body = parse_line(json.dumps({"at": line["at"], "limits": {"limits": limits}}), "t")
    assert inner == body and body.reading().meters[0].percent == 12.5


def test_an_answer_the_job_would_reject_counts_as_a_failed_run(app, tmp_path):
    lines = trace_lines()[:3]
    lines[1]["usage"]["standard"]["totalAllowance"] = "lots"
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(line) for line in lines))
    result = app("backtest", str(trace))
    assert result.code == 0
    assert "0 notifications from 3 observations (1 unusable" in result.out
    assert "observation 2: " in result.err and "(a failed run)" in result.err


def test_a_limits_trace_forecasts_the_five_hour_window():
    config = build_config({}, None, {"HOME": "/nonexistent"})
    start = 1_764_000_000
    end = start + 5 * HOUR
    observations = []
    for minute in range(0, 5 * 60, 5):
        now = start + minute * 60
        body = {"limits": {"standard": {"fiveHour": {"usedPercent": minute / 2.4, "windowEnd": end * 1000}}}}
        observations.append(Observation(now * 1000, "limits", body))
    result = replay(observations, config)
    forecasts = [n for n in result.notifications if n.kind == "forecast"]
    assert len(forecasts) == 1
    # 125 % over 5 hours: it runs out after 4 hours. The 2-hour rule waits until that
    # is within 90 minutes: the reading at 2 h 30 min warns.
    assert forecasts[0].at / 1000 - start == 150 * 60
    assert "pace over the last 2 h: 25% an hour" in forecasts[0].body
    assert "standard.5h runs out" in forecasts[0].title
    assert "an hour" in forecasts[0].body


def test_history_jsonl_exports_what_run_saw_in_the_trace_format(app):
    lines = trace_lines()[:48]
    for line in lines:
        app.now = line["at"] / 1000
        app.serve_usage({"usage": line["usage"]})
        assert app("run", "-q").code == 0
    result = app("history", "--jsonl")
    assert result.code == 0, result.err
    exported = [json.loads(x) for x in result.out.splitlines()]
    # Times are kept to the second; the last day hourly, older hours thinned to one in three.
    recorded = {line["at"] // 1000: line for line in lines}
    kept = [x["at"] // 1000 for x in exported]
    assert set(kept) <= set(recorded) and kept == sorted(kept)
    assert kept[-24:] == sorted(recorded)[-24:] and 30 <= len(kept) < 48
    for mine in exported:
        theirs = recorded[mine["at"] // 1000]["usage"]
        assert mine["usage"]["standard"]["orgTotalTokensUsed"] == theirs["standard"]["orgTotalTokensUsed"]
        assert mine["usage"]["standard"]["totalAllowance"] == theirs["standard"]["totalAllowance"]
        assert mine["usage"]["startDate"] == theirs["startDate"]
        assert mine["usage"]["endDate"] == theirs["endDate"]
    # ...and backtest replays it.
    (app.home / "mine.jsonl").write_text(result.out)
    assert app("backtest", str(app.home / "mine.jsonl")).code == 0
    assert f"{len(kept)} observations" in app("history").out


def test_history_after_one_run_counts_one_observation(app):
    line = trace_lines()[0]
    app.now = line["at"] / 1000
    app.serve_usage({"usage": line["usage"]})
    assert app("run", "-q").code == 0
    assert app("history").out.startswith("1 observation from ")


def test_history_round_trips_limit_windows():
    config = build_config({}, None, {"HOME": "/nonexistent"})
    start = 1_764_000_000
    observations = []
    for hour in range(6):
        body = {
            "limits": {
                "standard": {
                    "fiveHour": {"usedPercent": 10.0 * hour, "windowEnd": (start + 5 * HOUR) * 1000},
                    "weekly": {"usedPercent": 2.5 * hour, "windowEnd": (start + 3 * DAY) * 1000},
                },
                "core": {"monthly": {"usedPercent": 1.25, "windowEnd": "2025-12-01T00:00:00Z"}},
            }
        }
        observations.append(Observation((start + hour * HOUR) * 1000, "limits", body))
    state = replay(observations, config).state
    exported = export_history(state)
    again = read_trace([json.dumps(x) for x in exported], "export")
    assert [o.at for o in again] == [o.at for o in observations]
    for mine, theirs in zip(again, observations, strict=True):
        assert {m.id: round(m.percent, 3) for m in mine.reading().meters} == {
            m.id: round(m.percent, 3) for m in theirs.reading().meters if m.active
        }


# --- the trace reader never crashes ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
usage_keys = st.sampled_from(
    ["startDate", "endDate", "standard", "premium", "orgTotalTokensUsed", "totalAllowance", "usedRatio"]
)
limit_keys = st.sampled_from(["limits", "standard", "core", "fiveHour", "weekly", "usedPercent", "windowEnd"])
shaped = st.recursive(
    json_values,
    lambda inner: st.dictionaries(usage_keys | limit_keys, inner, max_size=5),
    max_leaves=25,
)
lines = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda at, key, body: json.dumps({"at": at, key: body}),
        st.one_of(st.integers(), st.floats(), st.integers(1_000_000_000_000, 4_000_000_000_000), st.text()),
        st.sampled_from(["usage", "limits", "other"]),
        shaped,
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_any_trace_line_gives_a_clean_result_or_a_clean_error(line):
    config = build_config({}, None, {"HOME": "/nonexistent"})
    try:
        observation = parse_line(line, "t:1")
    except TraceError as exc:
        assert str(exc).startswith("t:1: ") and "\n" not in str(exc)
        return
    if observation is None:
        return
    try:
        reading = observation.reading()
    except BadAnswer:
        return
    alerts, state = evaluate(reading, State(), config, observation.at / 1000)
    json.dumps(dump(state), allow_nan=False)  # the state stays plain, finite JSON
    assert all(a.title and a.body for a in alerts)


def test_the_sample_month_ships_with_the_package_and_replays_from_any_directory(tmp_path):
    """What an install holds (setuptools' build of the package, its data included), run from
    a directory that has no checkout in it."""
    import os
    import subprocess
    import sys

    from tests.conftest import python_path, same_clock

    lib, elsewhere = tmp_path / "lib", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(lib),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr.decode()
    # A deprecated setting builds today and not after its date: pipx installs months later.
    assert b"Deprecat" not in build.stderr, build.stderr.decode()
    assert (lib / "alerter" / "sample-month.jsonl").is_file()
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""), "TZ": "UTC", **same_clock()}
    env["PYTHONPATH"] = python_path(str(lib))

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "alerter", *args], cwd=elsewhere, env=env, capture_output=True, timeout=120
        )

    where = subprocess.run(
        [sys.executable, "-c", "import alerter; print(alerter.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
    )
    assert where.stdout.decode().startswith(str(lib))  # the built package, not this checkout
    result = command("backtest", "--example")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().rstrip().endswith("5 notifications from 744 observations")
    neither = command("backtest")
    assert neither.returncode == 2 and b"--example for the sample month" in neither.stderr
    assert b"not both" not in neither.stderr
    both = command("backtest", "--example", "trace.jsonl")
    assert both.returncode == 2 and b"TRACE file" in both.stderr
