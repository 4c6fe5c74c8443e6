"""The forecast: burn rates, the multiwindow rule, episodes, history, and what they cost."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerter import forecast
from alerter.config import build_config
from alerter.errors import ConfigError
from alerter.forecast import DAY, HOUR, ForecastSettings, Rule, assess, burn, next_episode, used_at
from alerter.meters import Meter, Reading
from alerter.rules import Alert, evaluate
from alerter.state import DeliveryKey, Episode, State, dump, load, record_delivery
from tests.conftest import at_local

START = at_local(2025, 12, 1)  # Mon 1 Dec 2025 00:00, local time
MONTH = 30 * DAY
M = 1_000_000


def config(extra: dict | None = None):
    return build_config(extra or {}, None, {"HOME": "/nonexistent"})


def period_reading(used: float, now: float, start: float = START, length: float = MONTH) -> Reading:
    tokens = int(used * 20 * M)
    return Reading(
        "allowance", (Meter("standard", tokens / (20 * M), start, start + length, tokens, 20 * M),)
    )


def run_hourly(uses, cfg=None, start: float = START, state: State | None = None, length: float = MONTH):
    """Evaluate hour by hour (use given as a function of hours since start); return (sent, state)."""
    cfg = cfg or config()
    state = state or State()
    sent: list[tuple[float, Alert]] = []
    for hour, used in enumerate(uses, 1):
        now = start + hour * HOUR
        alerts, state = evaluate(period_reading(used, now, start, length), state, cfg, now)
        for alert in alerts:
            sent.append((now, alert))
            for channel in alert.channels:
                state = record_delivery(state, alert.key, channel, now)
    return sent, state


def forecasts(sent):
    return [(t, a) for t, a in sent if a.kind == "forecast"]


# --- burn rates ------------------------------------------------------------------------------


def test_burn_rate_is_the_use_over_the_lookback():
    pts = [(0.0, 0.0), (HOUR, 0.01), (2 * HOUR, 0.03), (3 * HOUR, 0.06)]
    assert burn(pts, 3 * HOUR, HOUR) == pytest.approx(0.03 / HOUR)
    assert burn(pts, 3 * HOUR, 2 * HOUR) == pytest.approx(0.05 / (2 * HOUR))
    assert used_at(pts, 1.5 * HOUR) == pytest.approx(0.02)  # linear between readings


def test_burn_rate_needs_history_that_reaches_back():
    pts = [(0.0, 0.0), (HOUR, 0.01)]
    assert burn(pts, HOUR, 2 * HOUR) is None
    assert burn(pts[:1], 0.0, HOUR) is None
    # ...and readings around its start: a day-long gap tells nothing about the last hour.
    assert burn([(0.0, 0.0), (DAY, 0.5)], DAY, 6 * HOUR) is None


def test_a_short_lookback_is_measured_between_runs_the_timer_delayed():
    # Runs every 15 minutes, each up to 2 minutes late: 17 minutes apart around the start
    # of a 15-minute lookback still measure it; 30 minutes (a missed run) do not.
    late = [(0.0, 0.0), (13 * 60.0, 0.013), (30 * 60.0, 0.03)]  # 0.1 % a minute
    assert burn(late, 30 * 60.0, 15 * 60.0) == pytest.approx(0.001 / 60)
    missed = [(0.0, 0.0), (30 * 60.0, 0.03), (32 * 60.0, 0.032)]
    assert burn(missed, 32 * 60.0, 15 * 60.0) is None


def test_a_correction_downwards_counts_as_no_use():
    assert burn([(0.0, 0.5), (HOUR, 0.4)], HOUR, HOUR) == 0.0


def steady(rate_per_day: float, days: float, step: float = HOUR):
    return [(t * step, rate_per_day * t * step / DAY) for t in range(int(days * DAY / step) + 1)]


def test_a_pace_a_little_too_fast_waits_and_one_twice_too_fast_fires_at_once():
    rules = forecast.DEFAULT_RULES["period"]
    pts = steady(0.04, 10)  # 4 % a day: 40 % after 10 days, empty on day 25 of 30
    a = assess(pts, 10 * DAY, 0.0, MONTH, rules, ForecastSettings())
    assert a.pace == pytest.approx(0.04 / DAY)
    assert a.projected_at_reset == pytest.approx(1.2)
    assert a.exhaustion_at == pytest.approx(25 * DAY)
    assert not a.safe
    assert a.firing is None  # 1.2 times too fast is told only once it runs out within 7 days
    slower = steady(0.036, 21)  # runs out on day 27.8: within 7 days from day 20.8 on
    assert assess(slower[:-24], 20 * DAY, 0.0, MONTH, rules, ForecastSettings()).firing is None
    assert assess(slower, 21 * DAY, 0.0, MONTH, rules, ForecastSettings()).firing == rules[1]
    # Twice too fast over a whole week is told at once.
    fast = steady(0.06, 8)  # 48 % after 8 days; what is left lasts only 22 / 2.5 days more
    assert assess(fast, 8 * DAY, 0.0, MONTH, rules, ForecastSettings()).firing == rules[0]


def test_a_pace_that_lasts_does_not_fire_and_is_safe():
    pts = steady(0.025, 10)
    a = assess(pts, 10 * DAY, 0.0, MONTH, forecast.DEFAULT_RULES["period"], ForecastSettings())
    assert a.firing is None and a.safe
    assert a.projected_at_reset == pytest.approx(0.75)


def test_one_busy_morning_does_not_fire():
    # 2 % a day for a week, then 8 % in one morning: the short lookback burns, the long one not.
    pts = steady(0.02, 7)
    pts += [(7 * DAY + h * HOUR, 0.14 + 0.02 * h) for h in range(1, 5)]
    now = pts[-1][0]
    a = assess(pts, now, 0.0, MONTH, forecast.DEFAULT_RULES["period"], ForecastSettings())
    assert burn(pts, now, 6 * HOUR) > 1 / (MONTH - now)  # the morning alone would run out
    assert a.firing is None


def test_a_burst_that_is_over_does_not_fire():
    # A heavy first day (30 %), then calm: the 3-day lookback still burns, the 6-hour one not.
    pts = [(h * HOUR, 0.3 * h / 24) for h in range(25)]
    pts += [(DAY + h * HOUR, 0.3 + 0.01 * h / 24) for h in range(1, 48)]
    now = pts[-1][0]
    a = assess(pts, now, 0.0, MONTH, forecast.DEFAULT_RULES["period"], ForecastSettings())
    assert a.firing is None


def test_nothing_fires_before_the_minimum_elapsed_share():
    rules = (Rule(7 * DAY, DAY, 1.0),)
    settings = ForecastSettings(min_elapsed={"period": 0.1})
    pts = steady(0.2, 2.5)  # runs out on day 5, but only 8 % of the month has passed
    assert assess(pts, 2.5 * DAY, 0.0, MONTH, rules, settings).firing is None
    later = assess(steady(0.2, 3.5), 3.5 * DAY, 0.0, MONTH, rules, settings)
    assert later.firing == rules[0]
    # The setting decides: with 20 % nothing is said on day 3.5 either.
    strict = ForecastSettings(min_elapsed={"period": 0.2})
    assert assess(steady(0.2, 3.5), 3.5 * DAY, 0.0, MONTH, rules, strict).firing is None


def test_a_lookback_longer_than_the_window_so_far_is_measured_since_it_began():
    # Day 4 of 30 at 20 % a day: the 7-day lookback cannot be covered yet, but the window
    # began empty 4 days ago, so the pace since then stands in for it (and for `rate`).
    pts = steady(0.2, 4)
    settings = ForecastSettings(min_elapsed={"period": 0.1})
    a = assess(pts, 4 * DAY, 0.0, MONTH, (Rule(7 * DAY, DAY, 1.0),), settings)
    assert a.firing is not None and a.rate == pytest.approx(0.2 / DAY)
    assert all(lb.seconds != 7 * DAY for lb in a.lookbacks)  # what is shown is what was measured
    # Without a known start (history that begins mid-window) nothing stands in.
    late = [(t + 10 * DAY, u) for t, u in pts]
    assert (
        assess(late, 14 * DAY, None, 40 * DAY, (Rule(7 * DAY, DAY, 1.0),), ForecastSettings()).firing is None
    )


def test_a_rule_with_a_hold_fires_on_a_pace_that_held_not_on_a_burst():
    # 1 % a day for 10 days, then 3 % an hour: a burst of 4 hours or a new pace.
    rule, held = Rule(DAY, 2 * HOUR, 1.0), Rule(DAY, 2 * HOUR, 1.0, 6 * HOUR)
    calm = steady(0.01, 10)

    def burst(hours):
        return calm + [(10 * DAY + h * HOUR, 0.1 + 0.03 * h) for h in range(1, hours + 1)]

    four, eight = burst(4), burst(8)
    assert assess(four, four[-1][0], 0.0, MONTH, (rule,), ForecastSettings()).firing == rule
    assert assess(four, four[-1][0], 0.0, MONTH, (held,), ForecastSettings()).firing is None
    assert assess(eight, eight[-1][0], 0.0, MONTH, (held,), ForecastSettings()).firing == held


def test_a_rule_within_a_horizon_waits_until_running_out_is_that_close():
    # 4 % a day from the start of a 30-day month: runs out on day 25. A rule within
    # 5 days fires once running out is 5 days away (day 20), not on day 10.
    rule, within = Rule(7 * DAY, DAY, 1.0), Rule(7 * DAY, DAY, 1.0, 0.0, 5 * DAY)
    early, late = steady(0.04, 10), steady(0.04, 20.5)
    assert assess(early, 10 * DAY, 0.0, MONTH, (rule,), ForecastSettings()).firing == rule
    assert assess(early, 10 * DAY, 0.0, MONTH, (within,), ForecastSettings()).firing is None
    assert assess(late[:-13], 20 * DAY - HOUR, 0.0, MONTH, (within,), ForecastSettings()).firing is None
    assert assess(late, 20.5 * DAY, 0.0, MONTH, (within,), ForecastSettings()).firing == within
    # It still fires only on a pace that runs out before the reset: 2.5 % a day from day
    # 20 on, from 72.5 %, is at 90 % on day 27 and runs out 4 days later, within 5 days
    # but a day after the reset.
    near = [(t, u) for t, u in steady(0.025, 27) if t >= 20 * DAY]
    near = [(t, 0.725 + u - near[0][1]) for t, u in near]
    assert assess(near, 27 * DAY, 0.0, MONTH, (within,), ForecastSettings()).firing is None


def test_a_burst_that_ends_before_running_out_is_close_is_not_told():
    # 2 % a day, then a 2-day burst of 10 % a day from day 10: at that pace the month
    # would run out days after the burst, so the default rules wait; it stops, 2 % a
    # day lasts to the reset (76 %), and nothing was said.
    rules = forecast.DEFAULT_RULES["period"]
    pts = steady(0.02, 10)
    pts += [(10 * DAY + h * HOUR, 0.2 + 0.1 * h / 24) for h in range(1, 49)]
    pts += [(12 * DAY + h * HOUR, 0.4 + 0.02 * h / 24) for h in range(1, 24 * 5)]
    fired = [
        t
        for t, _ in pts
        if t >= 8 * DAY
        and assess([p for p in pts if p[0] <= t], t, 0.0, MONTH, rules, ForecastSettings()).firing
    ]
    # At its end the burst burns more than twice the pace that lasts (24 h and 3 h).
    needed = (1 - 0.4) / (MONTH - 12 * DAY)
    assert min(burn(pts[: 12 * 24 + 1], 12 * DAY, s) for s in (DAY, 3 * HOUR)) > 2 * needed
    assert fired == []


def daily(uses: list[float], step: float = HOUR) -> list[tuple[float, float]]:
    """Points hour by hour from 0, each day using its share of ``uses`` evenly."""
    pts, used = [(0.0, 0.0)], 0.0
    for day, use in enumerate(uses):
        for h in range(1, int(DAY / step) + 1):
            pts.append((day * DAY + h * step, used + use * h * step / DAY))
        used += use
    return pts


def test_the_swing_of_use_is_its_spread_from_block_to_block():
    assert forecast.swing(steady(0.04, 2.9), 2.9 * DAY, 0.0, DAY) is None  # under 3 whole days
    assert forecast.swing(steady(0.04, 10), 10 * DAY, 0.0, DAY) == pytest.approx(0.0, abs=1e-12)
    # 1 %, 3 %, 1 %, 3 % a day: a mean of 2 %, a standard deviation of 1 %.
    assert forecast.swing(daily([0.01, 0.03] * 2), 4 * DAY, 0.0, DAY) == pytest.approx(0.5)
    # Blocks count back from now: half a day in, the first half-day is left out.
    pts = daily([0.05, 0.01, 0.03, 0.01, 0.03])
    assert forecast.swing(pts, 5 * DAY, 0.5 * DAY, DAY) == pytest.approx(0.5)
    assert forecast.swing([(0.0, 0.2), (5 * DAY, 0.2)], 5 * DAY, 0.0, DAY) is None  # no use


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 200).map(lambda n: n / 1000), min_size=1, max_size=20),
    st.floats(0.01, 100, allow_nan=False),
)
def test_the_swing_is_a_share_whatever_the_scale_of_use(uses, scale):
    pts = daily(uses, 6 * HOUR)
    now = len(uses) * DAY
    spread = forecast.swing(pts, now, 0.0, DAY)
    if spread is None:
        assert len(uses) < forecast.MIN_NOISE_BLOCKS or sum(uses) == 0
        return
    assert spread >= 0
    scaled = forecast.swing([(t, u * scale) for t, u in pts], now, 0.0, DAY)
    assert scaled == pytest.approx(spread, rel=1e-6, abs=1e-9)


def test_a_noise_margin_asks_more_of_a_pace_the_noisier_use_was():
    noise = forecast.Noise(1.0, 0.5, DAY)
    assert noise.factor(HOUR) == 1.5  # less than a block still to come: the whole swing
    assert noise.factor(4 * DAY) == 1.25  # four blocks: half of it
    # 3.5 % a day for 14 days, steady or in days of 1.5 % and 5.5 %: 49 % used, and at
    # that pace the month runs out on day 29 of 30, so a two-week rule fires on either.
    rule = Rule(14 * DAY, 2 * DAY, 1.0)
    calm = daily([0.035] * 14)
    noisy = daily([0.015, 0.055] * 7)
    margin = ForecastSettings(noise_margin={"period": 1.0})
    none = ForecastSettings(noise_margin={})
    for pts in (calm, noisy):
        assert assess(pts, 14 * DAY, 0.0, MONTH, (rule,), none).firing == rule
    # With a margin of one standard deviation the steady days still fire; the swinging
    # ones (a swing of 0.57, 16 days still to come: 14 % more asked) do not.
    assert assess(calm, 14 * DAY, 0.0, MONTH, (rule,), margin).firing == rule
    assert forecast.swing(noisy, 14 * DAY, 0.0, DAY) == pytest.approx(0.02 / 0.035)
    assert assess(noisy, 14 * DAY, 0.0, MONTH, (rule,), margin).firing is None
    # The margin is the kind's: another kind's does not apply.
    other = ForecastSettings(noise_margin={"weekly": 1.0})
    assert assess(noisy, 14 * DAY, 0.0, MONTH, (rule,), other).firing == rule


def test_a_noisy_pace_that_clears_the_margin_still_fires_and_the_horizon_sets_the_margin():
    # 1.5 % and 5.5 % a day in turn for 14 days (a swing of 0.57), then a week-long rule:
    # a 7-day pace of 3.5 % a day against the 3.2 % that runs out at the reset.
    noisy = daily([0.015, 0.055] * 7)
    rule = Rule(7 * DAY, 2 * DAY, 1.0)
    small = ForecastSettings(noise_margin={"period": 0.5})  # 7 % more asked: 3.4 %
    assert assess(noisy, 14 * DAY, 0.0, MONTH, (rule,), small).firing == rule
    big = ForecastSettings(noise_margin={"period": 1.0})  # 14 % more asked: 3.6 %
    assert assess(noisy, 14 * DAY, 0.0, MONTH, (rule,), big).firing is None
    # The margin is spread over the rule's horizon, not the whole time left: 5 % and
    # 15 % a day in turn for 4 days (40 % used, a swing of 0.5), a rule within 6.5 days
    # (a pace of 9.2 % a day). Over 6.5 days a margin of 0.6 asks 12 % more (10.3 %), which
    # a 2-day pace of 10 % does not clear; over the 26 days left it would ask 6 % more.
    fast = daily([0.05, 0.15] * 2)
    within = Rule(2 * DAY, DAY, 1.0, 0.0, 6.5 * DAY)
    assert assess(fast, 4 * DAY, 0.0, MONTH, (within,), ForecastSettings(noise_margin={})).firing == within
    some = ForecastSettings(noise_margin={"period": 0.6})
    assert assess(fast, 4 * DAY, 0.0, MONTH, (within,), some).firing is None
    assert forecast.Noise(0.6, 0.5, DAY).factor(26 * DAY) < 1.0 / (0.6 / 6.5) * 0.1
    # The 5-hour window's blocks are quarter-hours: 7.875 % and 2.625 % in turn for 2
    # hours (a swing of 0.5), a pace of 21 % an hour against the 19.3 % that runs out at
    # the reset, 3 hours away: a margin of 1 over 12 quarter-hours asks 14 % more.
    window = 5 * HOUR
    pts = [(0.0, 0.0)]
    for quarter in range(8):
        for minute in (5, 10, 15):
            use = 0.02625 if quarter % 2 else 0.07875
            pts.append((quarter * 900 + minute * 60, pts[-1][1] + use / 3))
    five = Rule(HOUR, 0.5 * HOUR, 1.0)
    calm = ForecastSettings(noise_margin={"5h": 0.0})
    assert assess(pts, 2 * HOUR, 0.0, window, (five,), calm, "5h").firing == five
    margin = ForecastSettings(noise_margin={"5h": 1.0})
    assert forecast.swing(pts, 2 * HOUR, 0.0, 900) == pytest.approx(0.5)
    assert assess(pts, 2 * HOUR, 0.0, window, (five,), margin, "5h").firing is None
    margin = ForecastSettings(noise_margin={"period": 1.0})  # in days: fewer than 3 blocks
    assert assess(pts, 2 * HOUR, 0.0, window, (five,), margin, "period").firing == five


def test_a_holds_earlier_checks_ask_the_same_noise_margin():
    # 1 % and 6 % a day in turn for 4 days, then 6 % a day for 2 (a swing of 0.54): 26 %
    # used on day 6. A 2-day rule with a 2-day hold looks back at day 6, 5 and 4. On day 4
    # the 2-day pace was 3.5 % a day against the 3.31 % that ran out at the reset: clear of
    # that, not of the 10.7 % more a margin of 1 asks over the 26 days then left (3.66 %).
    pts = daily([0.01, 0.06, 0.01, 0.06, 0.06, 0.06])
    now = 6 * DAY
    plain, held = Rule(2 * DAY, DAY, 1.0), Rule(2 * DAY, DAY, 1.0, 2 * DAY)
    margin = ForecastSettings(noise_margin={"period": 1.0})
    assert forecast.swing(pts, now, 0.0, DAY) == pytest.approx(0.544, abs=0.001)
    assert assess(pts, now, 0.0, MONTH, (plain,), margin).firing == plain  # today clears it
    assert assess(pts, now, 0.0, MONTH, (held,), ForecastSettings(noise_margin={})).firing == held
    assert assess(pts, now, 0.0, MONTH, (held,), margin).firing is None


def test_the_swing_leaves_out_blocks_in_a_gap_between_readings():
    # A billing period's history starts at its start (empty) but the job was installed
    # on day 10: those days are one straight line, not 10 steady days.
    late = [(0.0, 0.0)] + [(t + 10 * DAY, 0.3 + u) for t, u in daily([0.02, 0.06] * 2)]
    assert forecast.swing(late, 14 * DAY, 0.0, DAY) == pytest.approx(0.5)
    assert forecast.swing(late[:-48], 12 * DAY, 0.0, DAY) is None  # 2 days after the gap


def test_the_noise_margin_looks_at_the_whole_window_so_far(tmp_path):
    # 12 days of 1.5 % and 5.5 % in turn, then 2 steady days of 3.5 %: 49 % used on day 14.
    # The rule looks back 2 days only (steady), but the days before show the swing.
    from alerter.rules import assess_meter
    from alerter.state import MeterMemory

    pts = daily([0.015, 0.055] * 6 + [0.035, 0.035])
    samples = [[round(START + t), round(u * 20 * M)] for t, u in pts]
    history = [{"start": START, "end": START + MONTH, "scale": 20 * M, "samples": samples}]
    now = START + 14 * DAY
    meter = period_reading(pts[-1][1], now).meters[0]
    rules = {"period": [{"long_hours": 48, "short_hours": 12}]}
    quiet = config({"forecast": {"rules": rules, "noise_margin": {"period": 1}}})
    loud = config({"forecast": {"rules": rules, "noise_margin": {"period": 0}}})
    assert assess_meter(meter, MeterMemory(history=history), loud, now).firing is not None
    assert assess_meter(meter, MeterMemory(history=history), quiet, now).firing is None


def test_a_used_up_meter_is_left_to_the_100_percent_threshold():
    pts = steady(0.1, 11)
    a = assess(pts, 11 * DAY, 0.0, MONTH, forecast.DEFAULT_RULES["period"], ForecastSettings())
    assert a.used >= 1 and a.firing is None and a.exhaustion_at == 11 * DAY


# --- episodes ----------------------------------------------------------------------------------


def test_an_episode_starts_once_and_ends_after_a_safe_pace_lasts():
    rule = Rule(DAY, HOUR, 1.0)
    firing = forecast.Assessment(used=0.5, window_end=MONTH, firing=rule, now=0.0)
    calm = forecast.Assessment(used=0.5, window_end=MONTH, safe=True, now=0.0)
    unsure = forecast.Assessment(used=0.5, window_end=MONTH, now=0.0)
    assert next_episode(None, unsure, 0.0, DAY) is None
    state = next_episode(None, firing, 0.0, DAY)
    assert state == Episode(0)
    assert next_episode(state, firing, HOUR, DAY) == state
    state = next_episode(state, calm, 2 * HOUR, DAY)
    assert state.safe_since == 2 * HOUR
    state = next_episode(state, unsure, 3 * HOUR, DAY)
    assert state == Episode(0)  # not known to be safe: the wait starts over
    for hour in range(4, 4 + 24):
        state = next_episode(state, calm, hour * HOUR, DAY)
        assert state is not None
    assert next_episode(state, calm, 28 * HOUR, DAY) is None


def test_time_without_readings_does_not_count_as_safe():
    calm = forecast.Assessment(used=0.5, window_end=MONTH, safe=True, now=0.0)
    state = next_episode(Episode(0), calm, HOUR, DAY)
    state = next_episode(state, calm, 2 * DAY, DAY)  # the job did not run for two days
    assert state is not None and state.safe_since == 2 * DAY


def test_evaluate_sends_one_forecast_per_episode_with_when_and_a_daily_budget():
    uses = [0.05 * h / 24 for h in range(1, 15 * 24)]  # 5 % a day: empty on day 20 of 30
    sent, state = run_hourly(uses)
    (when, alert), *more = forecasts(sent)
    assert more == []
    assert when - START == 10 * DAY  # once the week's pace is twice what lasts to the reset
    assert alert.severity == "warning"
    # It runs out at midnight starting day 21; where a float's last bit falls, a minute before.
    assert alert.title in {
        f"Factory standard runs out {when} at this pace, {early} before the reset"
        for when in ("Sat 20 Dec 23:59", "Sun 21 Dec 00:00")
        for early in ("10d 0h", "9d 23h")
    }
    assert "pace over the last 7 days: 5.0% a day (1M tokens)" in alert.body
    assert "To last until the reset: at most" in alert.body
    episode = state.meters["standard"].episode
    assert state.delivered(DeliveryKey("standard", "forecast", episode.since, 0.0)).keys() == {"stdout"}


def test_a_failed_channel_stays_due_and_the_others_are_not_told_twice(tmp_path):
    cfg = config({"notify": {"urls": ["json://127.0.0.1:9/a", "json://127.0.0.1:9/b"]}})
    uses = [0.05 * h / 24 for h in range(1, 12 * 24)]
    state = State()
    delivered = []
    for hour, used in enumerate(uses, 1):
        now = START + hour * HOUR
        alerts, state = evaluate(period_reading(used, now), state, cfg, now)
        for alert in alerts:
            if alert.kind != "forecast":
                continue
            good = alert.channels[0] if len(delivered) < 2 else alert.channels[-1]
            delivered.append(alert.channels)
            state = record_delivery(state, alert.key, good, now)  # only one of the two gets it
    assert len(delivered[0]) == 2 and len(delivered[1]) == 1  # the failed one, an hour later
    assert len(delivered) == 2


def test_a_calm_week_rearms_and_a_new_window_starts_afresh():
    fast = [0.08 * h / 24 for h in range(1, 8 * 24)]  # 64 % after 8 days: warned
    calm = [fast[-1] + 0.005 * h / 24 for h in range(1, 10 * 24)]  # then 0.5 % a day
    fast_again = [calm[-1] + 0.08 * h / 24 for h in range(1, 4 * 24)]
    sent, state = run_hourly(fast + calm + fast_again)
    times = [t - START for t, _ in forecasts(sent)]
    assert len(times) == 2
    assert times[1] > 18 * DAY  # after the calm spell, not during it
    # A new period: history and episode start over.
    nxt = START + MONTH
    alerts, state = evaluate(period_reading(0.001, nxt + HOUR, nxt), state, config(), nxt + HOUR)
    saved = state.meters["standard"]
    assert saved.episode is None and not [k for k in state.ledger if k.kind == "forecast"]
    assert [s["start"] for s in saved.history][-1] == nxt
    assert len(saved.history[-1]["samples"]) == 1


def test_a_period_without_an_end_uses_the_length_of_the_previous_one():
    cfg = config()
    state = State()
    old = START - MONTH
    _, state = evaluate(period_reading(0.5, START - DAY, old), state, cfg, START - DAY)
    uses = [0.06 * h / 24 for h in range(1, 8 * 24)]
    for hour, used in enumerate(uses, 1):
        now = START + hour * HOUR
        tokens = int(used * 20 * M)
        meter = Meter("standard", tokens / (20 * M), START, None, tokens, 20 * M)
        alerts, state = evaluate(Reading("allowance", (meter,)), state, cfg, now)
        if any(a.kind == "forecast" for a in alerts):
            break
    else:
        pytest.fail("no forecast for a period with no end")
    assert state.meters["standard"].period_seconds == MONTH


def test_a_period_with_no_end_and_no_past_is_not_forecast():
    state = State()
    for hour in range(1, 10 * 24):
        now = START + hour * HOUR
        meter = Meter("standard", 0.1 * hour / 24, START, None, int(2 * M * hour / 24), 20 * M)
        alerts, state = evaluate(Reading("allowance", (meter,)), state, config(), now)
        assert not [a for a in alerts if a.kind == "forecast"]


def test_inactive_and_unlimited_meters_are_never_forecast():
    reading = Reading(
        "limits",
        (
            Meter("standard.5h", 0.0, window_end=START, active=False),
            Meter("standard", 0.0, START, START + MONTH, 10**13, None, unlimited=True),
        ),
    )
    alerts, state = evaluate(reading, State(), config(), START + HOUR)
    assert alerts == [] and state.meters == {}


def test_forecasts_can_be_turned_off_and_thresholds_stay_as_they_were():
    uses = [0.05 * h / 24 for h in range(1, 15 * 24)]
    off, _ = run_hourly(uses, config({"forecast": {"enabled": False}}))
    on, _ = run_hourly(uses)
    assert [(t, a.kind, a.level) for t, a in off] == [(START + 240 * HOUR, "threshold", 50.0)]
    assert [(t, a) for t, a in on if a.kind == "threshold"] == off


json_any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
numbers = st.integers(-(10**16), 10**16) | st.floats(allow_nan=True, allow_infinity=True)
sample_like = st.lists(numbers | json_any, min_size=0, max_size=3) | json_any
segment_like = json_any | st.fixed_dictionaries(
    {},
    optional={
        "start": st.just(float(START)) | numbers | json_any,
        "end": numbers | json_any,
        "scale": numbers | json_any,
        "samples": st.lists(sample_like, max_size=6) | json_any,
    },
)
entry_like = st.fixed_dictionaries(
    {"window": st.just({"start": float(START), "end": float(START + MONTH)}) | json_any},
    optional={
        "history": st.lists(segment_like, max_size=3) | json_any,
        "forecast": json_any
        | st.fixed_dictionaries(
            {},
            optional={
                "episode": json_any
                | st.fixed_dictionaries({}, optional={"sent": json_any, "since": json_any}),
                "safe_since": numbers | json_any,
                "safe_last": numbers | json_any,
            },
        ),
        "period_seconds": numbers | json_any,
    },
)


@settings(max_examples=300, deadline=None)
@given(entry_like, st.sampled_from([0.2, 0.7, 1.1]))
def test_any_remembered_forecast_state_is_survived(entry, used):
    state, _ = load({"version": 1, "meters": {"standard": entry}})
    for hour in (24 * 8, 24 * 8 + 1, 24 * 40):
        now = START + hour * HOUR
        alerts, state = evaluate(period_reading(used, now), state, config(), now)
        for alert in alerts:
            state = record_delivery(state, alert.key, alert.channels[0], now)
        assert load(json.loads(json.dumps(dump(state))))[0] == state
    from alerter.backtest import export_history

    json.dumps(export_history(load({"version": 1, "meters": {"standard": entry}})[0]))


# --- config ---------------------------------------------------------------------------------------


def test_forecast_config_is_validated_like_the_rest():
    with pytest.raises(ConfigError) as err:
        config(
            {
                "forecast": {
                    "enabled": "yes",
                    "severity": "loud",
                    "min_elapsed_percent": 200,
                    "colour": "red",
                    "rules": {"5h": [{"long_hours": 1, "short_hours": 2}], "daily": []},
                }
            }
        )
    problems = err.value.problems
    assert "At 'forecast.enabled': must be true or false, not 'yes'" in problems
    assert any(p.startswith("At 'forecast.severity': must be one of") for p in problems)
    assert any(p.startswith("At 'forecast.min_elapsed_percent': must be a number") for p in problems)
    assert any(p.startswith("At 'forecast.colour': unknown key") for p in problems)
    assert any(p.startswith("At 'forecast.rules.daily': unknown key") for p in problems)
    assert "At 'forecast.rules.5h[0].short_hours': must be shorter than long_hours (1)" in problems


def test_forecast_config_defaults_and_overrides():
    default = config().forecast
    assert default.enabled and default.severity == "warning"
    assert {k: default.min_elapsed_for(k) for k in forecast.WINDOW_KINDS} == forecast.DEFAULT_MIN_ELAPSED
    assert [r.long_seconds / HOUR for r in default.rules_for("period")] == [168, 168, 24]
    assert [r.within_seconds / HOUR for r in default.rules_for("period")] == [0, 168, 48]
    assert {k: default.noise_margin_for(k) for k in forecast.WINDOW_KINDS} == forecast.DEFAULT_NOISE_MARGIN
    custom = config(
        {"forecast": {"severity": "critical", "rules": {"period": [{"long_hours": 48, "short_hours": 4}]}}}
    ).forecast
    assert custom.severity == "critical"
    assert custom.rules_for("period") == (Rule(48 * HOUR, 4 * HOUR, 1.0),)
    assert custom.rules_for("5h") == forecast.DEFAULT_RULES["5h"]


# --- the state stays small ------------------------------------------------------------------------


def test_thinning_does_not_depend_on_how_often_it_runs():
    samples = [[START + i * 300, i] for i in range(12 * 24 * 20)]
    now = samples[-1][0]
    once = forecast.thin([{"samples": samples}], now, "period")
    often = [{"samples": samples[:1]}]
    for sample in samples[1:]:
        t = sample[0]
        often = forecast.thin([{"samples": [*often[0]["samples"], sample]}], t, "period")
    assert once == often
    kept = [s[0] for s in once[0]["samples"]]
    assert 24 <= sum(1 for t in kept if now - t < DAY) <= 25  # hourly for the last day


def limits_account(days: float, pools: tuple[str, ...] = ("standard", "core")):
    """Run a limits account (three windows per pool, all in use) every five minutes.

    Yield (day, state) once a day.
    """
    cfg = config()
    state = State()
    lengths = {"5h": 5 * HOUR, "weekly": 7 * DAY, "monthly": MONTH}
    for step in range(int(days * 288)):
        now = START + step * 300
        meters = []
        for pool in pools:
            for suffix, length in lengths.items():
                end = START + ((now - START) // length + 1) * length
                used = 0.9 * (now - end + length) / length
                meters.append(Meter(f"{pool}.{suffix}", used, window_end=end))
        alerts, state = evaluate(Reading("limits", tuple(meters)), state, cfg, now)
        for alert in alerts:
            for channel in alert.channels:
                state = record_delivery(state, alert.key, channel, now)
        if step % 288 == 0:
            yield step // 288, state


def most_samples(kind: str) -> int:
    """The most samples the thinning bands of a window kind can hold (plus one per band edge)."""
    total, previous = 0, 0.0
    for max_age, step in forecast.THINNING[kind]:
        total += math.ceil((max_age - previous) / step) + 1
        previous = max_age
    return total + 1


def test_history_is_bounded_by_its_thinning_bands_whatever_the_run_count():
    # Runs every 5 minutes. History is kept for at most 47 days, so 50 days reach the
    # bound a year would (the slow test below runs the year). One pool of limit windows
    # here; the worst case the job meets has two, which is twice the size.
    for day, state in limits_account(50, pools=("standard",)):
        for meter_id, saved in state.meters.items():
            count = sum(len(segment["samples"]) for segment in saved.history)
            assert count <= most_samples(forecast.window_kind(meter_id)), (day, meter_id, count)
        assert 2 * len(json.dumps(dump(state))) < 64 * 1024
    assert 150 <= most_samples("monthly") <= 170


@pytest.mark.slow
def test_a_year_of_five_minute_runs_keeps_the_state_under_64_kib():
    sizes = [len(json.dumps(dump(state))) for _, state in limits_account(365)]
    assert len(sizes) == 365
    assert max(sizes) < 64 * 1024, max(sizes)


def test_the_example_config_documents_the_forecast_defaults():
    import yaml

    from tests.test_backtest import ROOT

    documented = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert "forecast" in documented
    assert config({"forecast": documented["forecast"]}).forecast == config().forecast


def test_the_share_of_earlier_releases_is_read_as_its_percent_with_its_fix():
    old = config({"forecast": {"min_elapsed_share": 0.25}})
    assert old.forecast.min_elapsed_for("5h") == 0.25
    assert "replace `min_elapsed_share: 0.25` with `min_elapsed_percent: 25`" in old.deprecations[0]
    assert config({"forecast": {"min_elapsed_percent": 25}}).forecast.min_elapsed_for("weekly") == 0.25


def test_the_minimum_elapsed_percent_and_a_hold_per_window_kind():
    custom = config(
        {
            "forecast": {
                "min_elapsed_percent": {"5h": 40},
                "rules": {"weekly": [{"long_hours": 48, "short_hours": 6, "hold_hours": 12}]},
            }
        }
    ).forecast
    assert custom.min_elapsed_for("5h") == 0.4
    assert custom.min_elapsed_for("period") == forecast.DEFAULT_MIN_ELAPSED["period"]
    assert custom.rules_for("weekly") == (Rule(48 * HOUR, 6 * HOUR, 1.0, 12 * HOUR),)
    within = config(
        {"forecast": {"rules": {"5h": [{"long_hours": 2, "short_hours": 0.5, "within_hours": 1.5}]}}}
    ).forecast
    assert within.rules_for("5h") == (Rule(2 * HOUR, 0.5 * HOUR, 1.0, 0.0, 1.5 * HOUR),)
    with pytest.raises(ConfigError) as err:
        config({"forecast": {"rules": {"5h": [{"long_hours": 2, "short_hours": 0.5, "within_hours": -1}]}}})
    assert any(p.startswith("At 'forecast.rules.5h[0].within_hours': must be") for p in err.value.problems)
    noise = config({"forecast": {"noise_margin": 1}}).forecast
    assert {noise.noise_margin_for(k) for k in forecast.WINDOW_KINDS} == {1.0}
    noise = config({"forecast": {"noise_margin": {"5h": 0.75}}}).forecast
    assert noise.noise_margin_for("5h") == 0.75
    assert noise.noise_margin_for("weekly") == forecast.DEFAULT_NOISE_MARGIN["weekly"]
    with pytest.raises(ConfigError) as err:
        config({"forecast": {"noise_margin": {"5h": -1, "daily": 1}}})
    assert any(p.startswith("At 'forecast.noise_margin.5h': must be a number") for p in err.value.problems)
    assert any(p.startswith("At 'forecast.noise_margin.daily': unknown key") for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        config({"forecast": {"noise_margin": True}})
    assert any(p.startswith("At 'forecast.noise_margin': must be a number") for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        config({"forecast": {"noise_margin": "high"}})
    assert any(p.startswith("At 'forecast.noise_margin': must be a number") for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        config({"forecast": {"min_elapsed_percent": {"daily": 10, "5h": 95}}})
    assert any(
        p.startswith("At 'forecast.min_elapsed_percent.daily': unknown key") for p in err.value.problems
    )
    assert any(
        p.startswith("At 'forecast.min_elapsed_percent.5h': must be a number") for p in err.value.problems
    )
