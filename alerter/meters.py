"""The one model the job watches: meters, read from either Factory endpoint.

A :class:`Meter` is what any rule needs: how much of something is used, and the window
it belongs to. ``parse_usage`` (the per-period token allowance) and ``parse_limits``
(5-hour / weekly / monthly rate-limit windows) turn an answer into a :class:`Reading`;
nothing past this module knows which endpoint answered.

Both parsers are strict about what they depend on: a missing, null, negative, non-finite
or wrongly typed field raises :class:`BadAnswer` (an UpstreamError) naming the field, so
no alert is ever fired from bad data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from alerter.errors import UpstreamError
from alerter.redact import redact

UNLIMITED_ALLOWANCE = 1e12  # Factory reports "unlimited" as a huge allowance.
# The last second a calendar can show (9999-12-31 23:59:59 UTC): a window said to end
# later, or to have begun before 1970, is not a time anyone meant, and `status` could not
# print it.
LATEST_TIME = 253402300799.0
WINDOW_KEYS = (("fiveHour", "5h"), ("weekly", "weekly"), ("monthly", "monthly"))


def is_number(value: object) -> bool:
    """Given a value read from JSON or YAML, return True for a finite int or float (not a bool).

    An integer too large for any float (JSON and YAML allow thousands of digits) is not a
    number anyone meant: math.isfinite would raise OverflowError on it.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class BadAnswer(UpstreamError):
    """Factory answered, but not with something the job can trust."""


@dataclass(frozen=True)
class Meter:
    """One thing that can run out.

    ``used_ratio`` is a fraction (0.8 = 80 %), possibly above 1. Times are unix seconds.
    ``window_start`` is known for billing periods, ``window_end`` for limit windows (and
    for billing periods when Factory says). An inactive window has been reset and is
    never alerted on; an unlimited meter never runs out.
    """

    id: str
    used_ratio: float
    window_start: float | None = None
    window_end: float | None = None
    used_tokens: int | None = None
    allowance_tokens: int | None = None
    active: bool = True
    unlimited: bool = False

    @property
    def percent(self) -> float:
        """Return the used share in percent (80.0 for 80 %)."""
        return self.used_ratio * 100.0


@dataclass(frozen=True)
class Reading:
    """What one fetch said: the meters, and facts for display."""

    endpoint: str  # "allowance" or "limits": which endpoint answered
    meters: tuple[Meter, ...]
    plan: str | None = None
    extra_usage_cents: int | None = None
    extra_usage_allowed: bool | None = None  # billing/limits' extraUsageAllowed, when given


# --- field checks ------------------------------------------------------------------------


def _number(obj: dict, key: str, where: str, *, required: bool = True) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadAnswer(f"Factory's answer has no {where}.{key}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAnswer(f"Factory's answer has a {type(value).__name__} in {where}.{key}, not a number")
    if not is_number(value) or value < 0 or value > 1e18:
        raise BadAnswer(f"Factory's answer has an impossible value in {where}.{key}: {_shown(value)}")
    return float(value)


def _object(obj: Any, key: str, where: str, *, required: bool = True) -> dict | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        if required:
            raise BadAnswer(f"Factory's answer has no {where}{key}")
        return None
    if not isinstance(value, dict):
        raise BadAnswer(f"Factory's answer has a {type(value).__name__} in {where}{key}, not an object")
    return value


def _error_object(body: Any) -> None:
    """A 200 that carries an error instead of data is not usable."""
    if isinstance(body, dict):
        for key in ("error", "errors", "message"):
            if key in body and not any(k in body for k in ("usage", "limits")):
                detail = body[key]
                # The server's words reach stderr, the state and notifications: a token or
                # an address in them must not.
                text = redact(detail, 120) if isinstance(detail, str) else type(detail).__name__
                raise BadAnswer(f"Factory answered with an error instead of usage: {text}")
    if not isinstance(body, dict):
        raise BadAnswer(f"Factory's answer is a JSON {type(body).__name__}, not an object")


def plan_name(standard_allowance: float) -> str:
    """Given standard.totalAllowance, return the plan it implies."""
    if standard_allowance > UNLIMITED_ALLOWANCE:
        return "Unlimited"
    if standard_allowance >= 200_000_000:
        return "Max"
    if standard_allowance >= 20_000_000:
        return "Pro"
    if standard_allowance > 0:
        return "Basic"
    return "None"


# --- /api/organization/subscription/usage ---------------------------------------------------


def parse_usage(body: Any) -> Reading:
    """Given the JSON body of subscription/usage, return its Reading. Raise BadAnswer."""
    _error_object(body)
    usage = _object(body, "usage", "")
    # Unix ms as Factory sends them; seconds are read as seconds (as in windowEnd), not as
    # a period in January 1970.
    start_at = _number(usage, "startDate", "usage")
    end_at = _number(usage, "endDate", "usage", required=False)
    start = _checked_time(_unix_seconds(start_at), "usage.startDate", usage["startDate"])
    end = _checked_time(_unix_seconds(end_at), "usage.endDate", usage["endDate"]) if end_at else None
    if end is not None and end <= start:
        end = None  # a period that ends before it starts tells nothing: treat as unknown
    meters = []
    plan = None
    for bucket in ("standard", "premium"):
        data = _object(usage, bucket, "usage.", required=bucket == "standard")
        if data is None:
            continue
        where = f"usage.{bucket}"
        allowance = _number(data, "totalAllowance", where)
        used = _number(data, "orgTotalTokensUsed", where, required=False)
        if used is None:
            used = _number(data, "userTokens", where, required=False)
        ratio = _number(data, "usedRatio", where, required=False)
        if bucket == "standard":
            plan = plan_name(allowance)
        if allowance == 0:
            continue  # no such bucket on this plan (premium below Max/Enterprise)
        if allowance > UNLIMITED_ALLOWANCE:
            meters.append(Meter(bucket, 0.0, start, end, _int(used), None, unlimited=True))
            continue
        if used is not None:
            # usedRatio is sometimes 0 while tokens are used; the tokens are the truth.
            ratio = used / allowance
        if ratio is None:
            raise BadAnswer(f"Factory's answer has neither tokens used nor usedRatio in {where}")
        meters.append(Meter(bucket, ratio, start, end, _int(used), int(allowance)))
    return Reading(endpoint="allowance", meters=tuple(meters), plan=plan)


def _shown(value: float | str) -> str:
    """Given a number (or digits) from an answer, return it short enough for a one-line error."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr refuses over 4300 digits
        return "a number of over 19 digits"
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


# --- /api/billing/limits --------------------------------------------------------------------


def _unix_seconds(value: float) -> float:
    """Given unix ms or s, return unix seconds: 1e11 s is the year 5138, 1e11 ms 1973."""
    return value / 1000.0 if value > 1e11 else float(value)


def _checked_time(seconds: float, where: str, given: float | str) -> float:
    """Given unix seconds read from an answer as ``given``, return them. Raise BadAnswer
    outside 1970..9999."""
    if not 0 <= seconds <= LATEST_TIME:
        raise BadAnswer(f"Factory's answer has an impossible time in {where}: {_shown(given)}")
    return seconds


def parse_time(value: Any, where: str) -> float | None:
    """Given windowEnd as ISO 8601 text or unix ms (or s), return unix seconds or None.

    Raise BadAnswer for anything else, or a time before 1970 or after the year 9999.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadAnswer(f"Factory's answer has true/false in {where}, not a time")
    if isinstance(value, (int, float)):
        if not is_number(value):  # the range is _checked_time's
            raise BadAnswer(f"Factory's answer has an impossible time in {where}: {_shown(value)}")
        return _checked_time(_unix_seconds(value), where, value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # "²" is a digit to isdigit, not to int()
            if len(text) > 20:  # int() refuses over 4300 digits (ValueError); no time has 20
                raise BadAnswer(f"Factory's answer has an impossible time in {where}: {_shown(text)}")
            return parse_time(int(text), where)
        try:
            # RFC 3339 allows a lower-case "t" and "z"; fromisoformat takes neither.
            parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            shown = redact(text, 40)
            raise BadAnswer(f"Factory's answer has an unreadable time in {where}: {shown!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return _checked_time(parsed.timestamp(), where, redact(text, 40))
    raise BadAnswer(f"Factory's answer has a {type(value).__name__} in {where}, not a time")


def uses_limits_billing(body: Any) -> bool | None:
    """Given a billing/limits body, return its usesTokenRateLimitsBilling flag (None if absent)."""
    if isinstance(body, dict):
        for obj in (body, body.get("limits")):
            if isinstance(obj, dict) and isinstance(obj.get("usesTokenRateLimitsBilling"), bool):
                return obj["usesTokenRateLimitsBilling"]
    return None


def parse_limits(body: Any, now: float) -> Reading:
    """Given the JSON body of billing/limits and the time, return its Reading. Raise BadAnswer."""
    _error_object(body)
    limits = _object(body, "limits", "")
    meters = []
    for pool in ("standard", "core"):
        data = _object(limits, pool, "limits.", required=pool == "standard")
        if data is None:
            continue  # accounts without a core pool
        for key, suffix in WINDOW_KEYS:
            where = f"limits.{pool}.{key}"
            window = _object(data, key, f"limits.{pool}.", required=False)
            if window is None:
                continue
            percent = _number(window, "usedPercent", where, required=False) or 0.0
            end = parse_time(window.get("windowEnd"), where + ".windowEnd")
            if end is None:
                counted = window.get("secondsRemaining")
                if not (is_number(counted) and counted < 0):  # below 0: it has ended (end None)
                    remaining = _number(window, "secondsRemaining", where, required=False)
                    end = now + remaining if remaining else None
            active = end is not None and end > now
            meters.append(
                Meter(
                    f"{pool}.{suffix}",
                    percent / 100.0 if active else 0.0,
                    window_end=end,
                    active=active,
                )
            )
    if not meters:
        raise BadAnswer("Factory's answer has no limit windows in limits.standard")
    cents = None
    for obj in (body, limits):
        value = obj.get("extraUsageBalanceCents")
        if is_number(value):
            cents = int(value)
    allowed = next(
        (o["extraUsageAllowed"] for o in (body, limits) if isinstance(o.get("extraUsageAllowed"), bool)), None
    )
    return Reading(
        endpoint="limits", meters=tuple(meters), extra_usage_cents=cents, extra_usage_allowed=allowed
    )
