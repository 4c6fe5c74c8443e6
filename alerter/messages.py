"""Words and numbers as people read them: percents, token counts, reset times.

Pure functions; the only outside input is the local time zone used to show reset times.
Notification bodies are plain text short enough for a phone lock screen.
"""

from __future__ import annotations

import math
from datetime import datetime

from alerter.meters import Meter, Reading

WINDOW_NAMES = {"5h": "5-hour", "weekly": "weekly", "monthly": "monthly"}


def percent(value: float) -> str:
    """Given a percent, return it rounded down with a % sign: 79.9 -> '79%'."""
    if not math.isfinite(value):
        return "?%"
    return f"{math.floor(value + 1e-9):d}%"


def tokens(count: float | None) -> str:
    """Given a token count, return it short: 16400000 -> '16.4M'."""
    if count is None:
        return "?"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size * 0.99995:  # 999,999 reads "1M", not "1000k"
            text = f"{count / size:.1f}".rstrip("0").rstrip(".")
            return text + suffix
    return str(int(count))


def duration(seconds: float) -> str:
    """Given a number of seconds, return it coarse: '3d 4h', '2h 14m', '5m'."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def local_time(ts: float, now: float) -> str:
    """Given a unix time, return it in local time; the date only when it is not today."""
    try:
        when = datetime.fromtimestamp(ts).astimezone()
        today = datetime.fromtimestamp(now).astimezone().date()
    except (OverflowError, OSError, ValueError):  # beyond what the calendar can show
        return "in the far future" if ts > now else "long ago"
    if when.date() == today:
        return when.strftime("%H:%M")
    return f"{when.strftime('%a')} {when.day} {when.strftime('%b %H:%M')}"


def resets(meter: Meter, now: float) -> str:
    """Given a meter, return when it resets: 'resets Sun 7 Dec 14:00 (in 11d 3h)'."""
    if meter.window_end is None:
        return "reset time unknown"
    if meter.window_end <= now:
        return "resets now"
    return f"resets {local_time(meter.window_end, now)} (in {duration(meter.window_end - now)})"


def window_name(meter_id: str) -> str:
    """Given a meter id, return a readable name: 'standard.5h' -> 'standard 5-hour limit'."""
    pool, _, window = meter_id.partition(".")
    if not window:
        return f"{pool} token allowance"
    return f"{pool} {WINDOW_NAMES.get(window, window)} limit"


def usage_line(meter: Meter) -> str:
    """Given a meter, return 'standard: 82% used (16.4M of 20M tokens)'."""
    if "." in meter.id:
        return f"{meter.id}: {percent(meter.percent)} of the {window_name(meter.id)} used"
    line = f"{meter.id}: {percent(meter.percent)} used"
    if meter.allowance_tokens:
        line += f" ({tokens(meter.used_tokens)} of {tokens(meter.allowance_tokens)} tokens)"
    return line


def threshold_message(
    meter: Meter, threshold: float, reading: Reading, now: float, critical: bool
) -> tuple[str, str]:
    """Given a meter past a threshold, return the notification (title, body)."""
    used = percent(meter.percent)
    exhausted = threshold >= 100
    if exhausted:
        title = f"Factory {meter.id} at {used}: {window_name(meter.id)} used up"
    else:
        title = f"Factory {meter.id} at {used} (past {percent(threshold)})"
    lines = [f"{usage_line(meter)}, past the {percent(threshold)} alert."]
    if exhausted:
        what = "the limit is reached" if "." in meter.id else "the allowance is used up"
        lines = [f"{usage_line(meter)}: {what}."]
    lines.append(resets(meter, now)[0].upper() + resets(meter, now)[1:] + ".")
    if critical and reading.extra_usage_cents is not None:
        lines.append(f"Extra usage balance: ${reading.extra_usage_cents / 100:.2f}.")
    return title, "\n".join(lines)


def lookback(seconds: float) -> str:
    """Given a lookback in seconds, return it readable: '7 days', '24 h', '30 min'."""
    if seconds >= 2 * 86400 and seconds % 86400 < 60:
        return f"{round(seconds / 86400)} days"
    if seconds >= 3600:
        hours = seconds / 3600
        return f"{hours:g} h" if (hours * 4).is_integer() else f"{hours:.1f} h"  # not 1.58333 h
    return f"{round(seconds / 60)} min"


def pace(meter: Meter, rate: float, per: float) -> str:
    """Given a rate (used fraction per second), return '4.6% a day (920k tokens)'."""
    unit = "a day" if per == 86400 else "an hour"
    share = rate * per * 100
    text = f"{share:.1f}% {unit}" if share < 10 else f"{share:.0f}% {unit}"
    if meter.allowance_tokens:
        text += f" ({tokens(rate * per * meter.allowance_tokens)} tokens)"
    return text


def pace_unit(window_start: float | None, window_end: float | None) -> float:
    """Given a window, return the unit rates are shown in: a day, or an hour for short windows."""
    if window_start is not None and window_end is not None and window_end - window_start < 2 * 86400:
        return 3600.0
    return 86400.0


def forecast_message(
    meter: Meter,
    rate: float,
    rate_seconds: float,
    runs_out: float,
    window: tuple[float | None, float],
    now: float,
) -> tuple[str, str]:
    """Given a meter, its pace over a lookback and when it runs out, return (title, body)."""
    start, end = window
    per = pace_unit(start, end)
    early = duration(end - runs_out)
    title = f"Factory {meter.id} runs out {local_time(runs_out, now)} at this pace, {early} before the reset"
    left = max(0.0, 1 - meter.used_ratio)
    budget = left / max(1.0, end - now)
    lines = [
        f"At this pace {meter.id} runs out {local_time(runs_out, now)} (in {duration(runs_out - now)}), "
        f"{early} before the reset {local_time(end, now)}.",
        f"{usage_line(meter)}; pace over the last {lookback(rate_seconds)}: {pace(meter, rate, per)}.",
        f"To last until the reset: at most {pace(meter, budget, per)}.",
    ]
    return title, "\n".join(lines)


# --- the job's own notices (monitor) -------------------------------------------------------

APP = "factory-usage-alert"


def stale_message(reason: str, failures: int, last_success: float | None, now: float) -> tuple[str, str]:
    """Given why runs fail, how many failed in a row and the last success, return (title, body)."""
    since = f"last successful read: {local_time(last_success, now)}" if last_success else "never read yet"
    runs = "1 run" if failures == 1 else f"{failures} runs in a row"
    body = (
        f"Usage alerts are not working: {reason}\n"
        f"{runs} could not read Factory usage ({since}).\n"
        "No usage alert can arrive until this is fixed; you will get one message when it works again."
    )
    return f"{APP}: usage alerts are not working", body


def recovered_message(failures: int, since: float | None, now: float) -> tuple[str, str]:
    """Given the outage (failed runs, first failure), return the "working again" (title, body)."""
    outage = f" after {failures} failed run{'s' if failures != 1 else ''}" if failures else ""
    if since:
        outage += f" (failing since {local_time(since, now)})"
    body = f"Factory usage was read again at {local_time(now, now)}{outage}.\nUsage alerts are working again."
    return f"{APP}: usage alerts are working again", body


def reset_message(meter: Meter, now: float, reset_at: float | None = None) -> tuple[str, str]:
    """Given a meter whose used-up window has reset (at ``reset_at``, default ``now``), return
    the notification (title, body) with the meter as it is ``now``."""
    back_to = percent(meter.percent) if meter.active else "0%"
    title = f"Factory {meter.id} reset, you are back to {back_to}"
    at = now if reset_at is None else reset_at
    lines = [f"The {window_name(meter.id)} that was used up has reset ({local_time(at, now)})."]
    if meter.active and meter.window_end is not None:
        lines.append(f"Next reset: {resets(meter, now)[len('resets ') :]}.")
    return title, "\n".join(lines)


def reminder_message(meter: Meter, now: float) -> tuple[str, str]:
    """Given a meter still at or past 100 %, return the reminder (title, body)."""
    title = f"Reminder: Factory {meter.id} still at {percent(meter.percent)}"
    still = "the limit is still reached" if "." in meter.id else "the allowance is still used up"
    body = f"{usage_line(meter)}: {still}.\n"
    body += resets(meter, now)[0].upper() + resets(meter, now)[1:] + "."
    return title, body
