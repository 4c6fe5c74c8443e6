"""The job watching itself: pure decisions over (state, outcome, config, now).

A silent alert job is worse than none, so besides usage alerts a run may owe:

- ``stale``: "usage alerts are not working: <reason>", once, after
  ``monitor.failures_before_alert`` failed runs in a row (or ``hours_without_success``
  hours since the last successful read); ``recovered``: "working again", once, to the
  channels that were told it was broken.
- ``reset``: "standard.5h reset, you are back to 0 %" after a window that reached 100 %
  (``monitor.reset_notice``).
- ``reminder``: a 100 % alert repeated every ``monitor.reminder_hours`` until the window
  resets.

Nothing here does I/O. Each function returns alerts (``rules.Alert``) and a new state; the
shell delivers them and calls ``rules.record_delivery`` per channel, so a failed channel
stays due. A failed run never touches the usage state: it can neither re-arm nor fire a
usage alert.

Quiet hours hold alerts without a separate queue: everything due is recomputed from the
state on every run (thresholds from ``sent``, stale/recovered from ``health``, reset
notices from ``pending``, reminders from ``reminded``), and a held alert is simply not
recorded as delivered. So it is due again at the first run after quiet hours end, with the
numbers of that run, and not at all if its cause went away meanwhile (the job recovered,
the window reset).

State, next to ``meters``::

    "health": {"failures": 2, "failing_since": 1770600000.0, "last_success": 1770590000.0,
               "last_failure": 1770601000.0, "last_error": "Factory API answered HTTP 500 ...",
               "stale_sent": ["ch-1a2b..."], "last_outage": {"since": ..., "failures": 3}},
    "pending": [{"kind": "reset", "meter": "standard.5h", "title": ..., "body": ...,
                 "severity": "info", "channels": ["ch-1a2b..."]}]
"""

from __future__ import annotations

import copy
import time

from alerter.config import Config
from alerter.messages import recovered_message, reminder_message, reset_message, stale_message
from alerter.meters import Reading
from alerter.rules import Alert, channel_list, dict_at, number_or_zero, same_window

HEALTH = "health"  # the meter_id of the job's own notices
FAILED_RUNS_KEPT = 200


def _health(state: dict) -> dict:
    # Like rules: a remembered value of the wrong shape counts as nothing remembered.
    return dict_at(state, HEALTH)


def _time(value: object) -> float | None:
    """Given a remembered unix time, return it, or None when it is not a plausible one."""
    seconds = number_or_zero(value)
    return seconds if 0 < seconds < 1e11 else None


def _configured(channel_ids: object, config: Config) -> list[str]:
    known = {ch.id for ch in config.delivery_channels()}
    return [c for c in channel_list(channel_ids) if c in known]


# --- stale data ---------------------------------------------------------------------------


def after_failure(
    state: dict, config: Config, now: float, reason: str, login_expired: bool = False
) -> tuple[list[Alert], dict]:
    """Given the state and why this run could not read usage, return (alerts, new state).

    Counts the failed run; when the failures pass the configured limit, returns the
    "not working" alert for every channel not yet told. An expired login has its own
    notice (``rules.login_expired_alert``), so it counts but sends nothing here.
    """
    new_state = copy.deepcopy(state)
    health = _health(new_state)
    failures = int(number_or_zero(health.get("failures"))) + 1
    health["failures"] = failures
    if failures == 1 or _time(health.get("failing_since")) is None:
        health["failing_since"] = now
    health["last_failure"] = now
    health["last_error"] = reason
    # Kept so that `history --jsonl` replays failed runs too (a bounded, recent record).
    record = [now, reason, True] if login_expired else [now, reason]
    health["failed_runs"] = [list(r) for r in failed_runs(new_state)][-(FAILED_RUNS_KEPT - 1) :] + [record]
    health["stale_sent"] = _configured(health.get("stale_sent"), config)
    if login_expired or not _is_stale(health, config, now):
        return [], new_state
    channels = tuple(ch.id for ch in config.delivery_channels() if ch.id not in health["stale_sent"])
    if not channels:
        return [], new_state
    title, body = stale_message(reason, failures, _time(health.get("last_success")), now)
    return [Alert(HEALTH, "stale", 0.0, "warning", title, body, channels)], new_state


def failed_runs(state: dict) -> list[tuple[float, str, bool]]:
    """Given a state, return the failed runs it remembers: (time, reason, login expired)."""
    health = state.get(HEALTH)
    records = health.get("failed_runs") if isinstance(health, dict) else None
    out = []
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, list) or len(record) not in (2, 3):
            continue
        when, reason = _time(record[0]), record[1]
        if when is not None and isinstance(reason, str):
            out.append((when, reason, len(record) == 3 and record[2] is True))
    return out


def _is_stale(health: dict, config: Config, now: float) -> bool:
    settings = config.monitor
    if number_or_zero(health.get("failures")) >= settings.failures_before_alert:
        return True
    if settings.hours_without_success <= 0:
        return False
    since = _time(health.get("last_success")) or _time(health.get("failing_since")) or now
    return now - since >= settings.hours_without_success * 3600


def after_success(state: dict, config: Config, now: float) -> tuple[list[Alert], dict]:
    """Given the state after a successful read, return (alerts, new state).

    Ends a failure streak; returns "working again" for the channels told it was broken.
    """
    new_state = copy.deepcopy(state)
    health = _health(new_state)
    failures = int(number_or_zero(health.get("failures")))
    if failures:
        health["last_outage"] = {"since": _time(health.get("failing_since")), "failures": failures}
    health["failures"] = 0
    health.pop("failing_since", None)
    health["last_success"] = now
    told = _configured(health.get("stale_sent"), config)
    health["stale_sent"] = told
    if not told:
        return [], new_state
    outage = dict_at(health, "last_outage")
    title, body = recovered_message(
        int(number_or_zero(outage.get("failures"))), _time(outage.get("since")), now
    )
    return [Alert(HEALTH, "recovered", 0.0, "info", title, body, tuple(told))], new_state


# --- after a successful read: reset notices, reminders, pending --------------------------


def after_read(
    reading: Reading, before: dict, after: dict, config: Config, now: float
) -> tuple[list[Alert], dict]:
    """Given a reading, the state before and after ``rules.evaluate``, return (alerts, new state).

    Runs ``after_success``, notes windows that reached 100 % and have since reset (a pending
    reset notice when ``monitor.reset_notice`` is on), keeps each window's peak, and returns
    the recovered notice, the due reminders and the pending reset notices.
    """
    alerts, state = after_success(after, config, now)
    state = _note_resets(reading, before, state, config, now)
    state = _track_peaks(reading, state)
    reminders, state = _reminders(reading, state, config, now)
    pending, state = pending_alerts(state, config)
    return alerts + reminders + pending, state


def _note_resets(reading: Reading, before: dict, state: dict, config: Config, now: float) -> dict:
    old_meters = before.get("meters") if isinstance(before.get("meters"), dict) else {}
    meters = dict_at(state, "meters")
    for meter in reading.meters:
        old = old_meters.get(meter.id)
        if meter.unlimited or not isinstance(old, dict) or number_or_zero(old.get("peak")) < 100:
            continue
        if meter.active and same_window(old.get("window"), meter):
            continue  # still the used-up window
        saved = meters.get(meter.id)
        if isinstance(saved, dict):
            saved.pop("peak", None)  # an inactive meter keeps its saved window: notice once
        if not config.monitor.reset_notice:
            continue
        channels = [ch.id for ch in config.delivery_channels() if "info" in ch.severities]
        if not channels:
            continue
        title, body = reset_message(meter, now)
        pending = [
            p
            for p in (state.get("pending") if isinstance(state.get("pending"), list) else [])
            if isinstance(p, dict) and not (p.get("kind") == "reset" and p.get("meter") == meter.id)
        ]
        pending.append(
            {
                "kind": "reset",
                "meter": meter.id,
                "title": title,
                "body": body,
                "severity": "info",
                "channels": channels,
                "since": now,
            }
        )
        state["pending"] = pending
    return state


def _track_peaks(reading: Reading, state: dict) -> dict:
    meters = dict_at(state, "meters")
    for meter in reading.meters:
        saved = meters.get(meter.id)
        if meter.active and not meter.unlimited and isinstance(saved, dict):
            saved["peak"] = max(number_or_zero(saved.get("peak")), round(meter.percent, 3))
    return state


def _reminders(reading: Reading, state: dict, config: Config, now: float) -> tuple[list[Alert], dict]:
    hours = config.monitor.reminder_hours
    if hours <= 0:
        return [], state
    alerts = []
    for meter in reading.meters:
        saved = dict_at(state, "meters").get(meter.id)
        if not meter.active or meter.unlimited or meter.percent < 100 or not isinstance(saved, dict):
            continue
        sent = dict_at(saved, "sent")
        reminded = dict_at(saved, "reminded")
        due = []
        for channel in config.delivery_channels():
            if number_or_zero(sent.get(channel.id)) < 100:
                continue  # this channel has not heard of 100 % (yet): nothing to repeat
            last = _time(reminded.get(channel.id))
            if last is None:
                reminded[channel.id] = now  # a state from before reminders: start counting now
            elif now - last >= hours * 3600:
                due.append(channel.id)
        if due:
            title, body = reminder_message(meter, now)
            level = max(number_or_zero(sent[c]) for c in due)
            alerts.append(
                Alert(meter.id, "reminder", level, config.severity_of(level), title, body, tuple(due))
            )
    return alerts, state


def pending_alerts(state: dict, config: Config) -> tuple[list[Alert], dict]:
    """Given the state, return the stored notices still owed (reset notices), and the state
    without entries for channels that are no longer configured."""
    new_state = copy.deepcopy(state)
    alerts, kept = [], []
    entries = new_state.get("pending")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        channels = _configured(entry.get("channels"), config)
        if not channels:
            continue
        entry["channels"] = channels
        kept.append(entry)
        alerts.append(
            Alert(
                str(entry.get("meter")),
                str(entry.get("kind")),
                0.0,
                str(entry.get("severity", "info")),
                str(entry.get("title")),
                str(entry.get("body")),
                tuple(channels),
            )
        )
    if kept:
        new_state["pending"] = kept
    else:
        new_state.pop("pending", None)
    return alerts, new_state


# --- quiet hours -------------------------------------------------------------------------


def in_quiet_hours(config: Config, now: float) -> bool:
    """Given the config and the time, return True inside the configured local quiet hours."""
    if config.quiet_hours is None:
        return False
    local = time.localtime(now)
    return config.quiet_hours.contains(local.tm_hour * 60 + local.tm_min)


def hold(alerts: list[Alert], config: Config, now: float) -> tuple[list[Alert], list[Alert]]:
    """Given the due alerts, return (to send now, held until quiet hours end).

    Inside quiet hours only critical alerts go out, and never a reminder (it repeats news
    already delivered). A held alert stays due in the state: see the module docstring.
    """
    if not in_quiet_hours(config, now):
        return list(alerts), []
    send = [a for a in alerts if a.severity == "critical" and a.kind != "reminder"]
    held = [a for a in alerts if a not in send]
    return send, held
