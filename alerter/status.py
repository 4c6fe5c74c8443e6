"""What ``status`` shows: every meter as a bar, the job's own health, and the same as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from alerter.config import Config
from alerter.credentials import Identity
from alerter.forecast import Assessment
from alerter.messages import duration, local_time, lookback, pace_unit, percent, tokens
from alerter.meters import Meter, Reading
from alerter.state import DeliveryKey, State

BAR_WIDTH = 20
ENDPOINT_NAMES = {"limits": "billing/limits", "allowance": "subscription/usage"}


def bar(ratio: float, width: int = BAR_WIDTH) -> str:
    """Given a used ratio, return a bar like ``[#######-----]`` (full above 100 %)."""
    filled = max(0, min(width, int(ratio * width + 1e-9)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def meter_line(meter: Meter, now: float) -> str:
    """Given a meter, return its status line; fits 80 columns."""
    if meter.unlimited:
        return f"{meter.id:<17} unlimited"
    if not meter.active:
        return f"{meter.id:<17} {bar(0)}   0%  reset"
    line = f"{meter.id:<17} {bar(meter.used_ratio)} {percent(meter.percent):>4}"
    if meter.window_end is not None and meter.window_end > now:
        line += f"  resets in {duration(meter.window_end - now)}"
    if meter.allowance_tokens:
        line += f"  {tokens(meter.used_tokens)}/{tokens(meter.allowance_tokens)}"
    return line


def forecast_lines(meter: Meter, forecast: Assessment | None, now: float) -> list[str]:
    """Given a meter and its forecast, return the status lines about its pace.

    For example ``  pace 4.1% a day over 7 days (24 h 3.9%, 3 h 0.0%)`` and
    ``  at this pace: 124% at the reset, runs out Wed 12 Nov 14:22 (6d 0h early)``.
    """
    if forecast is None:
        return []
    if forecast.window_end is None:
        return ["  no forecast: the reset time is unknown"]
    if forecast.pace is None:
        return ["  no forecast yet: it needs a few runs of history"]
    per = pace_unit(meter.window_start, forecast.window_end)
    unit = "a day" if per == 86400 else "an hour"
    head = f"  pace {forecast.pace * per * 100:.1f}% {unit} over {lookback(forecast.pace_seconds or 0)}"
    others = [b for b in reversed(forecast.lookbacks) if b.seconds != forecast.pace_seconds]
    if others:
        head += " (" + ", ".join(f"{lookback(b.seconds)} {b.rate * per * 100:.1f}%" for b in others) + ")"
    tail = "  at this pace: "
    if forecast.projected_at_reset is not None:
        tail += f"{percent(forecast.projected_at_reset * 100)} at the reset, "
    out = forecast.exhaustion_at
    if meter.used_ratio >= 1:
        tail += "used up"
    elif out is not None and out < forecast.window_end:
        tail += f"runs out {local_time(out, now)} ({duration(forecast.window_end - out)} early)"
    else:
        tail += "lasts until the reset"
    return [head, tail]


def login_line(identity: Identity, now: float) -> str:
    """Given the login identity, return where it came from and until when it is valid."""
    parts = [f"login: {identity.source}"]
    if identity.email_masked:
        parts.append(identity.email_masked)
    if identity.org_id:
        parts.append(f"org {identity.org_id}")
    if identity.expires_at is not None:
        left = identity.expires_at - now
        when = _iso(identity.expires_at)
        parts.append(
            f"token valid until {when} (in {duration(left)})" if left > 0 else f"token expired {when}"
        )
    return ", ".join(parts)


def render_status(
    reading: Reading, identity: Identity, now: float, forecasts: dict[str, Assessment] | None = None
) -> str:
    """Given a reading, the login identity and forecasts per meter, return the status text."""
    head = f"Factory usage from {ENDPOINT_NAMES.get(reading.endpoint, reading.endpoint)}"
    if reading.plan:
        head += f" (plan: {reading.plan})"
    lines = [head, login_line(identity, now)]
    period = next((m for m in reading.meters if m.window_start is not None), None)
    if period is not None:
        end = _iso(period.window_end) or "unknown"
        left = f" (in {duration(period.window_end - now)})" if period.window_end else ""
        lines.append(f"period: {_iso(period.window_start)} to {end}{left}")
    lines.append("")
    for m in reading.meters:
        lines.append(meter_line(m, now))
        lines.extend(forecast_lines(m, (forecasts or {}).get(m.id), now))
    if not reading.meters:
        lines.append("no meters: this account reports no allowance or limits")
    if reading.extra_usage_cents is not None:
        off = " (extra usage not allowed)" if reading.extra_usage_allowed is False else ""
        lines.append(f"extra usage balance: ${reading.extra_usage_cents / 100:.2f}{off}")
    return "\n".join(lines)


def forecast_json(forecast: Assessment | None) -> dict | None:
    """Given a forecast, return it JSON-ready: rates in percent per day, times in ISO 8601."""
    if forecast is None:
        return None
    day = 86400 * 100
    runs_out = forecast.exhaustion_at
    pace_day = forecast.pace
    lookback_h = forecast.pace_seconds
    projected = forecast.projected_at_reset
    lookbacks = forecast.lookbacks
    return {
        "pace_percent_per_day": None if pace_day is None else round(pace_day * day, 3),
        "pace_lookback_hours": None if lookback_h is None else round(lookback_h / 3600, 2),
        "burn_percent_per_day": {f"{b.seconds / 3600:g}h": round(b.rate * day, 3) for b in lookbacks},
        "projected_percent_at_reset": None if projected is None else round(projected * 100, 2),
        "exhaustion_at": _iso(runs_out),
        "runs_out_before_reset": runs_out is not None
        and forecast.window_end is not None
        and runs_out < forecast.window_end,
        "alerting": forecast.firing is not None,
    }


def status_json(
    reading: Reading, identity: Identity, now: float, forecasts: dict[str, Assessment] | None = None
) -> dict:
    """Given a reading, the login identity and forecasts per meter, return the status as a dict."""
    forecasts = forecasts or {}
    return {
        "endpoint": ENDPOINT_NAMES.get(reading.endpoint, reading.endpoint),
        "plan": reading.plan,
        "login": {
            "source": identity.source,
            "email": identity.email_masked,
            "org_id": identity.org_id,
            "expires_at": _iso(identity.expires_at),
        },
        "extra_usage_balance_cents": reading.extra_usage_cents,
        "extra_usage": {
            "balance_usd": None if reading.extra_usage_cents is None else reading.extra_usage_cents / 100,
            "allowed": reading.extra_usage_allowed,
        },
        "meters": [
            {
                "id": m.id,
                "used_percent": None if m.unlimited else round(m.percent, 3),
                "used_tokens": m.used_tokens,
                "allowance_tokens": m.allowance_tokens,
                "unlimited": m.unlimited,
                "active": m.active,
                "window_start": _iso(m.window_start),
                "window_end": _iso(m.window_end),
                "seconds_to_reset": None if m.window_end is None else max(0, round(m.window_end - now)),
                "forecast": forecast_json(forecasts.get(m.id)),
            }
            for m in reading.meters
        ],
    }


# --- the job's own health ------------------------------------------------------------------


@dataclass(frozen=True)
class LastAlert:
    """The alert delivered last: when, what, and every channel that has it."""

    at: float
    key: DeliveryKey
    channels: tuple[str, ...]  # labels; "a removed channel" for ids no longer configured


@dataclass(frozen=True)
class JobHealth:
    """What the state file says of the job: the file, its runs, and the last alert."""

    state_file: Path
    last_run: float | None
    last_success: float | None
    failures: int
    failing_since: float | None
    last_error: str | None
    last_alert: LastAlert | None


def job_health(state: State, state_file: Path, config: Config) -> JobHealth:
    """Given the state a run left and its path, return the job's health as it shows it."""
    health = state.health
    runs = [t for t in (health.last_success, health.last_failure) if t is not None]
    latest: tuple[float, DeliveryKey] | None = None
    for key in state.ledger:
        for at in state.delivered(key).values():
            if latest is None or (at, key) > latest:
                latest = (at, key)
    last_alert = None
    if latest is not None:
        labels = {ch.id: ch.label for ch in config.delivery_channels()}
        told = sorted(state.delivered(latest[1]))
        last_alert = LastAlert(latest[0], latest[1], tuple(labels.get(c, "a removed channel") for c in told))
    return JobHealth(
        state_file=state_file,
        last_run=max(runs) if runs else None,
        last_success=health.last_success,
        failures=health.failures,
        failing_since=health.failing_since,
        last_error=health.last_error if health.failures else None,
        last_alert=last_alert,
    )


def describe(key: DeliveryKey) -> str:
    """Given an alert's key, return what it was about in a few words."""
    level = percent(key.level)
    return {
        "threshold": f"{key.meter} at {level}",
        "reminder": f"{key.meter} still at {level} (reminder)",
        "forecast": f"{key.meter} runs out before the reset (forecast)",
        "reset": f"{key.meter} reset",
        "stale": "usage alerts not working",
        "recovered": "usage alerts working again",
        "login": "Factory login expired",
    }.get(key.kind, f"{key.kind} for {key.meter}")


def job_lines(job: JobHealth, now: float) -> list[str]:
    """Given the job's health, return the status lines about it (after the meters); only the
    last, the state file's path, may be longer than 80 columns."""
    lines = ["", "job:"]
    state_line = f"  state file: {job.state_file}"
    if job.last_run is None:
        return [*lines, "  no run yet: `factory-usage-alert run` has not run with this state", state_line]
    ago = now - job.last_run
    ran = f"  last run {local_time(job.last_run, now)} ({'just now' if ago < 60 else duration(ago) + ' ago'})"
    if job.last_success is None:
        ran += ", never read usage"
    elif job.last_success != job.last_run:
        ran += f", last read usage {local_time(job.last_success, now)}"
    lines.append(ran)
    if job.failures:
        since = f" since {local_time(job.failing_since, now)}" if job.failing_since is not None else ""
        runs = "run" if job.failures == 1 else "runs in a row"
        lines.append(f"  {job.failures} failed {runs}{since}: {job.last_error}")
    if job.last_alert is None:
        lines.append("  no alert sent yet")
    else:
        alert = job.last_alert
        lines.append(f"  last alert {local_time(alert.at, now)}: {describe(alert.key)}")
        lines.append(f"    to {', '.join(alert.channels)}")
    return [*lines, state_line]


def job_json(job: JobHealth) -> dict:
    """Given the job's health, return it JSON-ready."""
    alert = job.last_alert
    return {
        "state_file": str(job.state_file),
        "last_run": _iso(job.last_run),
        "last_success": _iso(job.last_success),
        "consecutive_failures": job.failures,
        "failing_since": _iso(job.failing_since),
        "last_error": job.last_error,
        "last_alert": None
        if alert is None
        else {
            "at": _iso(alert.at),
            "meter": alert.key.meter,
            "kind": alert.key.kind,
            "level_percent": alert.key.level,
            "about": describe(alert.key),
            "channels": list(alert.channels),
        },
    }
