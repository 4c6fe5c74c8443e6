"""Burn-rate forecasts: will a meter run out before its window resets?

Pure functions: samples in, numbers out, ``now`` always passed in. ``rules.evaluate``
keeps each meter's history in the state and asks :func:`assess` whether the pace of
use, measured over trailing lookbacks, runs the meter out before the reset.

The rule follows the multiwindow, multi-burn-rate alerts of the Google SRE workbook. The
*burn rate* is the pace of use divided by the pace that would use up exactly what is left
by the reset; above 1 the meter runs out early. A rule pairs a long lookback (enough use
to be significant) with a short one (it is still happening), and fires when both burn at
least its factor. One busy morning raises the short lookback only; a burst that ended
days ago keeps the long one high while the short one has calmed down; neither fires.
Four refinements, all measured with ``bench/alert_quality.py``. A rule ``within`` a
horizon fires only on a pace that also runs the meter out within it, so it waits until
a warning that early is needed (a burst that would run the meter out a week from now
has usually ended by then; one that runs it out in a day has not). Once a window
kind's ``min_elapsed`` share has passed, a lookback longer than the window so far is
measured since the window began (it began empty), so a window that runs out fast is
warned before its lookbacks fill. A rule with a ``hold`` fires only on a pace that
also fired it that long ago and half that long ago, which a shorter burst never does.
With a window kind's noise margin, the pace must clear the threshold by that many
standard deviations of the use still to come, as far as the window so far shows how
much use swings from day to day (a noisy day looks like a new pace; after steady days
a pace needs no margin).

History, per meter, is a list of segments, one per window seen, newest last::

    {"start": 1770623326, "end": 1773042526, "scale": 20000000, "samples": [[t, v], ...]}

``v / scale`` is the used fraction at unix time ``t``: tokens used and the allowance for
billing periods, usedPercent and 100 for limit windows. Keeping the raw numbers lets
``history --jsonl`` re-create the observations. Old samples are thinned (see
:data:`THINNING`) so that the state stays a few kilobytes per meter, however often the
job runs.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from alerter.meters import Meter, is_number
from alerter.state import Episode

HOUR = 3600.0
DAY = 24 * HOUR

# Nominal window lengths; limit windows report only their end, billing periods both ends.
WINDOW_LENGTHS = {"5h": 5 * HOUR, "weekly": 7 * DAY, "monthly": 30 * DAY, "period": 30 * DAY}
WINDOW_KINDS = tuple(WINDOW_LENGTHS)

# Billing periods run from 27 to 31 days; a "previous period" outside this is not one.
PERIOD_RANGE = (20 * DAY, 40 * DAY)

# Per window kind: (age below, keep one sample per) in seconds. Every step is a whole
# multiple of the finer one, which makes thinning independent of how often it runs. The
# finest steps cover the longest default lookback (7 days; 2 h for the 5-hour window);
# the oldest band reaches back about one and a half windows, so that `history --jsonl`
# still holds the whole previous window.
THINNING = {
    "period": ((1 * DAY, HOUR), (8 * DAY, 3 * HOUR), (47 * DAY, 12 * HOUR)),
    "monthly": ((1 * DAY, HOUR), (8 * DAY, 3 * HOUR), (47 * DAY, 12 * HOUR)),
    "weekly": ((6 * HOUR, 900), (2 * DAY, 2700), (11 * DAY, 3 * HOUR)),
    "5h": ((3 * HOUR, 300), (8 * HOUR, 900)),
}

# A lookback counts as covered when history reaches back this share of it.
COVERAGE_SLACK = 0.05

# The readings around a lookback's start may be up to this many lookbacks apart. The
# shipped timers run every 15 minutes with up to 2 minutes of random delay, so two runs
# are 13 to 17 minutes apart: a 15-minute lookback between them is still measured; one
# across a missed run is not.
MAX_GAP = 1.5


@dataclass(frozen=True)
class Rule:
    """A long and a short lookback that must both burn at least ``burn_rate``, now and,
    with ``hold_seconds``, also that long ago and half that long ago (the pace held);
    with ``within_seconds``, at a pace that also runs the meter out within that long."""

    long_seconds: float
    short_seconds: float
    burn_rate: float
    hold_seconds: float = 0.0
    within_seconds: float = 0.0

    @property
    def reach(self) -> float:
        """How far back (seconds) the rule looks at the history."""
        return self.long_seconds + self.hold_seconds


@functools.lru_cache(maxsize=64)
def _slowest_first(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(sorted(rules, key=lambda r: (-r.long_seconds, -r.short_seconds)))


def _rules(*rules: tuple[float, ...]) -> tuple[Rule, ...]:
    """Given (long hours, short hours, burn rate[, hold hours[, within hours]]) each,
    return the rules."""
    return tuple(Rule(*(x * HOUR for x in r[:2]), r[2], *(x * HOUR for x in r[3:])) for r in rules)


# Chosen with bench/tune_forecast.py on the training part of bench/alert_quality.py only
# (see the README). For a month: a pace over a whole week (its weekly rhythm) twice too
# fast is told at once; one that runs the month out only once that is within 7 days,
# and a day's pace (a late surge, a burst that may run the month out) once it runs out
# within 48 hours: a burst usually ends before that, a change of pace does not. For the
# week: a pace over 3 days that runs out within 60 hours, or a day's within 36. For the
# 5-hour window: a pace over 2 hours that runs out within 90 minutes, one over an hour
# twice too fast, or one over half an hour running out within 45 minutes.
DEFAULT_RULES: Mapping[str, tuple[Rule, ...]] = {
    "period": _rules((168, 24, 2.0), (168, 24, 1.0, 0, 168), (24, 3, 1.0, 0, 48)),
    "monthly": _rules((168, 24, 2.0), (168, 24, 1.0, 0, 168), (24, 3, 1.0, 0, 48)),
    "weekly": _rules((72, 6, 1.0, 0, 60), (24, 2, 1.0, 0, 36)),
    "5h": _rules((2, 0.5, 1.0, 0, 1.5), (1, 0.25, 2.0), (0.5, 0.25, 1.0, 0, 0.75)),
}

# Per window kind, the block over which use is compared with itself to see how much it
# swings: day to day in a month or a week, quarter-hour to quarter-hour in 5 hours.
NOISE_BLOCK: Mapping[str, float] = {"period": DAY, "monthly": DAY, "weekly": DAY, "5h": 900.0}

# A swing is measured once the window so far holds this many whole blocks, and over
# the newest this many at most (a window longer than that, which only a wrong start
# could make, costs no more).
MIN_NOISE_BLOCKS = 3
MAX_NOISE_BLOCKS = 64

# Per window kind, how many standard deviations of the use still to come (see
# :func:`swing`) a pace must clear before it is told (0: none). Chosen with the rules
# (see the README): half of one for a month and a week, a quarter for 5 hours.
DEFAULT_NOISE_MARGIN: Mapping[str, float] = {"period": 0.5, "monthly": 0.5, "weekly": 0.5, "5h": 0.25}

# Per window kind, the share of the window from which the pace since the window began
# stands in for a lookback the history does not cover yet (same source). Earlier, the
# early bursts of the training part cost more false alarms than the early warnings gained.
DEFAULT_MIN_ELAPSED: Mapping[str, float] = {"period": 0.25, "monthly": 0.25, "weekly": 0.4, "5h": 0.3}


@dataclass(frozen=True)
class ForecastSettings:
    """The ``forecast:`` section of the config."""

    enabled: bool = True
    severity: str = "warning"
    min_elapsed: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_ELAPSED))
    rearm_below: float = 0.9  # a pace that ends the window below this share is safe
    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=lambda: dict(DEFAULT_RULES))
    noise_margin: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_NOISE_MARGIN))

    def min_elapsed_for(self, kind: str) -> float:
        """Given a window kind, return the share of its window that must pass before a forecast."""
        return self.min_elapsed.get(kind, 0.0)

    def noise_margin_for(self, kind: str) -> float:
        """Given a window kind, return its noise margin (standard deviations; 0: none)."""
        return self.noise_margin.get(kind, 0.0)

    def rules_for(self, kind: str) -> tuple[Rule, ...]:
        """Given a window kind, return its rules, slowest (longest lookback) first."""
        return _slowest_first(tuple(self.rules.get(kind, ())))

    def rearm_seconds(self, kind: str) -> float:
        """Given a window kind, return how long a safe pace must last to end an episode."""
        rules = self.rules_for(kind)
        return rules[0].short_seconds if rules else 0.0


@dataclass(frozen=True)
class Lookback:
    """The pace over one trailing lookback, as used fraction per second."""

    seconds: float
    rate: float


@dataclass(frozen=True)
class Assessment:
    """What the history says about one meter now.

    ``pace`` is the rate over the longest covered lookback (or since the earliest sample
    when none is covered yet); ``firing`` is the rule that fires, if any, and ``rate``
    the long-lookback pace it saw. Times are unix seconds; fractions 1.0 = 100 %.
    """

    used: float
    window_end: float | None
    lookbacks: tuple[Lookback, ...] = ()
    pace: float | None = None
    pace_seconds: float | None = None
    projected_at_reset: float | None = None
    exhaustion_at: float | None = None
    firing: Rule | None = None
    rate: float | None = None
    safe: bool = False
    now: float = 0.0

    def runs_out_at(self, rate: float | None) -> float | None:
        """Given a pace, return when the meter runs out at it (None: never, or already)."""
        if rate is None or rate <= 0 or self.used >= 1:
            return None
        return self.now + (1 - self.used) / rate


# --- windows -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def window_kind(meter_id: str) -> str:
    """Given a meter id, return its window kind: period, monthly, weekly or 5h."""
    _, _, window = meter_id.partition(".")
    return window if window in WINDOW_LENGTHS else "period"


def window_bounds(meter: Meter, previous_length: float | None = None) -> tuple[float | None, float | None]:
    """Given a meter, return (start, end) of its window, either None when unknowable.

    A billing period with no endDate is assumed to last as long as the previous one did
    (``previous_length``); without that its end, and so its forecast, is unknown. Limit
    windows report only their end; their start is the end less the nominal length.
    """
    kind = window_kind(meter.id)
    if kind == "period":
        end = meter.window_end
        if end is None and meter.window_start is not None and previous_length:
            end = meter.window_start + previous_length
        return meter.window_start, end
    if meter.window_end is None:
        return None, None
    return meter.window_end - WINDOW_LENGTHS[kind], meter.window_end


# --- history -----------------------------------------------------------------------------


def sample_of(meter: Meter) -> tuple[float, float]:
    """Given a meter, return (value, scale) to store: tokens and allowance, or percent and 100."""
    if meter.allowance_tokens:
        used = (
            meter.used_tokens
            if meter.used_tokens is not None
            else round(meter.used_ratio * meter.allowance_tokens)
        )
        return float(used), float(meter.allowance_tokens)
    if window_kind(meter.id) == "period":
        return round(meter.used_ratio, 9), 1.0
    return round(meter.percent, 4), 100.0


def add_sample(history: list, meter: Meter, now: float, same_window: bool) -> list:
    """Given a meter's history, return it with the meter's reading at ``now`` appended.

    A new segment starts at a new window (``same_window`` False) or a new allowance.
    The result is thinned; the input is not changed.
    """
    value, scale = sample_of(meter)
    segments = [dict(segment) for segment in history]  # checked when the state was loaded
    current = segments[-1] if segments else None
    if current is None or not same_window or current.get("scale") != _plain(scale):
        current = {"start": meter.window_start, "end": meter.window_end, "scale": _plain(scale)}
        current["samples"] = []
        segments.append(current)
    current["end"] = meter.window_end  # limit windows drift by minutes; keep the latest
    kind = window_kind(meter.id)
    t = round(now)
    samples = list(current["samples"])
    while samples and samples[-1][0] >= t:
        samples.pop()  # the clock went back: the newer reading replaces what it contradicts
    step = THINNING[kind][0][1]
    if samples and samples[-1][0] // step == t // step:
        # Same finest bucket as the previous reading: this one stands for it. Thinning
        # the older bands can wait for the next bucket; it gives the same result then.
        samples[-1] = [t, _plain(value)]
        current["samples"] = samples
        return segments
    samples.append([t, _plain(value)])
    current["samples"] = samples
    return thin(segments, now, kind)


def clean_history(history: object) -> list[dict]:
    """Given a history read from the state file, return copies of its well-formed segments,
    oldest first (the state loader's check of this module's format).

    A segment or sample of the wrong shape counts as not remembered rather than a crash.
    """
    result = []
    for segment in history if isinstance(history, list) else []:
        if not isinstance(segment, dict) or not _positive(segment.get("scale")):
            continue
        samples = segment.get("samples")
        if not isinstance(samples, list):
            continue
        good = [x for x in samples if type(x) is list and len(x) == 2 and _finite(x[0]) and _finite(x[1])]
        if not good:
            continue
        if any(a[0] >= b[0] for a, b in zip(good, good[1:], strict=False)):
            good = sorted({int(x[0]): x for x in good}.values(), key=_time)
        start, end = segment.get("start"), segment.get("end")
        result.append(
            {
                "start": start if _finite(start) else None,
                "end": end if _finite(end) else None,
                "scale": segment["scale"],
                "samples": good,
            }
        )
    return result


def _finite(value: object) -> bool:
    return type(value) in (int, float) and is_number(value) and abs(value) < 1e15


def _positive(value: object) -> bool:
    return _finite(value) and value > 0


def _plain(value: float) -> int | float:
    """Store whole numbers as ints: shorter JSON, and the same after a round trip."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def thin(segments: list, now: float, kind: str) -> list:
    """Given history segments, return them with old samples thinned and expired ones dropped.

    Each age band keeps the latest sample of each bucket of absolute time; a coarser
    band's buckets are whole multiples of a finer one's, so a sample once dropped stays
    dropped and the result is the same however often thinning runs (thinning twice is
    thinning once). The meters of one reading keep the same sample times, and the newest
    sample is always kept.
    """
    bands = [(now - max_age, step) for max_age, step in THINNING[kind]]  # newest band first
    result = []
    for segment in segments:
        samples = segment["samples"]
        parts = []
        hi = len(samples)
        for oldest, step in bands:
            lo = bisect.bisect_right(samples, oldest, hi=hi, key=_time)
            part = []
            for i in range(lo, hi):
                # The next sample, in whatever band, is the one to compare with: then a
                # sample once dropped would be dropped by any later thinning too.
                if i + 1 < len(samples) and samples[i + 1][0] // step == samples[i][0] // step:
                    continue  # a later sample stands for this bucket
                part.append(samples[i])
            parts.append(part)
            hi = lo
        kept = [sample for part in reversed(parts) for sample in part]
        if kept:
            result.append(dict(segment, samples=kept))
    return result


def _time(sample: list) -> float:
    return sample[0]


def points(
    history: Sequence, meter: Meter, start: float | None, since: float | None = None
) -> list[tuple[float, float]]:
    """Given history, return the (time, used fraction) points of the meter's current window.

    The current window is the newest segment, plus, for a billing period, the segments
    before it in the same period (the allowance changed). A billing period starts at
    zero, so its start is a point too: the pace since the start is known from the first
    reading on. With ``since``, points before it are left out but for the last one.
    """
    if not history:
        return []
    segments = [history[-1]]
    if window_kind(meter.id) == "period":
        begin = history[-1].get("start")
        for segment in reversed(history[:-1]):
            if not _near(segment.get("start"), begin):
                break
            segments.append(segment)
    result = []
    for segment in reversed(segments):
        scale = float(segment.get("scale") or 1.0)
        samples = segment["samples"]
        first = 0
        if since is not None:
            first = max(0, bisect.bisect_left(samples, since, key=_time) - 1)
        result.extend((float(t), float(v) / scale) for t, v in samples[first:])
    if len(segments) > 1:
        result.sort()
    if window_kind(meter.id) == "period" and start is not None and (not result or result[0][0] > start):
        result.insert(0, (start, 0.0))
    return result


def _near(a: float | None, b: float | None) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 15 * 60


# --- rates and the rule ------------------------------------------------------------------


def used_at(pts: Sequence[tuple[float, float]], when: float) -> float:
    """Given time-ordered points, return the used fraction at ``when`` (linear in between)."""
    if when <= pts[0][0]:
        return pts[0][1]
    if when >= pts[-1][0]:
        return pts[-1][1]
    i = bisect.bisect_right(pts, (when, math.inf))
    (t0, u0), (t1, u1) = pts[i - 1], pts[i]
    return u0 if t1 == t0 else u0 + (u1 - u0) * (when - t0) / (t1 - t0)


def burn(pts: Sequence[tuple[float, float]], now: float, seconds: float) -> float | None:
    """Given points ending at ``now``, return the pace over the last ``seconds``, or None.

    None when history does not reach back that far, or when the readings around the
    lookback's start are further apart than :data:`MAX_GAP` lookbacks: a pace spread
    evenly over a gap in the history is a guess, not a measurement. Use is cumulative: a
    dip (a correction by the server) counts as no use, not as negative use.
    """
    if len(pts) < 2 or pts[0][0] > now - seconds * (1 - COVERAGE_SLACK):
        return None
    since = max(now - seconds, pts[0][0])
    if now - since <= 0:
        return None
    if _in_gap(pts, since, seconds):
        return None
    if now < pts[-1][0]:  # a pace some time ago (a rule's hold): the readings around then
        if _in_gap(pts, now, seconds):
            return None
        return max(0.0, used_at(pts, now) - used_at(pts, since)) / (now - since)
    return max(0.0, pts[-1][1] - used_at(pts, since)) / (now - since)


def firing_rate(
    pts: Sequence[tuple[float, float]], when: float, seconds: float, start: float | None, earliest: float
) -> float | None:
    """Given points, return the pace a rule sees over the ``seconds`` before ``when``, or None.

    That is :func:`burn`, but for a lookback longer than the time since the window began:
    from ``earliest`` on (the window kind's minimum elapsed share), such a lookback is
    measured since the window began, which it did empty. A window that runs out in its
    first days (a 5-hour window in its first hour) is warned before its lookbacks fill.
    """
    rate = burn(pts, when, seconds)
    if rate is None and start is not None and max(earliest, start) < when < start + seconds:
        rate = max(0.0, used_at(pts, when)) / (when - start)
    return rate


def swing(pts: Sequence[tuple[float, float]], now: float, start: float | None, block: float) -> float | None:
    """Given points ending at ``now``, return how much use per ``block`` swings, or None.

    That is the coefficient of variation (standard deviation over mean) of the use in
    each whole block back from ``now`` over the window so far (the newest
    :data:`MAX_NOISE_BLOCKS` at most), leaving out a block whose start or end falls in
    a gap between readings longer than :data:`MAX_GAP` blocks (use spread evenly over
    a gap is a guess, not a swing); None with fewer than :data:`MIN_NOISE_BLOCKS`
    blocks left, or no use. Use that swings a lot from day to day makes a day's pace a
    weak guide to the days still to come.
    """
    if not pts or block <= 0:
        return None
    first = pts[0][0] if start is None else max(start, pts[0][0])
    count = min(int((now - first) // block), MAX_NOISE_BLOCKS)
    uses = []
    for i in range(count):
        late, early = now - i * block, now - (i + 1) * block
        if _in_gap(pts, late, block) or _in_gap(pts, early, block):
            continue
        uses.append(max(0.0, used_at(pts, late) - used_at(pts, early)))
    if len(uses) < MIN_NOISE_BLOCKS:
        return None
    mean = math.fsum(uses) / len(uses)
    if mean <= 0:
        return None
    # Over n, not n - 1: a little low on few blocks; the margins were chosen with it so.
    return math.sqrt(math.fsum((x - mean) ** 2 for x in uses) / len(uses)) / mean


def _in_gap(pts: Sequence[tuple[float, float]], when: float, span: float) -> bool:
    """True when the readings around ``when`` are more than :data:`MAX_GAP` spans apart
    (a lookback's, or a block's)."""
    i = bisect.bisect_right(pts, (when, math.inf))
    return 0 < i < len(pts) and pts[i][0] - pts[i - 1][0] > MAX_GAP * span


@dataclass(frozen=True)
class Noise:
    """A noise margin at work: ``margin`` standard deviations of the use still to come,
    which swings by ``swing`` (coefficient of variation) per ``block`` seconds."""

    margin: float
    swing: float
    block: float

    def factor(self, horizon: float) -> float:
        """Given how long (s) the pace must last, return what the threshold is multiplied by.

        The use still to come is the sum of ``horizon / block`` blocks' use; if each
        swings by ``swing``, and they are independent, the sum swings by ``swing``
        over the square root of their number.
        """
        return 1 + self.margin * self.swing / math.sqrt(max(1.0, horizon / self.block))


def _fires_at(
    pts: Sequence[tuple[float, float]],
    when: float,
    end: float,
    rule: Rule,
    start: float | None,
    earliest: float,
    noise: Noise | None = None,
) -> bool:
    """Given points, return True when ``rule``'s lookbacks ending at ``when`` both burn enough."""
    used = used_at(pts, when)
    if used >= 1 or when >= end:
        return False
    threshold = rule.burn_rate * (1 - used) / (end - when)
    horizon = end - when
    if rule.within_seconds:
        threshold = max(threshold, (1 - used) / rule.within_seconds)
        horizon = min(horizon, rule.within_seconds)
    if noise is not None:
        threshold *= noise.factor(horizon)
    long = firing_rate(pts, when, rule.long_seconds, start, earliest)
    short = firing_rate(pts, when, rule.short_seconds, start, earliest)
    return long is not None and short is not None and min(long, short) >= threshold - 1e-15


def assess(
    pts: Sequence[tuple[float, float]],
    now: float,
    start: float | None,
    end: float | None,
    rules: Sequence[Rule],
    settings: ForecastSettings,
    kind: str = "period",
) -> Assessment:
    """Given a meter's points (the last one is now), its window and rules, return the forecast.

    A rule fires only before the meter is used up, once the window kind's minimum share
    of the window has passed, when its long and short lookbacks both burn at least its
    factor (raised by the kind's noise margin) and, for a rule with a hold, did so half
    the hold and the whole hold ago too. ``rules`` are tried slowest first. For the
    noise margin, ``pts`` must hold the whole window so far.
    """
    used = pts[-1][1] if pts else 0.0
    if end is None or end <= now or not pts:
        return Assessment(used=used, window_end=end, now=now)
    left = end - now
    lookbacks = []
    rates: dict[float, float | None] = {}
    for rule in rules:
        for seconds in (rule.long_seconds, rule.short_seconds):
            if seconds not in rates:
                rates[seconds] = burn(pts, now, seconds)
                if rates[seconds] is not None:
                    lookbacks.append(Lookback(seconds, rates[seconds]))
    covered = [rule for rule in rules if rates[rule.long_seconds] is not None]
    if covered:
        pace_seconds = covered[0].long_seconds
        pace = rates[pace_seconds]
    else:
        pace_seconds = now - pts[0][0]
        pace = burn(pts, now, pace_seconds) if pace_seconds > 0 else None
    projected = None if pace is None else used + pace * left
    exhaustion = None
    if pace and used < 1:
        exhaustion = now + (1 - used) / pace
    elif used >= 1:
        exhaustion = now
    earliest = -math.inf if start is None else start + settings.min_elapsed_for(kind) * (end - start)
    noise = None
    margin = settings.noise_margin_for(kind)
    # Measured once, now: a hold's earlier checks ask the margin of today's knowledge.
    spread = swing(pts, now, start, NOISE_BLOCK[kind]) if margin else None
    if spread:
        noise = Noise(margin, spread, NOISE_BLOCK[kind])
    firing = None
    for rule in rules:
        if not _fires_at(pts, now, end, rule, start, earliest, noise):
            continue
        # A burst looks like a change of pace while it lasts; a rule with a hold fires
        # only on a pace that also ran out the window half the hold and the whole hold
        # ago: a burst shorter than that has ended by then.
        hold = rule.hold_seconds
        if hold and not all(
            _fires_at(pts, now - h, end, rule, start, earliest, noise) for h in (hold / 2, hold)
        ):
            continue
        firing = rule
        break
    safe = bool(covered) and all(
        used + rates[rule.long_seconds] * left < settings.rearm_below for rule in covered
    )
    return Assessment(
        used=used,
        window_end=end,
        lookbacks=tuple(sorted(lookbacks, key=lambda lb: lb.seconds)),
        pace=pace,
        pace_seconds=pace_seconds,
        projected_at_reset=projected,
        exhaustion_at=exhaustion,
        firing=firing,
        rate=firing_rate(pts, now, firing.long_seconds, start, earliest) if firing else None,
        safe=safe,
        now=now,
    )


# --- episodes ------------------------------------------------------------------------------


def next_episode(
    episode: Episode | None, assessment: Assessment, now: float, rearm_seconds: float
) -> Episode | None:
    """Given the meter's risk episode (None outside one) and the assessment, return the next.

    An episode starts when a rule fires. It ends only after readings have shown a safe
    pace for ``rearm_seconds``: this function sees only readings that were fetched and
    parsed (a failed run never gets here), and a gap of more than a quarter of that time
    between two safe readings starts the wait over, so time without readings never counts.
    """
    if episode is None:
        return Episode(round(now)) if assessment.firing is not None else None
    if not assessment.safe or assessment.firing is not None:
        return Episode(episode.since)
    since, last = episode.safe_since, episode.safe_last
    if since is None or last is None or now - last > rearm_seconds / 4:
        since = round(now)
    if now - since >= rearm_seconds:
        return None
    return Episode(episode.since, since, round(now))
