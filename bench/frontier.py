"""How far can a forecast that sees only the window so far go on this benchmark?

``bench/alert_quality.py`` judges the job's forecast against fixed targets. This asks
whether the targets can be met at all by any forecast that, like the job's, sees only
the samples of the window so far. It learns such forecasts: gradient-boosted
classifiers (scikit-learn) fitted on many windows of the benchmark's TRAINING part
(200 per shape, not 48), that give at each run the chance that the window runs out (at
all; or within 3, or 7, times the kind's lead: one taught that waits until running out
is near, as the job's horizons do), from what the job could know then:

- the time elapsed and the share used; the pace since the window began and over five
  trailing lookbacks (1/28 to 3/7 of the window: 6 hours to 3 days of a week), each also
  as a burn rate (the pace over the pace that would use exactly what is left);
- the burn rate over 1/7 of the window (a day of a week) as it was 1/28 and 1/14 of
  the window ago (did the pace hold?);
- how much use swings from block to block so far (a day; 15 minutes in a 5-hour window):
  its coefficient of variation, its largest block over the mean, how long ago that was,
  the last block over the mean;
- the last four blocks in quarter-blocks: how much of it was idle, the newest quarter,
  the newest block, the one before, the two before that.

A forecast built on one fires once, at the first run whose chance reaches a threshold.
Every classifier and threshold is measured on the HELD-OUT part exactly as
``alert_quality`` measures the job's forecast (the same windows, the same "too sudden"
rule, recall at the kind's lead). Picking the best of them on the held-out part itself
flatters the learned forecast, on purpose: it estimates generously what a forecast that
sees only the window reaches, to set the targets and the job's own rules against. It
is an estimate, not a bound: a better learner or better features could do better (on
the monthly window the job's own rules do).

    pip install -e '.[bench]'    # scikit-learn, numpy: the benchmark's alone, not the job's
    python bench/frontier.py [--kinds ...] [--train-per-shape N] [--per-shape N] [--smoke]
                             [--told noise shape]

prints, per kind, a markdown table of the classifiers and thresholds no other beats on
both recall and false alarms on the held-out part, best recall within the targets last.
About 10 minutes on 2 cores, most of it the two monthly kinds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import alert_quality as bench  # noqa: E402

# Trailing lookbacks as shares of the window: 6 h, 12 h, 1 d, 2 d and 3 d of a week.
LOOKBACKS = (1 / 28, 1 / 14, 1 / 7, 2 / 7, 3 / 7)
HELD_BACK = (1 / 28, 1 / 14)  # how long ago the day's burn rate is looked at again
# The block use is compared with itself over, as a share of the window: a day of a
# month or a week, 15 minutes of 5 hours (what the job's noise margin uses).
BLOCK = {"period": 1 / 30, "monthly": 1 / 30, "weekly": 1 / 7, "5h": 1 / 20}
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
# What the classifiers learn, as multiples of the kind's lead (0: whether the window runs
# out at all; 3: whether it runs out within 3 leads of the run): one that fires only
# once running out is near waits as the job's horizons do.
HORIZONS = (0, 3, 7)


def features(window: bench.Window, told: tuple[str, ...] = ()):
    """Given a window, return a (runs before it ran out) x (features) array: what the job
    could know at each run, nothing later; and, for each of ``told``, what only the
    generator knows: ``noise``, the strength of the window's noise; ``shape``, which shape
    it is (one column per shape; the held-out part's own shapes are never seen in
    training, so telling them adds nothing there)."""
    import numpy as np

    start, length = window.start, window.end - window.start
    t = np.asarray(window.times)
    u = np.asarray(window.used)
    rows = int(np.argmax(u >= 1)) if (u >= 1).any() else len(u)
    t, u = t[:rows], u[:rows]
    known_t = np.concatenate(([start], np.asarray(window.times)))
    known_u = np.concatenate(([0.0], np.asarray(window.used)))

    def used_at(when):
        # Only times at or before each run are asked for, so the samples around them
        # are at or before that run too.
        return np.interp(when, known_t, known_u, left=0.0)

    elapsed = np.maximum((t - start) / length, 1e-3)
    left_time = 1 - elapsed
    left = np.maximum(1 - u, 1e-6)
    since_start = u / elapsed
    cols = [elapsed, u, since_start, since_start * left_time / left]
    for share in LOOKBACKS:
        pace = np.where(elapsed >= share, (u - used_at(t - share * length)) / share, since_start)
        cols += [pace, pace * left_time / left]
    day = 1 / 7
    for back in HELD_BACK:
        then = t - back * length
        used_then = used_at(then)
        pace = (used_then - used_at(then - day * length)) / day
        burn = np.where(used_then < 1, pace * (left_time + back) / np.maximum(1 - used_then, 1e-6), 5.0)
        cols.append(np.where(elapsed - back >= day, burn, -1.0))
    block = BLOCK[window.kind]
    cols += _swing(elapsed, used_at(start + np.arange(int(1 / block) + 1) * block * length), block)
    quarter = block * length / 4
    recent = np.stack([used_at(t - j * quarter) for j in range(17)])
    steps = recent[:-1] - recent[1:]
    cols += [
        (steps <= 1e-9).mean(axis=0),
        steps[0],
        steps[:4].sum(axis=0),
        steps[4:8].sum(axis=0),
        steps[8:16].sum(axis=0),
    ]
    if "noise" in told:
        cols.append(np.full(rows, window.noise))
    if "shape" in told:
        cols += [np.full(rows, float(window.shape == shape)) for shape in bench.TRAINING_SHAPES]
    return np.column_stack(cols)


def _swing(elapsed, at_bounds, block: float) -> list:
    """Per run, from the use of each whole block so far: its coefficient of variation,
    its largest block over the mean, how long ago that block ended (share of the
    window), the newest block over the mean; -1 for each until three blocks are whole."""
    import numpy as np

    per_block = np.diff(at_bounds)
    whole = np.floor(elapsed / block).astype(int)
    out = np.full((4, len(elapsed)), -1.0)
    for i, n in enumerate(whole):
        if n < 3:
            continue
        seen = per_block[:n]
        mean = seen.mean()
        if mean <= 0:
            continue
        biggest = int(seen.argmax())
        out[:, i] = (
            seen.std(ddof=1) / mean,
            seen[biggest] / mean,
            elapsed[i] - (biggest + 1) * block,
            seen[-1] / mean,
        )
    return list(out)


def fire_times(window: bench.Window, chances, threshold: float) -> list[float]:
    """Return the learned forecast's alert: the first run whose chance reaches ``threshold``."""
    for when, chance in zip(window.times, chances, strict=False):
        if chance >= threshold:
            return [when]
    return []


def frontier(kind: str, train_per_shape: int, per_shape: int, told: tuple[str, ...] = (), out=print) -> None:
    """Fit the classifiers on the training part; print, of every one's thresholds, those
    no other beats on both recall and false alarms on the held-out part, then the best
    of them within the kind's targets."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    training = bench.windows(kind, "training", train_per_shape)
    known = [features(w, told) for w in training]
    x = np.concatenate(known)
    held_out = bench.windows(kind, "held-out", per_shape)
    asked = [features(w, told) for w in held_out]
    target = bench.KINDS[kind]
    points = []
    for horizon in HORIZONS:
        y = np.concatenate(
            [_runs_out(w, len(f), horizon * target.lead) for f, w in zip(known, training, strict=True)]
        )
        model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)
        model.fit(x, y)
        chances = [model.predict_proba(f)[:, 1] for f in asked]
        for threshold in THRESHOLDS:
            alerts = [fire_times(w, c, threshold) for w, c in zip(held_out, chances, strict=True)]
            points.append((horizon, threshold, bench.score(held_out, alerts)))
    best = [p for p in points if not any(_beats(q[2], p[2]) for q in points)]
    best = list({(p[2].recall, p[2].false_alarms): p for p in reversed(best)}.values())  # ties: the first
    best.sort(key=lambda p: (p[2].false_alarms, p[2].recall))
    extra = f"; told each window's {' and '.join(told)}" if told else ""
    out(
        f"\n{kind}: fitted on {len(training)} training windows ({len(x)} runs); "
        f"held-out {len(held_out)}{extra}\n"
    )
    out("| learned: runs out | threshold | recall | median lead | false alarms |")
    out("|---|---|---|---|---|")
    for horizon, threshold, s in best:
        label = f"within {bench._duration(horizon * target.lead)}" if horizon else "at all"
        out(
            f"| {label} | {threshold} | {bench._pct(s.recall)} | {bench._duration(s.median_lead)} | "
            f"{bench._pct(s.false_alarms)} |"
        )
    within = [s.recall for _, _, s in points if s.false_alarms <= target.false_alarms]
    enough = [s.false_alarms for _, _, s in points if s.recall >= target.recall]
    out(
        f"\nbest recall with false alarms <= {target.false_alarms:.0%}: "
        f"{bench._pct(max(within)) if within else 'none'}; fewest false alarms with recall >= "
        f"{target.recall:.0%}: {bench._pct(min(enough)) if enough else 'none'}"
    )


def _runs_out(window: bench.Window, runs: int, within: float):
    """Per run of the first ``runs``: does the window run out (within ``within`` seconds
    of that run; 0: at all)?"""
    import numpy as np

    if window.exhausted_at is None:
        return np.zeros(runs, bool)
    if not within:
        return np.ones(runs, bool)
    return window.exhausted_at - np.asarray(window.times[:runs]) <= within


def _beats(a: bench.Score, b: bench.Score) -> bool:
    """True when ``a`` has no lower recall and no more false alarms than ``b``, and is
    better in one."""
    return (
        a.recall >= b.recall
        and a.false_alarms <= b.false_alarms
        and (a.recall > b.recall or a.false_alarms < b.false_alarms)
    )


def main(argv: list[str] | None = None) -> int:
    """Learn the forecast per kind and print its frontier; exit 2 without scikit-learn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=tuple(bench.KINDS), default=list(bench.KINDS))
    parser.add_argument("--train-per-shape", type=int, default=200, help="training windows per shape")
    parser.add_argument("--per-shape", type=int, default=48, help="held-out windows per shape")
    parser.add_argument(
        "--smoke", action="store_true", help="3 training and 2 held-out windows per shape: that it runs"
    )
    parser.add_argument(
        "--told",
        nargs="+",
        choices=("noise", "shape"),
        default=[],
        help="also tell the classifier what only the generator knows: each window's noise, its shape",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_per_shape, args.per_shape = 3, 2
    try:
        import numpy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        print("error: bench/frontier.py needs scikit-learn; install it with: pip install -e '.[bench]'")
        return 2
    for kind in args.kinds:
        frontier(kind, args.train_per_shape, args.per_shape, tuple(args.told))
    return 0


if __name__ == "__main__":
    sys.exit(main())
