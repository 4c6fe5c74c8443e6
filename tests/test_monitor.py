"""The pure self-monitoring decisions: (state, outcome, config, now) -> (alerts, state)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alerter import monitor
from alerter.config import Channel, Config, MonitorSettings, QuietHours
from alerter.meters import Meter, Reading
from alerter.rules import Alert, evaluate
from alerter.state import DeliveryKey, Health, Notice, State, dump, load, record_delivery
from tests.conftest import at_local

A = Channel(id="ch-a", label="a", url="json://a")
B = Channel(id="ch-b", label="b", url="json://b", severities=frozenset({"critical"}))
T0 = at_local(2026, 5, 29)  # midnight, local time


def config(**monitor_settings) -> Config:
    return Config(channels=(A, B), monitor=MonitorSettings(**monitor_settings))


def deliver(alerts, state, now, channels=None):
    for alert in alerts:
        for ch in alert.channels:
            if channels is None or ch in channels:
                state = record_delivery(state, alert.key, ch, now)
    return state


def test_not_working_fires_once_at_the_nth_failure_to_every_channel():
    cfg, state = config(failures_before_alert=3), State()
    fired = []
    for i in range(6):
        alerts, state = monitor.after_failure(state, cfg, T0 + i, "Factory API answered HTTP 500")
        fired.append(len(alerts))
        state = deliver(alerts, state, T0 + i)
    assert fired == [0, 0, 1, 0, 0, 0]
    assert {k: set(v) for k, v in monitor.unrecovered(state).items()} == {
        DeliveryKey("health", "stale", T0, 0.0): {"ch-a", "ch-b"}
    }
    assert state.health.failures == 6 and state.health.failing_since == T0


def test_working_again_goes_only_to_the_channels_told_and_only_once():
    cfg, state = config(failures_before_alert=1), State()
    alerts, state = monitor.after_failure(state, cfg, T0, "down")
    state = deliver(alerts, state, T0, channels={"ch-a"})  # b failed to receive it
    alerts, state = monitor.after_success(state, cfg, T0 + 60)
    (alert,) = alerts
    assert (alert.kind, alert.channels) == ("recovered", ("ch-a",))
    assert "after 1 failed run (failing since 00:00)" in alert.body
    state = deliver(alerts, state, T0 + 60)
    assert monitor.after_success(state, cfg, T0 + 120)[0] == []


def test_an_undelivered_working_again_is_retried_on_the_next_success():
    cfg, state = config(failures_before_alert=1), State()
    alerts, state = monitor.after_failure(state, cfg, T0, "down")
    state = deliver(alerts, state, T0)
    alerts, state = monitor.after_success(state, cfg, T0 + 60)  # not delivered
    again, _ = monitor.after_success(state, cfg, T0 + 120)
    assert [a.kind for a in again] == ["recovered"] and "after 1 failed run" in again[0].body


def test_an_expired_login_counts_but_has_its_own_notice():
    cfg, state = config(failures_before_alert=1), State()
    alerts, state = monitor.after_failure(state, cfg, T0, "login expired", login_expired=True)
    assert alerts == [] and state.health.failures == 1


def test_hours_without_success():
    cfg = config(failures_before_alert=99, hours_without_success=6)
    state = State(health=Health(last_success=T0))
    assert monitor.after_failure(state, cfg, T0 + 5 * 3600, "down")[0] == []
    assert len(monitor.after_failure(state, cfg, T0 + 6 * 3600, "down")[0]) == 1


def test_removed_channels_are_forgotten():
    stale = DeliveryKey("health", "stale", T0 - 60, 0.0)
    reset = DeliveryKey("standard.5h", "reset", T0 - 3600, 0.0)
    state = State(
        ledger={stale: {"ch-gone": T0 - 60, "ch-a": T0 - 60}},
        notices=(Notice(reset, "info", "t", "b", ("ch-gone",), T0 - 60),),
    )
    alerts, state = monitor.after_success(state, config(), T0)
    assert alerts[0].channels == ("ch-a",)
    owed, state = monitor.stored_notices(state, config())
    assert owed == [] and state.notices == ()


def limits(percent: float, end: float) -> Reading:
    active = end > T0
    return Reading(
        "limits", (Meter("standard.5h", percent / 100 if active else 0.0, window_end=end, active=active),)
    )


def run(reading, state, cfg, now):
    before = state
    alerts, state = evaluate(reading, state, cfg, now)
    more, state = monitor.after_read(reading, before, state, cfg, now)
    return more + alerts, state


def test_reset_notice_after_a_window_that_reached_100_and_only_for_info_channels():
    cfg = config(reset_notice=True)
    alerts, state = run(limits(100, T0 + 3600), State(), cfg, T0)
    state = deliver(alerts, state, T0)
    alerts, state = run(limits(2, T0 + 6 * 3600), state, cfg, T0 + 3700)  # a new window
    (notice,) = alerts
    assert notice.kind == "reset" and notice.channels == ("ch-a",)
    assert notice.title == "Factory standard.5h reset, you are back to 2%"
    state = deliver(alerts, state, T0 + 3700)
    assert run(limits(3, T0 + 6 * 3600), state, cfg, T0 + 3900)[1].notices == ()
    assert run(limits(3, T0 + 6 * 3600), state, cfg, T0 + 4000)[0] == []


def test_a_window_that_peaked_below_100_gives_no_reset_notice():
    cfg = config(reset_notice=True)
    alerts, state = run(limits(96, T0 + 3600), State(), cfg, T0)
    state = deliver(alerts, state, T0)
    assert run(limits(2, T0 + 6 * 3600), state, cfg, T0 + 3700)[0] == []


def test_reminders_every_n_hours_per_channel_until_reset():
    cfg = config(reminder_hours=1)
    end = T0 + 3 * 3600
    alerts, state = run(limits(100, end), State(), cfg, T0)
    state = deliver(alerts, state, T0)
    kinds = []
    for minutes in range(15, 4 * 60, 15):
        now = T0 + minutes * 60
        alerts, state = run(
            limits(100 if now < end else 0, end if now < end else end + 5 * 3600), state, cfg, now
        )
        state = deliver(alerts, state, now)
        kinds += [(minutes, a.kind, a.channels) for a in alerts]
    assert kinds == [(m, "reminder", ("ch-a", "ch-b")) for m in (60, 120)]


def test_a_clock_stepped_back_delays_a_reminder_by_one_interval_at_most():
    # The 100 % alert went out while the clock was 4 hours fast; NTP then set it right.
    # Counting from the delivery's (future) time, no reminder came for 5 hours: the window
    # reset first and the hourly reminders were lost.
    cfg = config(reminder_hours=1)
    end = T0 + 5 * 3600
    alerts, state = run(limits(100, end), State(), cfg, T0 + 4 * 3600)
    state = deliver(alerts, state, T0 + 4 * 3600)
    sent = []
    for minutes in range(15, 4 * 60 + 1, 15):
        now = T0 + minutes * 60
        alerts, state = run(limits(100, end), state, cfg, now)
        state = deliver(alerts, state, now)
        sent += [minutes for a in alerts if a.kind == "reminder"]
    assert sent == [75, 135, 195]  # the first an hour after the clock was seen to go back


def test_quiet_hours_hold_all_but_critical_and_never_send_reminders():
    cfg = Config(channels=(A,), quiet_hours=QuietHours(22 * 60, 7 * 60))
    alerts = [
        Alert(DeliveryKey("standard", "threshold", T0, 80), "warning", "t", "b", ("ch-a",)),
        Alert(DeliveryKey("standard", "threshold", T0, 100), "critical", "t", "b", ("ch-a",)),
        Alert(DeliveryKey("standard", "reminder", T0, 100), "critical", "t", "b", ("ch-a",)),
        Alert(DeliveryKey("health", "stale", T0, 0), "warning", "t", "b", ("ch-a",)),
    ]
    send, held = monitor.hold(alerts, cfg, T0 + 3 * 3600)
    assert [a.level for a in send] == [100] and send[0].kind == "threshold" and len(held) == 3
    assert monitor.hold(alerts, cfg, T0 + 7 * 3600) == (alerts, [])
    assert monitor.hold(alerts, cfg, T0 + 21 * 3600 + 3599) == (alerts, [])


def _night(percents_and_ends):
    """Run decide() at 21:00, 23:00, 03:00 and 07:01 with quiet hours 22:00-07:00; deliver
    what is sent; return the titles sent at 07:01."""
    from alerter.decide import decide

    cfg = Config(
        channels=(A,), quiet_hours=QuietHours(22 * 60, 7 * 60), monitor=MonitorSettings(reset_notice=True)
    )
    state = State()
    evening = T0 - 3 * 3600  # 21:00 local
    for hours, (percent, end) in zip((0, 2, 6, 10 + 1 / 60), percents_and_ends, strict=True):
        now = evening + hours * 3600
        reading = Reading("limits", (Meter("standard.5h", percent / 100, window_end=end, active=end > now),))
        decision = decide(state, reading, cfg, now)
        state = deliver(decision.send, decision.state, now)
    return [a.title for a in decision.send]


def test_a_held_reset_notice_goes_out_with_the_numbers_of_the_run_that_sends_it():
    # It said "you are back to 2%", the number of 23:00, at 07:01 when usage was at 40 %.
    first, second = T0 - 3600 + 60, T0 + 4 * 3600
    sent = _night([(100, first), (2, second), (30, second), (40, second + 5 * 3600)])
    assert sent == ["Factory standard.5h reset, you are back to 40%"]


def test_a_held_reset_notice_is_dropped_when_the_window_is_used_up_again():
    # "you are back to 2%" came at 07:01, after "used up" at 03:00 and while still at 100 %.
    first, second = T0 - 3600 + 60, T0 + 8 * 3600
    sent = _night([(100, first), (2, second), (100, second), (100, second)])
    assert sent == []


@given(st.integers(0, 1439), st.integers(0, 1439), st.integers(0, 1439))
def test_quiet_hours_contain_start_exclude_end_and_wrap_midnight(start, end, minute):
    if start == end:
        return
    quiet = QuietHours(start, end)
    assert quiet.contains(start) and not quiet.contains(end)
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    assert quiet.contains(minute) == inside


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_any = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
channel_ids = st.lists(st.sampled_from(["ch-a", "ch-b", "gone"]) | json_scalars, max_size=3)
health_like = json_any | st.fixed_dictionaries(
    {},
    optional={
        "failures": json_scalars,
        "failing_since": json_scalars,
        "last_success": json_scalars,
        "stale_sent": channel_ids | json_any,
        "last_outage": json_any,
    },
)
pending_like = json_any | st.lists(
    st.fixed_dictionaries(
        {"kind": st.just("reset"), "meter": st.just("standard.5h")},
        optional={"channels": channel_ids | json_any, "title": json_any},
    )
    | json_any,
    max_size=2,
)
meter_like = json_any | st.fixed_dictionaries(
    {"window": st.fixed_dictionaries({"start": st.none(), "end": st.just(T0 + 3600.0) | json_scalars})},
    optional={"sent": json_any, "peak": json_scalars, "reminded": json_any},
)


@given(
    st.fixed_dictionaries(
        {"version": st.just(1)},
        optional={
            "health": health_like,
            "pending": pending_like,
            "meters": json_any | st.fixed_dictionaries({"standard.5h": meter_like}),
        },
    ),
    st.sampled_from([100.0, 40.0]),
)
def test_any_remembered_shape_is_survived(data, percent):
    import json

    state, _ = load(data)
    cfg = config(reset_notice=True, reminder_hours=1, failures_before_alert=1, hours_without_success=1)
    alerts, failed = monitor.after_failure(state, cfg, T0, "down")
    failed = deliver(alerts, failed, T0)
    for end in (T0 + 3600, T0 + 7200, T0 - 1):
        reading = limits(percent, end)
        alerts, new_state = run(reading, state, cfg, T0 + 60)
        new_state = deliver(alerts, new_state, T0 + 60)
        assert load(json.loads(json.dumps(dump(new_state))))[0] == new_state
    assert load(json.loads(json.dumps(dump(failed))))[0] == failed
