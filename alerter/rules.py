"""What should be sent now: a pure function of (reading, state, config, now).

``evaluate`` never does I/O. It returns the alerts that are due, each naming the channels
that still need it, and the new state *without* any delivery recorded: the shell calls
``record_delivery`` for each channel that apprise reports as delivered, so a failed send
stays due and is retried on the next run.

State per meter (plain JSON)::

    "meters": {"standard": {"window": {"start": 1770623326.0, "end": null},
                            "sent": {"<channel id>": 80.0}}}

``sent`` holds, per channel, the highest threshold delivered in that window: a threshold
once sent stays sent even if usage later dips, and a new window re-arms them all.
``reminded`` (per channel, the time a 100 % alert or its reminder was delivered) and
``peak`` (the highest percent seen in the window) serve ``monitor``'s reminders and reset
notices; a new window drops them with the rest.
Each meter also keeps ``history`` (its recent readings, see :mod:`alerter.forecast`),
``forecast`` (the current risk episode and the channels told of it) and, for billing
periods, ``period_seconds`` (the last known period length, for a period with no end).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alerter import forecast
from alerter.config import Config
from alerter.messages import forecast_message, threshold_message
from alerter.meters import Meter, Reading

# Limit windows are identified by their end; the server's end may drift by a few minutes
# between answers, while two consecutive 5-hour windows are hours apart.
WINDOW_DRIFT_SECONDS = 15 * 60
EPSILON = 1e-9


@dataclass(frozen=True)
class Alert:
    """One notification that is due, and the channels that have yet to receive it."""

    meter_id: str  # or "health" for the job's own stale/recovered notices
    kind: str  # threshold, forecast, login, stale, recovered, reset, reminder
    level: float  # the threshold percent it announces; for a forecast, the percent at reset
    severity: str  # info, warning or critical
    title: str
    body: str
    channels: tuple[str, ...]


def same_window(saved: dict | None, meter: Meter) -> bool:
    """Given a saved window and a meter, return True when the meter is still in it."""
    if not isinstance(saved, dict):
        return False
    start, end = saved.get("start"), saved.get("end")
    if meter.window_start is not None or start is not None:
        # Billing periods are identified by their start; the end may be unknown.
        return (
            meter.window_start is not None
            and isinstance(start, (int, float))
            and abs(meter.window_start - start) <= WINDOW_DRIFT_SECONDS
        )
    if meter.window_end is not None and isinstance(end, (int, float)):
        return abs(meter.window_end - end) <= WINDOW_DRIFT_SECONDS
    return meter.window_end is None and end is None


def copy_state(state: dict, meter_ids: Iterable[str]) -> dict:
    """Given a state and the meters about to change, return a copy that is safe to change.

    Meter histories are shared with the original instead of copied: they are only ever
    replaced as a whole (see :func:`alerter.forecast.add_sample`), and copying every
    sample on every run would cost more than all the rest of an evaluation.
    """
    new_state = {key: _copy(value) for key, value in state.items() if key != "meters"}
    meters = state.get("meters")
    new_meters = dict(meters) if isinstance(meters, dict) else {}
    for meter_id in meter_ids:
        saved = new_meters.get(meter_id)
        if isinstance(saved, dict):
            new_meters[meter_id] = {
                key: value if key == "history" else _copy(value) for key, value in saved.items()
            }
    new_state["meters"] = new_meters
    return new_state


def _copy(value: Any) -> Any:
    """Copy plain JSON data (a faster copy.deepcopy for dicts, lists and scalars)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def evaluate(reading: Reading, state: dict, config: Config, now: float) -> tuple[list[Alert], dict]:
    """Given a reading, the saved state, the config and the time, return (alerts, new state)."""
    new_state = copy_state(state, [m.id for m in reading.meters])
    new_state.pop("login", None)  # a working login re-arms the "login expired" notice
    meters_state = new_state["meters"]
    alerts: list[Alert] = []
    for meter in reading.meters:
        if meter.unlimited or not meter.active:
            continue  # nothing can run out, or the window has reset
        saved = meters_state.get(meter.id)
        saved = saved if isinstance(saved, dict) else {}
        same = same_window(saved.get("window"), meter)
        history = saved.get("history") if isinstance(saved.get("history"), list) else []
        length = _period_length(saved, meter, same)
        if not same:
            saved = {"sent": {}}  # a new window re-arms every threshold and ends any episode
        if length is not None:
            saved["period_seconds"] = length
        else:
            saved.pop("period_seconds", None)
        dict_at(saved, "sent")
        saved["window"] = {"start": meter.window_start, "end": meter.window_end}
        saved["history"] = forecast.add_sample(history, meter, now, same)
        meters_state[meter.id] = saved
        alerts.extend(_threshold_alerts(meter, saved.get("sent", {}), reading, config, now))
        if config.forecast.enabled:
            alerts.extend(_forecast_alerts(meter, saved, config, now))
    return alerts, new_state


def _period_length(saved: dict, meter: Meter, same: bool) -> float | None:
    """Return the billing period length known so far (to place the end of a period without one)."""
    low, high = forecast.PERIOD_RANGE
    if meter.window_start is not None and meter.window_end is not None:
        length = meter.window_end - meter.window_start
        return length if low <= length <= high else None
    old = saved.get("period_seconds")
    old = old if isinstance(old, (int, float)) and low <= old <= high else None
    old_start = (saved.get("window") or {}).get("start") if isinstance(saved.get("window"), dict) else None
    if not same and isinstance(old_start, (int, float)) and meter.window_start is not None:
        length = meter.window_start - old_start  # one period ran from the old start to this one
        if low <= length <= high:
            return length
    return old


def assess_meter(meter: Meter, saved: dict, config: Config, now: float) -> forecast.Assessment:
    """Given a meter and its state entry (its reading already in the history), return its forecast."""
    kind = forecast.window_kind(meter.id)
    start, end = forecast.window_bounds(meter, saved.get("period_seconds"))
    rules = config.forecast.rules_for(kind)
    longest = max((rule.long_seconds for rule in rules), default=0.0)
    pts = forecast.points(saved.get("history") or [], meter, start, since=now - longest)
    return forecast.assess(pts, now, start, end, rules, config.forecast)


def _forecast_alerts(meter: Meter, saved: dict, config: Config, now: float) -> list[Alert]:
    settings = config.forecast
    assessment = assess_meter(meter, saved, config, now)
    kind = forecast.window_kind(meter.id)
    state = forecast.next_episode(saved.get("forecast"), assessment, now, settings.rearm_seconds(kind))
    if state:
        saved["forecast"] = state
    else:
        saved.pop("forecast", None)
    episode = state.get("episode")
    if episode is None:
        return []
    # Within an episode a channel that has not heard of it yet (a failed send) is told as
    # long as the meter still runs out before the reset, with today's numbers.
    if assessment.firing is not None:
        rate, seconds = assessment.rate, assessment.firing.long_seconds
    else:
        rate, seconds = assessment.pace, assessment.pace_seconds
    runs_out = assessment.runs_out_at(rate)
    end = assessment.window_end
    if runs_out is None or end is None or runs_out >= end:
        return []
    sent = set(channel_list(episode.get("sent")))
    channels = tuple(
        ch.id for ch in config.delivery_channels() if settings.severity in ch.severities and ch.id not in sent
    )
    if not channels:
        return []
    start, _ = forecast.window_bounds(meter, saved.get("period_seconds"))
    title, body = forecast_message(meter, rate, seconds, runs_out, (start, end), now)
    level = round((assessment.used + rate * (end - now)) * 100, 1)
    return [Alert(meter.id, "forecast", level, settings.severity, title, body, channels)]


def _threshold_alerts(meter: Meter, sent: dict, reading: Reading, config: Config, now: float) -> list[Alert]:
    crossed = [t for t in config.thresholds_for(meter.id) if meter.percent + EPSILON >= t]
    due: dict[float, list[str]] = {}
    for channel in config.delivery_channels():
        mine = [t for t in crossed if config.severity_of(t) in channel.severities]
        if not mine:
            continue
        top = max(mine)
        if number_or_zero(sent.get(channel.id)) >= top:
            continue  # this channel already heard of this threshold (or a higher one)
        due.setdefault(top, []).append(channel.id)
    alerts = []
    for level, channels in sorted(due.items()):
        severity = config.severity_of(level)
        title, body = threshold_message(meter, level, reading, now, severity == "critical")
        alerts.append(Alert(meter.id, "threshold", level, severity, title, body, tuple(channels)))
    return alerts


LOGIN_TITLE = "Factory login expired: run `droid` to log in again"
LOGIN_BODY = (
    "factory-usage-alert can no longer read your Factory usage: the droid login has expired "
    "or was revoked.\nRun `droid` on this machine and log in; alerts resume on the next run."
)


def login_expired_alert(state: dict, config: Config) -> tuple[Alert | None, dict]:
    """Given the state, return the "login expired" alert for channels not yet told, if any."""
    login = state.get("login")
    told = login.get("expired_sent") if isinstance(login, dict) else None
    told = told if isinstance(told, list) else []
    channels = tuple(ch.id for ch in config.delivery_channels() if ch.id not in told)
    if not channels:
        return None, state
    return Alert("login", "login", 0.0, "critical", LOGIN_TITLE, LOGIN_BODY, channels), state


def record_delivery(state: dict, alert: Alert, channel_id: str, now: float | None = None) -> dict:
    """Given the state, an alert and a channel that received it, return the updated state.

    ``now`` (the delivery time) is needed for reminders: it is recorded when a 100 % alert
    or a reminder is delivered.
    """
    new_state = copy_state(state, [alert.meter_id])
    if alert.kind == "login":
        login = dict_at(new_state, "login")
        told = login.get("expired_sent")
        told = [c for c in told if isinstance(c, str)] if isinstance(told, list) else []
        login["expired_sent"] = sorted({*told, channel_id})
        return new_state
    if alert.kind in ("stale", "recovered"):
        # stale_sent: the channels that were told the job is broken and not yet told it
        # works again; "recovered" is due to exactly those.
        health = dict_at(new_state, "health")
        told = set(channel_list(health.get("stale_sent")))
        told = told | {channel_id} if alert.kind == "stale" else told - {channel_id}
        health["stale_sent"] = sorted(told)
        return new_state
    if alert.kind == "reset":
        pending = []
        entries = new_state.get("pending")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            channels = channel_list(entry.get("channels"))
            if entry.get("kind") == "reset" and entry.get("meter") == alert.meter_id:
                channels = [c for c in channels if c != channel_id]
            if channels:
                pending.append({**entry, "channels": channels})
        if pending:
            new_state["pending"] = pending
        else:
            new_state.pop("pending", None)
        return new_state
    saved = dict_at(dict_at(new_state, "meters"), alert.meter_id)
    if alert.kind == "forecast":
        # Its level is the projected use at the reset, not a threshold: no reminders.
        episode = dict_at(dict_at(saved, "forecast"), "episode")
        episode["sent"] = sorted({*channel_list(episode.get("sent")), channel_id})
        return new_state
    if alert.kind == "threshold":
        sent = dict_at(saved, "sent")
        sent[channel_id] = max(number_or_zero(sent.get(channel_id)), alert.level)
    if now is not None and (alert.kind == "reminder" or alert.level >= 100):
        dict_at(saved, "reminded")[channel_id] = now
    return new_state


def dict_at(container: dict, key: str) -> dict:
    """Return container[key], replacing whatever is there by {} unless it is a dict.

    The state file is ours, but it may have been edited or written by another version:
    anything of the wrong shape counts as "nothing remembered" rather than a crash.
    """
    value = container.get(key)
    if not isinstance(value, dict):
        value = container[key] = {}
    return value


def channel_list(value: object) -> list[str]:
    """Given a remembered list of channel ids, return its strings (none when it is not a list)."""
    return [c for c in value if isinstance(c, str)] if isinstance(value, list) else []


def number_or_zero(value: object) -> float:
    """Given a remembered number (a threshold, a time, a count), return it; 0 when it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0
