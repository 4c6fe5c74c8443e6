"""Alert-quality benchmark: the job's forecast against the naive linear projection.

Generates seeded synthetic billing periods sampled hourly, replays each through
``backtest`` (the same evaluation as ``run``), and measures the forecast alerts:

- recall: share of exhausting periods warned at least 24 h before they run out;
- median lead: hours from the first forecast alert to exhaustion (0 when none came);
- false alarms: share of periods that do not run out with any forecast alert;
- alerts per period: forecast alerts, mean and maximum.

The baseline, computed on the same traces in the same run, is what most usage monitors
do: projected use at reset = used / elapsed x period length, alert when it exceeds
100 % (one alert each time the projection crosses 100 %).

    python bench/alert_quality.py [--seed N] [--periods N] [--config PATH] [--by-pattern]

prints a markdown table and exits 1 when a target is missed.

Periods are drawn from seven patterns (steady, weekday/weekend, working hours, heavy
first day, ramp-up, step change, quiet), each with daily and hourly noise and, now and
then, a busy morning. A period either ends at 115-200 % of its allowance (it runs out) or
at 3-85 % (it does not). Periods ending within 85-115 % are left out on purpose: whether
they run out is decided by the noise of the last days, which no forecast can call a day
ahead; they are generated only with ``--borderline`` and then reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alerter.backtest import Observation, replay  # noqa: E402
from alerter.config import build_config, load_config  # noqa: E402

HOUR = 3600
DAY = 24 * HOUR
ALLOWANCE = 20_000_000  # a Pro plan
PATTERNS = ("steady", "weekly", "working-hours", "heavy-first-day", "ramp-up", "step-change", "quiet")
LEAD_NEEDED_HOURS = 24
TARGETS = {"recall": 0.95, "median_lead": 72.0, "false_alarms": 0.05, "max_alerts": 2}


@dataclass(frozen=True)
class Period:
    """One synthetic billing period: its pattern, hourly observations and when it ran out."""

    pattern: str
    start: float  # unix seconds
    end: float
    times: tuple[float, ...]  # unix seconds of each observation
    used: tuple[float, ...]  # used fraction at each observation
    exhausted_at: float | None  # unix seconds, None when it lasts to the reset

    def observations(self) -> list[Observation]:
        """Return the period as trace observations (subscription/usage answers)."""
        pairs = zip(self.times, self.used, strict=True)
        return [Observation(int(t * 1000), "usage", usage_object(self, u)) for t, u in pairs]


def usage_object(period: Period, used: float) -> dict:
    """Return the ``usage`` object subscription/usage would answer for this use."""
    tokens = int(round(used * ALLOWANCE))
    return {
        "startDate": int(period.start * 1000),
        "endDate": int(period.end * 1000),
        "standard": {
            "userTokens": tokens,
            "orgTotalTokensUsed": tokens,
            "orgOverageUsed": 0,
            "basicAllowance": ALLOWANCE,
            "totalAllowance": ALLOWANCE,
            "orgOverageLimit": 0,
            "usedRatio": tokens / ALLOWANCE,
        },
        "premium": {
            "userTokens": 0,
            "orgTotalTokensUsed": 0,
            "orgOverageUsed": 0,
            "basicAllowance": 0,
            "totalAllowance": 0,
            "orgOverageLimit": 0,
            "usedRatio": 0,
        },
    }


# --- the generator -----------------------------------------------------------------------------


def generate(rng: random.Random, pattern: str, runs_out: bool | None) -> Period:
    """Return one period of ``pattern``; ``runs_out`` None means a borderline total."""
    days = rng.choice((28, 30, 31))
    hours = days * 24
    start = 1_735_689_600 + rng.randrange(0, 365) * DAY + rng.randrange(0, 24) * HOUR  # during 2025
    if pattern == "quiet":
        total = rng.uniform(0.03, 0.3)
    elif runs_out is None:
        total = rng.uniform(0.85, 1.15)
    elif runs_out:
        total = rng.uniform(1.15, 2.0)
    else:
        total = rng.uniform(0.3, 0.85)
    weights = [_shape(pattern, h, hours, start) for h in range(hours)]
    daily = [rng.lognormvariate(0, 0.3) for _ in range(days + 1)]
    weights = [w * daily[h // 24] * rng.lognormvariate(0, 0.5) for h, w in enumerate(weights)]
    for _ in range(rng.choice((0, 0, 1, 2, 3))):  # busy mornings: a few hours at 6x
        day = rng.randrange(days)
        for h in range(day * 24 + 8, day * 24 + 12):
            weights[h] += 6 * statistics.fmean(weights)
    cumulative = _cumulative(weights, total)
    if pattern == "heavy-first-day":
        first = rng.uniform(0.15, 0.35) if total > 0.5 else total * 0.5
        head = _cumulative(weights[:24], first)
        tail = _cumulative(weights[24:], total - first)
        cumulative = head + [first + c for c in tail[1:]]
    times, used = [], []
    offset = rng.uniform(60, HOUR - 60)  # the timer fires at some minute past each hour
    for h in range(hours):
        t = start + h * HOUR + offset
        frac = (t - start) / HOUR
        i = int(frac)
        used.append(cumulative[i] + (cumulative[i + 1] - cumulative[i]) * (frac - i))
        times.append(t)
    return Period(
        pattern, start, start + hours * HOUR, tuple(times), tuple(used), _exhausted(cumulative, start)
    )


def _shape(pattern: str, h: int, hours: int, start: float) -> float:
    t = start + h * HOUR
    weekday = (int(t // DAY) + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    hour = int(t % DAY // HOUR)
    if pattern == "weekly":
        return 1.0 if weekday < 5 else 0.2
    if pattern == "working-hours":
        return 1.0 if weekday < 5 and 9 <= hour < 18 else 0.05
    if pattern == "ramp-up":
        return 0.1 + h / hours
    if pattern == "step-change":
        return 1.0 if h < hours * _step_at(start) else 4.0
    return 1.0  # steady, heavy-first-day (its first day is added apart), quiet


def _step_at(start: float) -> float:
    return 0.35 + 0.3 * ((start // HOUR) % 97) / 97  # between 35 % and 65 % of the period


def _cumulative(weights: list[float], total: float) -> list[float]:
    scale = total / (sum(weights) or 1.0)
    result, acc = [0.0], 0.0
    for w in weights:
        acc += w * scale
        result.append(acc)
    return result


def _exhausted(cumulative: list[float], start: float) -> float | None:
    for h in range(1, len(cumulative)):
        if cumulative[h] >= 1:
            before = cumulative[h - 1]
            return start + (h - 1 + (1 - before) / (cumulative[h] - before)) * HOUR
    return None


def periods(seed: int, count: int, borderline: bool = False) -> list[Period]:
    """Return ``count`` periods, the patterns in turn, about half of the non-quiet ones running out."""
    rng = random.Random(seed)
    result = []
    for i in range(count):
        pattern = PATTERNS[i % len(PATTERNS)]
        runs_out = None if borderline else rng.random() < 0.5
        result.append(generate(rng, pattern, runs_out))
    return result


# --- scoring --------------------------------------------------------------------------------------


def forecast_alerts(period: Period, config) -> list[float]:
    """Return the times (unix s) of the forecast alerts ``backtest`` gives for the period."""
    result = replay(period.observations(), config)
    return [n.at / 1000 for n in result.notifications if n.kind == "forecast"]


def baseline_alerts(period: Period, min_elapsed_share: float = 0.0) -> list[float]:
    """Return the times of the naive linear projection's alerts (each crossing of 100 %)."""
    length = period.end - period.start
    alerts, above = [], False
    for t, used in zip(period.times, period.used, strict=True):
        elapsed = t - period.start
        if used >= 1 or elapsed < min_elapsed_share * length:
            above = False if used < 1 else above
            continue
        projected = used / elapsed * length
        if projected > 1 and not above:
            alerts.append(t)
        above = projected > 1
    return alerts


@dataclass(frozen=True)
class Score:
    """The four measures of one method over a set of periods."""

    recall: float
    median_lead: float
    false_alarms: float
    mean_alerts: float
    max_alerts: int
    runs_out: int
    lasts: int


def score(all_periods: list[Period], alerts: list[list[float]]) -> Score:
    """Given periods and each one's alert times, return the measures."""
    recalled, leads, false, counts = 0, [], 0, []
    for period, times in zip(all_periods, alerts, strict=True):
        counts.append(len(times))
        if period.exhausted_at is None:
            false += bool(times)
            continue
        before = [t for t in times if t < period.exhausted_at]
        lead = (period.exhausted_at - before[0]) / HOUR if before else 0.0
        leads.append(lead)
        recalled += lead >= LEAD_NEEDED_HOURS
    exhausting = len(leads)
    lasting = len(all_periods) - exhausting
    return Score(
        recall=recalled / exhausting if exhausting else math.nan,
        median_lead=statistics.median(leads) if leads else math.nan,
        false_alarms=false / lasting if lasting else math.nan,
        mean_alerts=statistics.fmean(counts) if counts else 0.0,
        max_alerts=max(counts, default=0),
        runs_out=exhausting,
        lasts=lasting,
    )


def misses(s: Score, baseline: Score) -> list[str]:
    """Return the targets the forecast misses (empty when it meets them all)."""
    problems = []
    if not s.recall >= TARGETS["recall"]:
        problems.append(f"recall {s.recall:.1%} < {TARGETS['recall']:.0%}")
    if not s.median_lead >= TARGETS["median_lead"]:
        problems.append(f"median lead {s.median_lead:.0f} h < {TARGETS['median_lead']:.0f} h")
    if not s.false_alarms <= TARGETS["false_alarms"]:
        problems.append(f"false alarms {s.false_alarms:.1%} > {TARGETS['false_alarms']:.0%}")
    if s.max_alerts > TARGETS["max_alerts"]:
        problems.append(f"up to {s.max_alerts} forecast alerts in a period > {TARGETS['max_alerts']}")
    if not s.false_alarms < baseline.false_alarms and baseline.false_alarms > 0:
        problems.append("no fewer false alarms than the baseline")
    if s.recall < baseline.recall:
        problems.append("lower recall than the baseline")
    return problems


def table(rows: list[tuple[str, Score]]) -> str:
    """Return the scores as a markdown table."""
    lines = [
        "| method | recall (>= 24 h ahead) | median lead | false alarms | alerts per period (mean / max) |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s.recall:.1%} | {s.median_lead:.0f} h | {s.false_alarms:.1%} | "
            f"{s.mean_alerts:.2f} / {s.max_alerts} |"
        )
    return "\n".join(lines)


def per_pattern(all_periods: list[Period], alerts: list[list[float]]) -> str:
    """Return a markdown table of the forecast's measures per pattern."""
    lines = ["| pattern | runs out / lasts | recall | median lead | false alarms |", "|---|---|---|---|---|"]
    for pattern in PATTERNS:
        picked = [(p, a) for p, a in zip(all_periods, alerts, strict=True) if p.pattern == pattern]
        s = score([p for p, _ in picked], [a for _, a in picked])
        recall = "-" if s.runs_out == 0 else f"{s.recall:.0%}"
        lead = "-" if s.runs_out == 0 else f"{s.median_lead:.0f} h"
        false = "-" if s.lasts == 0 else f"{s.false_alarms:.0%}"
        lines.append(f"| {pattern} | {s.runs_out} / {s.lasts} | {recall} | {lead} | {false} |")
    return "\n".join(lines)


def write_sample(path: Path, seed: int) -> None:
    """Write one steady-ish month that runs out a few days early as a trace."""
    rng = random.Random(seed)
    while True:
        period = generate(rng, "weekly", True)
        left = (period.end - period.exhausted_at) / DAY if period.exhausted_at else 0
        if 2 <= left <= 5:
            break
    lines = [json.dumps({"at": o.at, "usage": o.body}) for o in period.observations()]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 when the forecast misses a target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--periods", type=int, default=280, help="number of periods (default 280)")
    parser.add_argument("--borderline", action="store_true", help="only periods ending at 85-115 %%")
    parser.add_argument("--by-pattern", action="store_true", help="also show the forecast per pattern")
    parser.add_argument("--config", metavar="PATH", help="a config file whose forecast settings to measure")
    parser.add_argument("--write-sample", metavar="PATH", help="write the example month and exit")
    args = parser.parse_args(argv)
    if args.write_sample:
        write_sample(Path(args.write_sample), args.seed)
        return 0
    env = {"HOME": "/nonexistent"}
    config = load_config(args.config, env) if args.config else build_config({}, None, env)
    all_periods = periods(args.seed, args.periods, args.borderline)
    ours = [forecast_alerts(p, config) for p in all_periods]
    naive = [baseline_alerts(p) for p in all_periods]
    guarded = [baseline_alerts(p, config.forecast.min_elapsed_share) for p in all_periods]
    mine, base = score(all_periods, ours), score(all_periods, naive)
    print(
        f"{len(all_periods)} periods (seed {args.seed}): {mine.runs_out} run out before the reset, "
        f"{mine.lasts} do not{' (borderline totals only)' if args.borderline else ''}\n"
    )
    rows = [
        ("forecast (this job)", mine),
        ("naive linear projection", base),
        (f"naive, after {config.forecast.min_elapsed_share:.0%} of the period", score(all_periods, guarded)),
    ]
    print(table(rows))
    if args.by_pattern:
        print()
        print(per_pattern(all_periods, ours))
    if args.borderline:
        return 0
    problems = misses(mine, base)
    print()
    print("targets met" if not problems else "targets missed: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
