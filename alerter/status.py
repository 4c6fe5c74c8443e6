"""What ``status`` shows: every meter as a bar, and the same data as JSON."""

from __future__ import annotations

from datetime import datetime, timezone

from alerter.credentials import Identity
from alerter.forecast import Assessment
from alerter.messages import duration, local_time, lookback, pace_unit, percent, tokens
from alerter.meters import Meter, Reading

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

    For example ``  pace 4.1% a day over 7 days (3 days 4.5%, 24 h 3.9%, 6 h 0.0%)`` and
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
        lines.append(f"extra usage balance: ${reading.extra_usage_cents / 100:.2f}")
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
