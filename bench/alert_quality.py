"""Alert-quality benchmark: the job's forecast against the naive linear projection, for
every window kind the job forecasts.

Generates seeded synthetic usage windows of each kind (the per-period token allowance,
and the monthly, weekly and 5-hour limit windows), samples each at the job's cadence
(hourly for the allowance and the monthly and weekly windows, every 15 minutes for the
5-hour window; each run up to 2 minutes late, as the shipped timers' random delay makes
it), and feeds every sample, as Factory's answer, through
``alerter.decide.decide`` (the one decision ``run`` makes) in a loop that keeps the state
in memory and counts every alert as delivered, as ``backtest`` does. It measures the
forecast alerts alone:

- recall: share of the windows that run out, and could be warned in time (below), that
  were warned at least the kind's lead ahead (24 h monthly, 12 h weekly, 30 min 5-hour);
- median lead: from the first forecast alert to running out, over those windows (0 when
  none came before it ran out);
- false alarms: share of the windows that end below the limit with any forecast alert;
- alerts per window: forecast alerts, mean and maximum.

**Shapes.** steady; rhythm (working hours on weekdays; in a 5-hour window, an hour of
work and half an hour of pause in turn); a burst that stops by itself at the start, in
the middle or near the end (4 h to 3 days in a month, 2 h to a day in a week, 10 min to
an hour in 5 hours, using 15-40 % of the window's total); a break (2-6 days, 1-3 days,
45 min-2 h); a ramp; a late surge (3-6 times the pace from 70-90 % of the window); a step
up (2-4 times from 30-65 %); quiet windows (2-30 %). Each window draws one of three noise
strengths. About half of the non-quiet windows run out (a quarter of those at 105-115 %
of the limit, the rest 115-200 %); the others end at 30-95 %, a quarter of them near the
limit (85-95 %). Totals between 95 and 105 % are not generated: whether those run out is
decided by the noise of the last hours.

**Windows that cannot be warned in time.** The generator knows when each window's pace
last rose (a burst, a surge or a step up began, a break ended; the window's start when
nothing did). A window that runs out less than a day (monthly, period), half a day
(weekly) or an hour (5-hour) after that is counted apart, as "too sudden", for both
methods alike: left out of recall and median lead, and reported as how many there were
and how many each method warned at all before they ran out.

**Training and held-out parts.** The training part (seed 1, the shapes of
``TRAINING_SHAPES``) is what the forecast's defaults were chosen on. The held-out part
(seed 1001, the same shapes with other draws plus the shapes of ``HELD_OUT_SHAPES``,
which training never saw) was used to choose nothing; it is what the README reports.

The baseline, computed on the same samples in the same run, is what most usage monitors
do: projected use at reset = used / elapsed x window length, one alert each time that
projection crosses 100 % (before the window runs out).

    python bench/alert_quality.py [--part training|held-out|both] [--kinds ...]
                                  [--per-shape N] [--by-shape] [--by-total] [--by-noise]
                                  [--config PATH]

prints markdown tables and exits 1 when the forecast misses a target on the part(s) run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alerter.config import Config, build_config, load_config  # noqa: E402
from alerter.decide import decide  # noqa: E402
from alerter.meters import parse_limits, parse_usage  # noqa: E402
from alerter.state import State, record_delivery  # noqa: E402

MINUTE = 60
HOUR = 3600
DAY = 24 * HOUR
ALLOWANCE = 20_000_000  # a Pro plan


@dataclass(frozen=True)
class Kind:
    """One window kind: how long, how often sampled, how far ahead a warning must come."""

    name: str
    length: float  # seconds (a billing period is 28, 30 or 31 days; see generate)
    cadence: float  # seconds between runs
    tick: float  # seconds of one step of the generated use
    lead: float  # seconds: the warning must come at least this long before running out
    sudden: float  # seconds: running out sooner than this after the pace rose is too sudden
    recall: float  # targets
    median_lead: float | None  # seconds, None: no target
    false_alarms: float
    burst: tuple[float, float]  # burst length range, seconds
    pause: tuple[float, float]  # break length range, seconds


MONTH_KIND = Kind(
    "period",
    30 * DAY,
    HOUR,
    HOUR,
    DAY,
    DAY,
    0.95,
    72 * HOUR,
    0.05,
    (4 * HOUR, 3 * DAY),
    (2 * DAY, 6 * DAY),
)

KINDS = {
    "period": MONTH_KIND,
    "monthly": dataclasses.replace(MONTH_KIND, name="monthly"),  # the same month, as a limit window
    "weekly": Kind(
        "weekly", 7 * DAY, HOUR, HOUR, 12 * HOUR, 12 * HOUR, 0.95, None, 0.05, (2 * HOUR, DAY), (DAY, 3 * DAY)
    ),
    "5h": Kind(
        "5h",
        5 * HOUR,
        15 * MINUTE,
        5 * MINUTE,
        30 * MINUTE,
        HOUR,
        0.90,
        None,
        0.10,
        (10 * MINUTE, HOUR),
        (45 * MINUTE, 2 * HOUR),
    ),
}
MAX_ALERTS = 2

TRAINING_SHAPES = (
    "steady",
    "rhythm",
    "burst-start",
    "burst-middle",
    "burst-end",
    "break",
    "ramp",
    "late-surge",
    "step-up",
    "quiet",
)
HELD_OUT_SHAPES = ("two-bursts", "step-down")  # never generated for training
PARTS = {
    "training": (1, TRAINING_SHAPES),
    "held-out": (1001, TRAINING_SHAPES + HELD_OUT_SHAPES),
}
TIMER_DELAY = 120  # seconds: each run starts up to this late (the timers' RandomizedDelaySec)
NOISE = (0.2, 0.6, 1.2)  # sigma of the per-step lognormal noise: light, medium, heavy
NOISE_NAMES = dict(zip(NOISE, ("light", "medium", "heavy"), strict=True))


@dataclass(frozen=True)
class Window:
    """One synthetic window: its kind and shape, the samples, when it ran out."""

    kind: str
    shape: str
    start: float  # unix seconds
    end: float
    times: tuple[float, ...]  # unix seconds of each run
    used: tuple[float, ...]  # used fraction Factory reports at each run
    exhausted_at: float | None  # unix seconds, None when it lasts to the reset
    changed_at: float  # when the pace last changed before it ran out (the start if never)
    total: float  # used fraction at the reset, had nothing stopped it
    noise: float = 0.0  # sigma of its per-step noise (one of NOISE)

    def answer(self, i: int) -> dict:
        """Return the body Factory would answer at the i-th run."""
        used, at = self.used[i], self.times[i]
        if self.kind == "period":
            tokens = int(round(used * ALLOWANCE))
            bucket = {"userTokens": tokens, "orgTotalTokensUsed": tokens, "orgOverageUsed": 0}
            bucket |= {"basicAllowance": ALLOWANCE, "totalAllowance": ALLOWANCE, "orgOverageLimit": 0}
            empty = dict.fromkeys(bucket, 0)
            return {
                "startDate": int(self.start * 1000),
                "endDate": int(self.end * 1000),
                "standard": bucket | {"usedRatio": tokens / ALLOWANCE},
                "premium": empty | {"usedRatio": 0},
            }
        del at
        key = {"5h": "fiveHour", "weekly": "weekly", "monthly": "monthly"}[self.kind]
        end = datetime.fromtimestamp(self.end, timezone.utc).isoformat().replace("+00:00", "Z")
        return {
            "limits": {"standard": {key: {"usedPercent": round(min(used, 1.0) * 100, 2), "windowEnd": end}}}
        }

    def reading(self, i: int):
        """Return the Reading the job makes of the i-th answer (through the job's parser)."""
        if self.kind == "period":
            return parse_usage({"usage": self.answer(i)})
        return parse_limits(self.answer(i), self.times[i])

    @property
    def too_sudden(self) -> bool:
        """True when it runs out less than a day (monthly), half a day (weekly) or an hour
        (5-hour) after its pace last rose."""
        return self.exhausted_at is not None and self.exhausted_at - self.changed_at < KINDS[self.kind].sudden


# --- the generator ---------------------------------------------------------------------------


def generate(kind_name: str, shape: str, rng: random.Random) -> Window:
    """Return one window of ``kind_name`` and ``shape``, its totals and noise drawn from ``rng``."""
    kind = KINDS[kind_name]
    length = rng.choice((28, 30, 31)) * DAY if kind_name == "period" else kind.length
    n = int(round(length / kind.tick))
    start = 1_735_689_600 + rng.randrange(0, 365) * DAY + rng.randrange(0, 24 * 12) * 5 * MINUTE  # 2025
    if kind_name == "period":
        start -= start % HOUR  # billing periods start on the hour
    runs_out = shape != "quiet" and rng.random() < 0.5
    near = rng.random() < 0.25
    if shape == "quiet":
        total = rng.uniform(0.02, 0.3)
    elif runs_out:
        total = rng.uniform(1.05, 1.15) if near else rng.uniform(1.15, 2.0)
    else:
        total = rng.uniform(0.85, 0.95) if near else rng.uniform(0.3, 0.85)
    sigma = rng.choice(NOISE)
    base = [_rhythm(kind_name, start + i * kind.tick, i, rng) if shape == "rhythm" else 1.0 for i in range(n)]
    # Day-to-day (or, in a 5-hour window, quarter-hour to quarter-hour) swings, then per step.
    block = max(1, int((DAY if kind.length > DAY else 15 * MINUTE) / kind.tick))
    swings = [rng.lognormvariate(0, sigma / 2) for _ in range(n // block + 1)]
    weights = [w * swings[i // block] * rng.lognormvariate(0, sigma) for i, w in enumerate(base)]
    events: list[int] = [0]  # steps where the pace rose (a burst's end or a step down is no rise)
    extra: list[tuple[int, int, float]] = []  # (from, to, share of the total) added as bursts

    def burst_at(where: float) -> None:
        steps = max(1, int(rng.uniform(*kind.burst) / kind.tick))
        first = min(max(0, int(where * n) - steps // 2), n - steps)
        extra.append((first, first + steps, rng.uniform(0.15, 0.4)))
        events.append(first)

    if shape == "burst-start":
        steps = max(1, int(rng.uniform(*kind.burst) / kind.tick))
        extra.append((0, steps, rng.uniform(0.15, 0.4)))
    elif shape == "burst-middle":
        burst_at(rng.uniform(0.3, 0.7))
    elif shape == "burst-end":
        burst_at(rng.uniform(0.75, 0.95))
    elif shape == "two-bursts":
        burst_at(rng.uniform(0.1, 0.4))
        burst_at(rng.uniform(0.5, 0.85))
    elif shape == "break":
        steps = int(rng.uniform(*kind.pause) / kind.tick)
        first = int(rng.uniform(0.15, 0.8) * n)
        for i in range(first, min(n, first + steps)):
            weights[i] = 0.0
        events.append(min(n - 1, first + steps))
    elif shape == "ramp":
        weights = [w * (0.1 + 2 * i / n) for i, w in enumerate(weights)]
    elif shape in ("late-surge", "step-up", "step-down"):
        at = int(rng.uniform(0.7, 0.9) * n) if shape == "late-surge" else int(rng.uniform(0.3, 0.65) * n)
        factor = rng.uniform(3, 6) if shape == "late-surge" else rng.uniform(2, 4)
        if shape == "step-down":
            factor = 1 / factor
        weights = [w * (factor if i >= at else 1.0) for i, w in enumerate(weights)]
        if factor > 1:
            events.append(at)
    burst_share = sum(share for _, _, share in extra)
    cumulative = _cumulative(weights, total * (1 - burst_share))
    for first, last, share in extra:
        part = _cumulative([rng.lognormvariate(0, 0.3) for _ in range(last - first)], total * share)
        cumulative = [c + part[min(max(0, i - first), last - first)] for i, c in enumerate(cumulative)]
    exhausted = _exhausted(cumulative, start, kind.tick)
    stop = n if exhausted is None else (exhausted - start) / kind.tick
    changed = max([e for e in events if e <= stop], default=0)
    times, used = [], []
    first = start + rng.uniform(10, kind.cadence - 10)  # the timer fires at some second of each step
    for run in range(int(length // kind.cadence) + 1):
        t = first + run * kind.cadence + rng.uniform(0, TIMER_DELAY)
        if t >= start + length:
            break
        frac = (t - start) / kind.tick
        i = min(int(frac), n - 1)
        used.append(cumulative[i] + (cumulative[i + 1] - cumulative[i]) * (frac - i))
        times.append(round(t, 3))
    return Window(
        kind_name,
        shape,
        start,
        start + length,
        tuple(times),
        tuple(used),
        exhausted,
        start + changed * kind.tick,
        round(total, 6),
        sigma,
    )


def _rhythm(kind: str, t: float, i: int, rng: random.Random) -> float:
    """The working rhythm: weekdays and working hours; in a 5-hour window, sessions and pauses."""
    if kind == "5h":
        return 1.0 if (i // 6) % 3 else 0.1  # an hour of work, half an hour of pause, in turn
    weekday = (int(t // DAY) + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    hour = int(t % DAY // HOUR)
    return 1.0 if weekday < 5 and 9 <= hour < 18 else 0.05


def _cumulative(weights: Sequence[float], total: float) -> list[float]:
    scale = total / (sum(weights) or 1.0)
    result, acc = [0.0], 0.0
    for w in weights:
        acc += w * scale
        result.append(acc)
    return result


def _exhausted(cumulative: Sequence[float], start: float, tick: float) -> float | None:
    for i in range(1, len(cumulative)):
        if cumulative[i] >= 1:
            before = cumulative[i - 1]
            return start + (i - 1 + (1 - before) / (cumulative[i] - before)) * tick
    return None


def windows(kind: str, part: str, per_shape: int) -> list[Window]:
    """Return ``per_shape`` windows of each of the part's shapes, each from its own seed."""
    seed, shapes = PARTS[part]
    result = []
    for shape in shapes:
        for i in range(per_shape):
            result.append(generate(kind, shape, random.Random(f"{seed}/{kind}/{shape}/{i}")))
    return result


# --- the two methods ---------------------------------------------------------------------------


def forecast_alerts(window: Window, config: Config) -> list[float]:
    """Return the times (unix s) of the forecast alerts the job gives for the window.

    The loop of ``alerter.backtest.replay`` without its trace format: each run's reading
    goes through ``decide`` and every alert it sends counts as delivered.
    """
    state, result = State(), []
    for i, now in enumerate(window.times):
        decision = decide(state, window.reading(i), config, now)
        state = decision.state
        for alert in decision.send:
            if alert.kind == "forecast":
                result.append(now)
            for channel in alert.channels:
                state = record_delivery(state, alert.key, channel, now)
    return result


def baseline_alerts(window: Window) -> list[float]:
    """Return the times of the naive linear projection's alerts (each crossing of 100 %)."""
    length = window.end - window.start
    alerts, above = [], False
    for t, used in zip(window.times, window.used, strict=True):
        if used >= 1:
            break
        projected = used / (t - window.start) * length
        if projected > 1 and not above:
            alerts.append(t)
        above = projected > 1
    return alerts


# --- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """The measures of one method over a set of windows of one kind."""

    recall: float
    median_lead: float  # seconds
    false_alarms: float
    mean_alerts: float
    max_alerts: int
    runs_out: int  # that could be warned in time
    lasts: int
    sudden: int  # too sudden to be warned in time
    sudden_warned: int  # of those, warned at all before running out


def score(picked: Sequence[Window], alerts: Sequence[Sequence[float]]) -> Score:
    """Given windows of one kind and each one's alert times, return the measures."""
    recalled, leads, false, counts, sudden, sudden_warned = 0, [], 0, [], 0, 0
    for window, times in zip(picked, alerts, strict=True):
        counts.append(len(times))
        if window.exhausted_at is None:
            false += bool(times)
            continue
        before = [t for t in times if t < window.exhausted_at]
        if window.too_sudden:
            sudden += 1
            sudden_warned += bool(before)
            continue
        lead = window.exhausted_at - before[0] if before else 0.0
        leads.append(lead)
        recalled += lead >= KINDS[window.kind].lead
    lasting = sum(w.exhausted_at is None for w in picked)
    return Score(
        recall=recalled / len(leads) if leads else math.nan,
        median_lead=statistics.median(leads) if leads else math.nan,
        false_alarms=false / lasting if lasting else math.nan,
        mean_alerts=statistics.fmean(counts) if counts else 0.0,
        max_alerts=max(counts, default=0),
        runs_out=len(leads),
        lasts=lasting,
        sudden=sudden,
        sudden_warned=sudden_warned,
    )


def misses(kind: Kind, s: Score, baseline: Score) -> list[str]:
    """Return the targets the forecast misses on one kind (empty when it meets them all)."""
    problems = []
    if not s.recall >= kind.recall:
        problems.append(f"recall {s.recall:.1%} < {kind.recall:.0%}")
    if kind.median_lead is not None and not s.median_lead >= kind.median_lead:
        problems.append(f"median lead {_duration(s.median_lead)} < {_duration(kind.median_lead)}")
    if not s.false_alarms <= kind.false_alarms:
        problems.append(f"false alarms {s.false_alarms:.1%} > {kind.false_alarms:.0%}")
    if s.max_alerts > MAX_ALERTS:
        problems.append(f"up to {s.max_alerts} forecast alerts in a window > {MAX_ALERTS}")
    if baseline.false_alarms > 0 and not s.false_alarms < baseline.false_alarms:
        problems.append("no fewer false alarms than the naive projection")
    if s.recall < baseline.recall:
        problems.append(f"lower recall than the naive projection ({baseline.recall:.1%})")
    return [f"{kind.name}: {p}" for p in problems]


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds / MINUTE:.0f} min" if seconds < 5 * HOUR else f"{seconds / HOUR:.0f} h"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1%}"


def summary_table(rows: Sequence[tuple[str, str, Score, Score]]) -> str:
    """Return per kind (and part) the forecast next to the naive projection, as markdown."""
    lines = [
        "| window | part | runs out / lasts / too sudden | recall (lead) | median lead | false alarms "
        "| alerts per window (mean / max) | too sudden, warned at all | naive: recall / median lead / "
        "false alarms / max alerts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind_name, part, s, b in rows:
        kind = KINDS[kind_name]
        lines.append(
            f"| {kind_name} | {part} | {s.runs_out} / {s.lasts} / {s.sudden} | {_pct(s.recall)} "
            f"(>= {_duration(kind.lead)}) | {_duration(s.median_lead)} | {_pct(s.false_alarms)} | "
            f"{s.mean_alerts:.2f} / {s.max_alerts} | {s.sudden_warned} / {s.sudden} vs naive "
            f"{b.sudden_warned} | {_pct(b.recall)} / {_duration(b.median_lead)} / "
            f"{_pct(b.false_alarms)} / {b.max_alerts} |"
        )
    return "\n".join(lines)


def shape_table(kind_name: str, part: str, picked: Sequence[Window], ours, naive) -> str:
    """Return one kind's measures per shape, forecast / naive, as markdown."""
    shapes = dict.fromkeys(w.shape for w in picked)
    groups = [(shape, [i for i, w in enumerate(picked) if w.shape == shape]) for shape in shapes]
    return _grouped(f"{kind_name}, {part}: forecast / naive per shape", "shape", groups, picked, ours, naive)


# Bands of a window's total (its use at the reset, had nothing stopped it), as generated.
TOTAL_BANDS = (
    ("ends below 85 %", 0.0, 0.85),
    ("ends at 85-95 %", 0.85, 1.0),
    ("runs out at 105-115 %", 1.0, 1.15),
    ("runs out above 115 %", 1.15, math.inf),
)


def total_table(kind_name: str, part: str, picked: Sequence[Window], ours, naive) -> str:
    """Return one kind's measures by how near the limit its windows end, forecast / naive."""
    groups = [
        (name, [i for i, w in enumerate(picked) if low <= w.total < high]) for name, low, high in TOTAL_BANDS
    ]
    title = f"{kind_name}, {part}: forecast / naive by total at the reset"
    return _grouped(title, "total", [g for g in groups if g[1]], picked, ours, naive)


def noise_table(kind_name: str, part: str, picked: Sequence[Window], ours, naive) -> str:
    """Return one kind's measures by the strength of its windows' noise, forecast / naive."""
    groups = [
        (name, [i for i, w in enumerate(picked) if w.noise == sigma]) for sigma, name in NOISE_NAMES.items()
    ]
    title = f"{kind_name}, {part}: forecast / naive by noise (sigma 0.2 / 0.6 / 1.2 per step)"
    return _grouped(title, "noise", [g for g in groups if g[1]], picked, ours, naive)


def _grouped(title: str, label: str, groups, picked: Sequence[Window], ours, naive) -> str:
    """Return the measures of each group (name, window indexes), forecast / naive, as markdown."""
    lines = [
        title,
        "",
        f"| {label} | runs out / lasts / too sudden | recall | median lead | false alarms | max alerts |",
        "|---|---|---|---|---|---|",
    ]
    for name, idx in groups:
        ws = [picked[i] for i in idx]
        s, b = score(ws, [ours[i] for i in idx]), score(ws, [naive[i] for i in idx])
        lines.append(
            f"| {name} | {s.runs_out} / {s.lasts} / {s.sudden} | {_pct(s.recall)} / {_pct(b.recall)} | "
            f"{_duration(s.median_lead)} / {_duration(b.median_lead)} | "
            f"{_pct(s.false_alarms)} / {_pct(b.false_alarms)} | {s.max_alerts} / {b.max_alerts} |"
        )
    return "\n".join(lines)


# --- running it ------------------------------------------------------------------------------

_CONFIG: Config | None = None


def _init(config: Config) -> None:
    global _CONFIG
    _CONFIG = config


def _job(window: Window) -> list[float]:
    assert _CONFIG is not None
    return forecast_alerts(window, _CONFIG)


def run_all(all_windows: Sequence[Window], config: Config, jobs: int) -> list[list[float]]:
    """Return each window's forecast alert times, replayed in ``jobs`` processes."""
    if jobs <= 1:
        return [forecast_alerts(w, config) for w in all_windows]
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(config,)) as pool:
        return list(pool.map(_job, all_windows, chunksize=4))


def measure(
    kinds: Sequence[str], parts: Sequence[str], per_shape: int, config: Config, jobs: int
) -> list[tuple[str, str, list[Window], list[list[float]], list[list[float]]]]:
    """Return, per kind and part, the windows, the forecast's alerts and the naive ones."""
    plan = [(kind, part, windows(kind, part, per_shape)) for kind in kinds for part in parts]
    flat = [w for _, _, ws in plan for w in ws]
    ours = run_all(flat, config, jobs)
    result, i = [], 0
    for kind, part, ws in plan:
        result.append((kind, part, ws, ours[i : i + len(ws)], [baseline_alerts(w) for w in ws]))
        i += len(ws)
    return result


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Run the benchmark; return 1 when the forecast misses a target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("training", "held-out", "both"), default="both")
    parser.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    parser.add_argument("--per-shape", type=int, help="windows per shape and kind (default 48)")
    parser.add_argument("--by-shape", action="store_true", help="also show each kind per shape")
    parser.add_argument(
        "--by-total", action="store_true", help="also show each kind by how near the limit its windows end"
    )
    parser.add_argument(
        "--by-noise", action="store_true", help="also show each kind by the strength of its noise"
    )
    parser.add_argument("--config", metavar="PATH", help="a config file whose forecast settings to measure")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    parser.add_argument("--json", action="store_true", help="print the measures as JSON instead")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 windows per shape unless --per-shape; judge no target (exit 0)",
    )
    args = parser.parse_args(argv)
    if args.per_shape is None:
        args.per_shape = 2 if args.smoke else 48
    env = {"HOME": "/nonexistent"}
    config = load_config(args.config, env) if args.config else build_config({}, None, env)
    parts = ("training", "held-out") if args.part == "both" else (args.part,)
    measured = measure(args.kinds, parts, args.per_shape, config, args.jobs)
    rows, problems, shapes, data = [], [], [], []
    for kind, part, ws, ours, naive in measured:
        s, b = score(ws, ours), score(ws, naive)
        rows.append((kind, part, s, b))
        data.append({"kind": kind, "part": part, "forecast": s.__dict__, "naive": b.__dict__})
        if part == parts[-1]:
            problems += misses(KINDS[kind], s, b)
        if args.by_shape:
            shapes.append(shape_table(kind, part, ws, ours, naive))
        if args.by_total:
            shapes.append(total_table(kind, part, ws, ours, naive))
        if args.by_noise:
            shapes.append(noise_table(kind, part, ws, ours, naive))
    if args.json:
        out(json.dumps(data, indent=1))
    else:
        out(
            f"{args.per_shape} windows per shape and kind; parts: {', '.join(parts)} "
            f"(targets judged on {parts[-1]})\n"
        )
        out(summary_table(rows))
        for text in shapes:
            out("\n" + text)
        out("")
        if args.smoke:
            out("smoke run: too few windows to judge the targets")
        else:
            out("targets met" if not problems else "targets missed: " + "; ".join(problems))
    return 1 if problems and not args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
