"""The pure decision core: thresholds, windows, dedup, delivery records."""

from __future__ import annotations

from alerter.config import Channel, Config
from alerter.meters import Meter, Reading
from alerter.rules import evaluate, highest_delivered, login_expired_alert, same_window
from alerter.state import State, Window, record_delivery

NOW = 1_800_000_000.0
A = Channel(id="a", label="a", url="json://a")
B = Channel(id="b", label="b", url="json://b", severities=frozenset({"critical"}))


def reading(*meters: Meter) -> Reading:
    return Reading(endpoint="allowance", meters=meters)


def period(ratio: float, start: float = NOW - 86400, end: float | None = NOW + 86400) -> Meter:
    return Meter("standard", ratio, window_start=start, window_end=end, used_tokens=0, allowance_tokens=100)


def window(ratio: float, end: float, active: bool = True) -> Meter:
    return Meter("standard.5h", ratio, window_end=end, active=active)


def deliver_all(alerts, state):
    for alert in alerts:
        for ch in alert.channels:
            state = record_delivery(state, alert.key, ch, NOW)
    return state


def test_no_threshold_crossed_no_alert():
    alerts, state = evaluate(reading(period(0.49)), State(), Config(), NOW)
    assert alerts == [] and state.ledger == {} and "standard" in state.meters


def test_exactly_at_a_threshold_alerts():
    alerts, _ = evaluate(reading(period(0.8)), State(), Config(), NOW)
    assert [a.level for a in alerts] == [80.0]


def test_highest_crossed_threshold_only():
    alerts, _ = evaluate(reading(period(0.99)), State(), Config(), NOW)
    assert len(alerts) == 1 and alerts[0].level == 95.0 and alerts[0].severity == "warning"


def test_evaluate_does_not_record_deliveries_and_does_not_mutate_input():
    state = State()
    alerts, new_state = evaluate(reading(period(0.85)), state, Config(), NOW)
    assert state == State()
    again, _ = evaluate(reading(period(0.85)), new_state, Config(), NOW)
    assert [a.level for a in again] == [80.0]  # not delivered yet: still due
    delivered = deliver_all(alerts, new_state)
    assert evaluate(reading(period(0.85)), delivered, Config(), NOW)[0] == []


def test_a_dip_does_not_rearm_and_a_new_period_does():
    _, state = evaluate(reading(period(0.85)), State(), Config(), NOW)
    state = deliver_all(evaluate(reading(period(0.85)), state, Config(), NOW)[0], state)
    assert evaluate(reading(period(0.5)), state, Config(), NOW)[0] == []
    assert evaluate(reading(period(0.85)), state, Config(), NOW)[0] == []
    new_period = period(0.85, start=NOW + 1, end=NOW + 30 * 86400)
    assert [a.level for a in evaluate(reading(new_period), state, Config(), NOW + 2)[0]] == [80.0]


def test_per_channel_routing_and_records():
    config = Config(channels=(A, B))
    alerts, state = evaluate(reading(period(1.0)), State(), config, NOW)
    assert [(a.level, a.channels) for a in alerts] == [(100.0, ("a", "b"))]
    state = record_delivery(state, alerts[0].key, "a", NOW)  # b failed
    assert highest_delivered(state, "standard", state.meters["standard"].window_key) == {"a": 100.0}
    alerts, _ = evaluate(reading(period(1.0)), state, config, NOW)
    assert [(a.level, a.channels) for a in alerts] == [(100.0, ("b",))]


def test_limit_windows_are_keyed_on_their_end_with_drift_tolerance():
    saved = Window(None, NOW)
    assert same_window(saved, window(0.5, NOW + 600))
    assert not same_window(saved, window(0.5, NOW + 5 * 3600))
    assert not same_window(Window(NOW, None), window(0.5, NOW))
    assert same_window(Window(NOW, None), period(0.5, start=NOW, end=NOW + 1))
    assert not same_window(None, period(0.5))


def test_inactive_and_unlimited_meters_never_alert():
    off = window(1.5, NOW - 10, active=False)
    unlimited = Meter("premium", 0.0, window_start=NOW, unlimited=True)
    assert evaluate(reading(off, unlimited), State(), Config(), NOW)[0] == []


def test_login_expired_is_sent_once_and_rearmed_by_a_working_login():
    config = Config(channels=(A,))
    alert = login_expired_alert(State(), config)
    assert alert is not None and alert.channels == ("a",) and alert.severity == "critical"
    state = record_delivery(State(), alert.key, "a", NOW)
    assert login_expired_alert(state, config) is None
    _, state = evaluate(reading(period(0.1)), state, config, NOW)
    assert login_expired_alert(state, config) is not None


def test_thresholds_per_meter_and_severity_bands():
    config = Config(thresholds={"default": (50.0,), "standard.5h": (70.0, 100.0)}, warning_at=70)
    alerts, _ = evaluate(reading(window(0.75, NOW + 3600)), State(), config, NOW)
    assert [(a.level, a.severity) for a in alerts] == [(70.0, "warning")]
