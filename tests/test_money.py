"""Money notices keep their word on flapping input: a balance a cent either side of
``low_balance_usd`` warns once, and a dip below 100 % does not start a new spending episode."""

from __future__ import annotations

from alerter.config import Channel, Config
from alerter.meters import Meter, Reading
from alerter.money import assess
from alerter.state import ExtraUsage, State, record_delivery

TEAM = Channel(id="ch-team", label="team", url="json://team")
T0 = 1_790_000_000.0
RUN = 900.0  # a run every 15 minutes


def reading(percent: float, cents: int) -> Reading:
    meters = (Meter("standard.5h", percent / 100, window_end=T0 + 5 * 3600, active=True),)
    return Reading("limits", meters, extra_usage_cents=cents, extra_usage_allowed=True)


def runs(readings: list[Reading], config: Config, state: State | None = None) -> tuple[list[str], State]:
    """Run ``assess`` once per reading, delivering every alert as the job would; return the
    titles delivered and the last state."""
    state = state or State()
    told = []
    for i, one in enumerate(readings):
        now = T0 + i * RUN
        alerts, state = assess(one, state, config, now)
        for alert in alerts:
            told.append(alert.title)
            for channel in alert.channels:
                state = record_delivery(state, alert.key, channel, now)
    return told, state


def test_a_balance_a_cent_either_side_of_the_level_warns_once():
    config = Config(channels=(TEAM,), low_balance_usd=10)
    flapping = [reading(50, cents) for cents in (999, 1001, 999, 1001, 999)]
    told, _ = runs(flapping, config)
    assert told == ["Factory extra-usage balance low: $9.99 (below $10)"]


def test_the_low_balance_notice_is_armed_again_once_topped_up_clearly_above_the_level():
    from alerter.money import rearm_cents

    config = Config(channels=(TEAM,), low_balance_usd=10)
    assert rearm_cents(10) == 1100 and rearm_cents(50) == 5500  # $1, else 10 %
    told, _ = runs([reading(50, c) for c in (900, 1099, 900, 1100, 900)], config)
    assert told == ["Factory extra-usage balance low: $9.00 (below $10)"] * 2


def test_a_dip_below_100_percent_is_the_same_spending_episode():
    config = Config(channels=(TEAM,))
    told, state = runs(
        [reading(100, 5000), reading(100, 4900), reading(99.5, 4900), reading(100, 4800), reading(100, 4700)],
        config,
    )
    assert told == ["Factory extra usage is being spent: $49.00 left"]
    assert state.extra_usage.spending_since == T0 + RUN


def test_usage_that_clearly_dropped_ends_the_episode_and_the_next_one_is_told():
    config = Config(channels=(TEAM,))
    told, _ = runs(
        [reading(100, 5000), reading(100, 4900), reading(10, 4900), reading(100, 4900), reading(100, 4800)],
        config,
    )
    assert told == [
        "Factory extra usage is being spent: $49.00 left",
        "Factory extra usage is being spent: $48.00 left",
    ]


def test_between_the_rearm_line_and_100_percent_no_episode_begins():
    told, state = runs([reading(95, 5000), reading(95, 4900)], Config(channels=(TEAM,)))
    assert told == [] and state.extra_usage == ExtraUsage(4900.0, None, None)


def test_a_balance_exactly_at_the_level_or_the_rearm_line_is_judged_exactly():
    """``low_balance_usd: 1.1`` made 1.1 * 100 = 110.00000000000001 cents: a balance of
    exactly $1.10 warned "below $1.1", and with 4.11 a top-up to exactly the re-arm line
    ($5.11) did not re-arm (511.00000000000006). One in 17 levels in cents did one or the other."""
    from alerter.money import rearm_cents

    at_level = Config(channels=(TEAM,), low_balance_usd=1.1)
    told, _ = runs([reading(50, 110), reading(50, 110)], at_level)
    assert told == []
    assert rearm_cents(4.11) == 511
    rearmed = Config(channels=(TEAM,), low_balance_usd=4.11)
    told, _ = runs([reading(50, 400), reading(50, 511), reading(50, 400)], rearmed)
    assert told == ["Factory extra-usage balance low: $4.00 (below $4.11)"] * 2
