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
job delivers them and records each delivery in the state's ledger, so a failed channel
stays due. A failed run never touches the usage state: it can neither re-arm nor fire a
usage alert.

Quiet hours hold alerts without a separate queue: everything due is recomputed from the
state on every run (from the ledger, ``health`` and the stored reset notices), and a held
alert is simply not recorded as delivered. So it is due again at the first run after quiet hours end, with the
numbers of that run, and not at all if its cause went away meanwhile (the job recovered,
the window reset).
"""

from __future__ import annotations

import time
from dataclasses import replace

from alerter.config import Config
from alerter.messages import recovered_message, reminder_message, reset_message, stale_message
from alerter.meters import Reading
from alerter.rules import Alert, same_window
from alerter.state import FAILED_RUNS_KEPT, DeliveryKey, FailedRun, Notice, Outage, State

HEALTH = "health"  # the meter of the job's own notices


def _configured(config: Config) -> set[str]:
    return {ch.id for ch in config.delivery_channels()}


# --- stale data ---------------------------------------------------------------------------


def unrecovered(state: State) -> dict[DeliveryKey, set[str]]:
    """Given the state, return per outage's "not working" key the channels told of it and
    not yet told it works again."""
    owed = {}
    for key in state.ledger:
        if key.meter == HEALTH and key.kind == "stale":
            told = set(state.delivered(key)) - set(state.delivered(replace(key, kind="recovered")))
            if told:
                owed[key] = told
    return owed


def _forget_recovered_outages(state: State, config: Config) -> None:
    """Drop the ledger entries of outages every configured channel has heard the end of."""
    configured = _configured(config)
    owed = unrecovered(state)
    for key in [k for k in state.ledger if k.meter == HEALTH]:
        stale = replace(key, kind="stale")
        if not owed.get(stale, set()) & configured:
            del state.ledger[key]


def after_failure(
    state: State, config: Config, now: float, reason: str, login_expired: bool = False
) -> tuple[list[Alert], State]:
    """Given the state and why this run could not read usage, return (alerts, new state).

    Counts the failed run; when the failures pass the configured limit, returns the
    "not working" alert for every channel not yet told. An expired login has its own
    notice (``rules.login_expired_alert``), so it counts but sends nothing here.
    """
    new_state = state.copy()
    health = new_state.health
    health.failures += 1
    if health.failures == 1 or health.failing_since is None:
        health.failing_since = now
    health.last_failure = now
    health.last_error = reason
    # Kept so that `history --jsonl` replays failed runs too (a bounded, recent record).
    run = FailedRun(now, reason, login_expired)
    health.failed_runs = (*health.failed_runs[-(FAILED_RUNS_KEPT - 1) :], run)
    if login_expired or not _is_stale(new_state, config, now):
        return [], new_state
    told = set().union(*unrecovered(new_state).values())
    channels = tuple(ch.id for ch in config.delivery_channels() if ch.id not in told)
    if not channels:
        return [], new_state
    title, body = stale_message(reason, health.failures, health.last_success, now)
    key = DeliveryKey(HEALTH, "stale", health.failing_since, 0.0)
    return [Alert(key, "warning", title, body, channels)], new_state


def _is_stale(state: State, config: Config, now: float) -> bool:
    settings, health = config.monitor, state.health
    if health.failures >= settings.failures_before_alert:
        return True
    if settings.hours_without_success <= 0:
        return False
    since = health.last_success or health.failing_since or now
    return now - since >= settings.hours_without_success * 3600


def after_success(state: State, config: Config, now: float) -> tuple[list[Alert], State]:
    """Given the state after a successful read, return (alerts, new state).

    Ends a failure streak; returns "working again" for the channels told it was broken.
    """
    new_state = state.copy()
    health = new_state.health
    if health.failures:
        health.last_outage = Outage(health.failing_since, health.failures)
    health.failures = 0
    health.failing_since = None
    health.last_success = now
    _forget_recovered_outages(new_state, config)
    configured = _configured(config)
    outage = health.last_outage or Outage(None, 0)
    title, body = recovered_message(outage.failures, outage.since, now)
    alerts = []
    for key, told in sorted(unrecovered(new_state).items()):
        channels = tuple(c for c in sorted(told) if c in configured)
        if channels:
            alerts.append(Alert(replace(key, kind="recovered"), "info", title, body, channels))
    return alerts, new_state


# --- after a successful read: reset notices, reminders, stored notices -------------------


def after_read(
    reading: Reading, before: State, after: State, config: Config, now: float
) -> tuple[list[Alert], State]:
    """Given a reading, the state before and after ``rules.evaluate``, return (alerts, new state).

    Runs ``after_success``, notes windows that reached 100 % and have since reset (a stored
    reset notice when ``monitor.reset_notice`` is on), keeps each window's peak, and returns
    the recovered notice, the due reminders and the reset notices still owed.
    """
    alerts, state = after_success(after, config, now)
    _no_future_deliveries(state, now)
    _note_resets(reading, before, state, config, now)
    _track_peaks(reading, state)
    _refresh_reset_notices(reading, state, now)
    reminders = _reminders(reading, state, config, now)
    owed, state = stored_notices(state, config)
    return alerts + reminders + owed, state


def _note_resets(reading: Reading, before: State, state: State, config: Config, now: float) -> None:
    for meter in reading.meters:
        old = before.meters.get(meter.id)
        if meter.unlimited or old is None or old.peak < 100:
            continue
        if meter.active and same_window(old.window, meter):
            continue  # still the used-up window
        saved = state.meters.get(meter.id)
        if saved is not None and saved.peak:
            state.meters[meter.id] = replace(saved, peak=0.0)  # an inactive meter keeps its window: once
        if not config.monitor.reset_notice:
            continue
        channels = tuple(ch.id for ch in config.delivery_channels() if "info" in ch.severities)
        if not channels:
            continue
        title, body = reset_message(meter, now)
        key = DeliveryKey(meter.id, "reset", old.window_key, 0.0)
        kept = tuple(n for n in state.notices if not (n.key.kind == "reset" and n.key.meter == meter.id))
        state.notices = (*kept, Notice(key, "info", title, body, channels, now))


def _refresh_reset_notices(reading: Reading, state: State, now: float) -> None:
    """Give each owed reset notice this reading's numbers (one held through quiet hours goes
    out with them), and drop one whose meter is used up again: "you are back to 2 %" after
    "used up" would be false, and the used-up alert has said what matters."""
    meters = {m.id: m for m in reading.meters if not m.unlimited}
    notices = []
    for notice in state.notices:
        meter = meters.get(notice.key.meter)
        if notice.key.kind != "reset" or meter is None:
            notices.append(notice)
        elif not (meter.active and meter.percent >= 100):
            title, body = reset_message(meter, now, notice.since)
            notices.append(replace(notice, title=title, body=body))
    state.notices = tuple(notices)


def _track_peaks(reading: Reading, state: State) -> None:
    for meter in reading.meters:
        saved = state.meters.get(meter.id)
        if meter.active and not meter.unlimited and saved is not None:
            saved.peak = max(saved.peak, round(meter.percent, 3))


def _no_future_deliveries(state: State, now: float) -> None:
    """Record a delivery dated after ``now`` as made ``now``: it was made while the clock
    was fast (it has since been set back), and counting a reminder's hours from that
    future time would hold it back by as much as the clock was wrong."""
    for channels in state.ledger.values():
        for channel, at in channels.items():
            if at is not None and at > now:
                channels[channel] = now


def _reminders(reading: Reading, state: State, config: Config, now: float) -> list[Alert]:
    hours = config.monitor.reminder_hours
    if hours <= 0:
        return []
    alerts = []
    for meter in reading.meters:
        saved = state.meters.get(meter.id)
        if not meter.active or meter.unlimited or meter.percent < 100 or saved is None:
            continue
        # Per channel: the highest 100 %-or-more threshold it heard, and when it last heard it.
        heard: dict[str, tuple[float, float]] = {}
        for key in state.ledger:
            if key.kind not in ("threshold", "reminder") or key.level < 100:
                continue
            if key.meter == meter.id and key.window == saved.window_key:
                for channel, at in state.delivered(key).items():
                    level, last = heard.get(channel, (0.0, 0.0))
                    heard[channel] = (max(level, key.level), max(last, at))
        due = [
            c
            for c in (ch.id for ch in config.delivery_channels())
            if c in heard and now - heard[c][1] >= hours * 3600
        ]
        if due:
            title, body = reminder_message(meter, now)
            level = max(heard[c][0] for c in due)
            key = DeliveryKey(meter.id, "reminder", saved.window_key, level)
            alerts.append(Alert(key, config.severity_of(level), title, body, tuple(due)))
    return alerts


def stored_notices(state: State, config: Config) -> tuple[list[Alert], State]:
    """Given the state, return the stored notices still owed (reset notices), and the state
    without notices that every channel has, or that no configured channel is owed."""
    configured = _configured(config)
    alerts, kept = [], []
    for notice in state.notices:
        delivered = state.delivered(notice.key)
        channels = tuple(c for c in notice.channels if c in configured and c not in delivered)
        if not channels:
            continue
        kept.append(notice)
        alerts.append(Alert(notice.key, notice.severity, notice.title, notice.body, channels))
    # A notice's deliveries are forgotten with it (a notice replaced by a newer one too).
    gone = {k for k in state.ledger if k.kind == "reset"} - {n.key for n in kept}
    if len(kept) == len(state.notices) and not gone:
        return alerts, state
    new_state = state.copy()
    new_state.notices = tuple(kept)
    for key in gone:
        del new_state.ledger[key]
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
