"""Forecasts seen from the outside: `run` notifies, `status` shows the pace, the benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_backtest import trace_lines

ROOT = Path(__file__).resolve().parent.parent


# A rule that tells the sample month's pace (1.1 to 1.2 times too fast) at once, within a week;
# the defaults wait until it runs out within 5 days.
EARLY = {"period": [{"long_hours": 168, "short_hours": 24, "burn_rate": 1.0}]}


def run_through(app, lines):
    for line in lines:
        app.now = line["at"] / 1000
        app.serve_usage({"usage": line["usage"]})
        result = app("run", "-q")
        assert result.code == 0, result.err


def test_status_shows_the_pace_the_use_at_reset_and_when_it_runs_out(app):
    run_through(app, trace_lines()[: 8 * 24])
    result = app("status")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    meter = next(i for i, line in enumerate(lines) if line.startswith("standard "))
    pace, outlook = lines[meter + 1 : meter + 3]
    assert pace.startswith("  pace ") and " a day over 7 days (24 h " in pace and ", 3 h " in pace
    assert outlook.startswith("  at this pace: 1") and "% at the reset, runs out" in outlook
    assert outlook.endswith(" early)") and all(len(line) <= 80 for line in lines[:-1])
    data = json.loads(app("status", "--json").out)
    (standard,) = data["meters"]
    fc = standard["forecast"]
    assert fc["projected_percent_at_reset"] > 100 and fc["runs_out_before_reset"] is True
    assert fc["exhaustion_at"].endswith("Z") and fc["pace_percent_per_day"] > 0
    assert set(fc["burn_percent_per_day"]) == {"3h", "24h", "168h"}


def test_status_says_when_there_is_no_history_yet(app):
    app.serve_usage({"usage": trace_lines()[100]["usage"]})
    app.now = trace_lines()[100]["at"] / 1000
    out = app("status").out
    assert "  pace " in out  # since the start of the period, which began at zero
    assert json.loads(app("status", "--json").out)["meters"][0]["forecast"]["burn_percent_per_day"] == {}


def test_the_forecast_goes_to_the_channels_that_take_its_severity(app, receiver, smtp):
    app.write_config(
        {
            "forecast": {"severity": "critical", "rules": EARLY},
            "notify": {
                "channels": [
                    {"url": smtp.apprise_url, "name": "email", "severities": ["info", "warning"]},
                    {"url": receiver.apprise_url, "name": "pager", "severities": ["critical"]},
                ]
            },
        }
    )
    run_through(app, trace_lines()[: 10 * 24])  # with EARLY the forecast comes within a week
    (page,) = receiver.messages()
    assert "runs out" in page["title"] and page["type"] == "failure"
    assert all("runs out" not in m["Subject"] for m in smtp.messages)


def test_a_failed_forecast_delivery_is_retried_and_sent_once(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}, "forecast": {"rules": EARLY}})
    lines = trace_lines()[: 10 * 24]  # with EARLY the forecast comes within a week
    receiver.fail = True
    codes = []
    for line in lines:
        app.now = line["at"] / 1000
        app.serve_usage({"usage": line["usage"]})
        codes.append(app("run", "-q").code)
        if codes[-1] == 5:
            receiver.fail = False  # the next run retries
    assert codes.count(5) == 1 and set(codes) == {0, 5}
    titles = [m["title"] for m in receiver.messages()]  # every POST: the failed one and its retry
    assert sum("runs out" in t for t in titles) == 2


def load_bench(monkeypatch):
    """Return bench/alert_quality.py as a module."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("alert_quality", ROOT / "bench" / "alert_quality.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "alert_quality", bench)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_runs_every_window_kind_and_prints_its_tables(monkeypatch):
    """A small run of bench/alert_quality.py: every kind, both parts, per shape; no target judged."""
    bench = load_bench(monkeypatch)
    printed = []
    argv = ["--smoke", "--per-shape", "1", "--jobs", "1", "--by-shape", "--by-total", "--by-noise"]
    assert bench.main(argv, out=printed.append) == 0
    out = "\n".join(printed)
    assert out.count("held-out: forecast / naive by total at the reset") == 4
    assert out.count("held-out: forecast / naive by noise") == 4
    for kind in ("period", "monthly", "weekly", "5h"):
        for part in ("training", "held-out"):
            assert f"| {kind} | {part} |" in out
    assert "two-bursts" in out and out.count("step-down") == 4  # held-out shapes, once per kind
    assert "smoke run: too few windows to judge the targets" in out
    # The same seed gives the same windows; the held-out part shares no window with training.
    assert bench.windows("5h", "training", 2) == bench.windows("5h", "training", 2)
    training = {w.used for w in bench.windows("weekly", "training", 2)}
    assert not training & {w.used for w in bench.windows("weekly", "held-out", 2)}


def test_the_benchmark_tells_windows_apart_by_how_near_the_limit_they_end(monkeypatch):
    bench = load_bench(monkeypatch)
    day = 86400.0

    def window(total: float, exhausted: float | None) -> object:
        return bench.Window("weekly", "steady", 0.0, 7 * day, (0.0,), (0.0,), exhausted, 0.0, total)

    picked = [window(0.5, None), window(0.9, None), window(0.92, None), window(1.1, 6.5 * day)]
    picked.append(window(1.5, 4 * day))
    ours = [[], [5 * day], [], [5 * day], [3.9 * day]]  # the last one warned 2.4 h ahead: too late
    naive = [[1 * day], [1 * day], [1 * day], [1 * day], [1 * day]]
    rows = bench.total_table("weekly", "held-out", picked, ours, naive).splitlines()[4:]
    assert rows == [
        "| ends below 85 % | 0 / 1 / 0 | - / - | - / - | 0.0% / 100.0% | 0 / 1 |",
        "| ends at 85-95 % | 0 / 2 / 0 | - / - | - / - | 50.0% / 100.0% | 1 / 1 |",
        "| runs out at 105-115 % | 1 / 0 / 0 | 100.0% / 100.0% | 36 h / 132 h | - / - | 1 / 1 |",
        "| runs out above 115 % | 1 / 0 / 0 | 0.0% / 100.0% | 144 min / 72 h | - / - | 1 / 1 |",
    ]


def test_the_benchmark_tells_windows_apart_by_the_strength_of_their_noise(monkeypatch):
    bench = load_bench(monkeypatch)
    day = 86400.0

    def window(noise: float, exhausted: float | None) -> object:
        times = (0.0,)
        return bench.Window("weekly", "steady", 0.0, 7 * day, times, (0.0,), exhausted, 0.0, 0.9, noise)

    picked = [window(0.2, None), window(1.2, None), window(1.2, 6 * day), window(1.2, None)]
    ours = [[], [5 * day], [4 * day], []]
    naive = [[1 * day]] * 4
    rows = bench.noise_table("weekly", "held-out", picked, ours, naive).splitlines()[4:]
    assert rows == [
        "| light | 0 / 1 / 0 | - / - | - / - | 0.0% / 100.0% | 0 / 1 |",
        "| heavy | 1 / 2 / 0 | 100.0% / 100.0% | 48 h / 120 h | 50.0% / 100.0% | 1 / 1 |",
    ]
    # Every window the generator makes has one of the three strengths.
    assert {w.noise for w in bench.windows("5h", "training", 2)} <= set(bench.NOISE)


def test_the_same_answer_at_the_same_time_gives_the_same_forecast_everywhere_every_time(app, tmp_path):
    """`run` (its textfile), `status` and `status --json` decide through the same function:
    on the same state, answer and clock they agree, however often they are asked."""
    prom = tmp_path / "usage.prom"
    lines = trace_lines()[: 8 * 24]
    run_through(app, lines[:-1])
    before = app.state_path.read_bytes()
    app.now = lines[-1]["at"] / 1000
    app.serve_usage({"usage": lines[-1]["usage"]})
    shown = {(app("status").out, app("status", "--json").out) for _ in range(3)}
    assert len(shown) == 1 and app.state_path.read_bytes() == before  # status changes nothing
    assert app("run", "-q", "--prometheus-textfile", str(prom)).code == 0
    text, as_json = shown.pop()
    after = (app("status").out, app("status", "--json").out)  # and after the run, but for the job's runs
    assert after[0].split("\njob:\n")[0] == text.split("\njob:\n")[0]
    assert {**json.loads(after[1]), "job": None} == {**json.loads(as_json), "job": None}
    assert "  pace " in text
    forecast = json.loads(as_json)["meters"][0]["forecast"]
    metrics = dict(line.rsplit(" ", 1) for line in prom.read_text().splitlines() if not line.startswith("#"))
    at_reset = float(metrics['factory_usage_projected_ratio_at_reset{meter="standard"}'])
    assert round(at_reset * 100, 1) == round(forecast["projected_percent_at_reset"], 1)


def test_the_learned_forecast_sees_nothing_after_the_run_it_is_asked_at(monkeypatch):
    """bench/frontier.py's estimate of the best forecast is fair only if what it learns from
    at a run is what the job could know then: changing every later sample leaves the
    features of that run and all earlier ones exactly as they were."""
    import dataclasses
    import importlib.util
    import random
    import sys

    import pytest

    np = pytest.importorskip("numpy", reason="bench/frontier.py needs the [bench] extra")
    bench = load_bench(monkeypatch)
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "bench" / "frontier.py")
    frontier = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "frontier", frontier)
    spec.loader.exec_module(frontier)
    for kind in ("period", "weekly", "5h"):
        window = bench.generate(kind, "steady", random.Random(f"causal/{kind}"))
        before = frontier.features(window)
        for k in (0, 3, len(before) // 3, len(before) // 2, len(before) - 2):
            later = tuple(u if i <= k else u + (1 - u) * 0.5 for i, u in enumerate(window.used))
            after = frontier.features(dataclasses.replace(window, used=later))
            assert np.array_equal(before[: k + 1], after[: k + 1]), (kind, k)
            # A change at run k itself does show (the test can fail).
            nudged = tuple(u * 0.9 if i == k else u for i, u in enumerate(later))
            assert not np.array_equal(
                after[k], frontier.features(dataclasses.replace(window, used=nudged))[k]
            )
        assert before.shape[1] == len(frontier.LOOKBACKS) * 2 + len(frontier.HELD_BACK) + 4 + 4 + 5
        told = frontier.features(window, ("noise", "shape"))
        assert told.shape == (len(before), before.shape[1] + 1 + len(bench.TRAINING_SHAPES))
        assert (
            np.array_equal(told[:, : before.shape[1]], before)
            and (told[:, before.shape[1]] == window.noise).all()
        )
    # The alert is the first run whose chance reaches the threshold, and only that one.
    assert frontier.fire_times(window, [0.1, 0.95, 0.99], 0.9) == [window.times[1]]
    assert frontier.fire_times(window, [0.1, 0.2], 0.9) == []
