"""What ``status`` shows: every meter as a bar, and the same data as JSON."""

from __future__ import annotations

from datetime import datetime, timezone

from alerter.credentials import Identity
from alerter.messages import duration, percent, tokens
from alerter.meters import Meter, Reading

BAR_WIDTH = 20
SOURCE_NAMES = {"limits": "billing/limits", "allowance": "subscription/usage"}


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


def render_status(reading: Reading, identity: Identity, now: float) -> str:
    """Given a reading and the login identity, return the human status text."""
    head = f"Factory usage from {SOURCE_NAMES.get(reading.source, reading.source)}"
    if reading.plan:
        head += f" (plan: {reading.plan})"
    lines = [head, login_line(identity, now)]
    period = next((m for m in reading.meters if m.window_start is not None), None)
    if period is not None:
        end = _iso(period.window_end) or "unknown"
        left = f" (in {duration(period.window_end - now)})" if period.window_end else ""
        lines.append(f"period: {_iso(period.window_start)} to {end}{left}")
    lines.append("")
    lines.extend(meter_line(m, now) for m in reading.meters)
    if not reading.meters:
        lines.append("no meters: this account reports no allowance or limits")
    if reading.extra_usage_cents is not None:
        lines.append(f"extra usage balance: ${reading.extra_usage_cents / 100:.2f}")
    return "\n".join(lines)


def status_json(reading: Reading, identity: Identity, now: float) -> dict:
    """Given a reading and the login identity, return the status as a JSON-ready dict."""
    return {
        "source": SOURCE_NAMES.get(reading.source, reading.source),
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
            }
            for m in reading.meters
        ],
    }
