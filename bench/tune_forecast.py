"""How the forecast's defaults were chosen: candidate settings on the TRAINING part only.

For each group of window kinds, every candidate (a list of rules, a minimum elapsed
percent and a noise margin) is measured with ``bench/alert_quality.py`` on the
training part (seed 1, the training shapes); the held-out part is never generated
here. The choice, per group: of the candidates that meet every target (recall,
median lead, false alarms, at least the naive projection's recall, at most two alerts
per window) on every kind of the group, the one with the fewest false alarms (the
worst kind of the group), then the longest median lead; when none does, of those with
at least the naive projection's recall and at most two alerts, the one with the
largest recall less false alarms.

    python bench/tune_forecast.py [--group long|weekly|5h] [--per-shape N]

prints one line per candidate, best last. 48 windows per shape and kind by default (the
benchmark's training part at its default size): at 16, one window is 6-14 points of a
shape's rate, and the choice followed the luck of a few windows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import alert_quality as bench  # noqa: E402

from alerter.config import build_config  # noqa: E402

# Per group: the kinds, candidate rules (long hours, short hours, burn rate, hold hours,
# within hours; 0 = none), candidate minimum elapsed percents and candidate noise margins;
# every combination is measured. Earlier rounds' candidates and figures are in
# bench/tuning-log.txt; these are the fourth round's (noise margins over the whole window
# so far), around the second round's best.
CANDIDATES = {
    "long": (
        ("period", "monthly"),
        [
            [(168, 24, 2.0, 0, 0), (168, 24, 1.2, 0, 120), (24, 3, 1.0, 0, 42)],  # second round's
            [(168, 24, 2.0, 0, 0), (168, 24, 1.0, 0, 120), (24, 3, 1.0, 0, 48)],
            [(168, 24, 2.0, 0, 0), (168, 24, 1.0, 0, 168), (24, 3, 1.0, 0, 48)],
        ],
        (25,),
        (0, 0.25, 0.5, 0.75),
    ),
    "weekly": (
        ("weekly",),
        [
            [(72, 6, 1.0, 0, 60), (24, 2, 1.0, 0, 36)],  # second round's
            [(72, 6, 1.0, 0, 72), (24, 2, 1.0, 0, 36)],
            [(72, 6, 1.0, 0, 60), (24, 2, 1.0, 0, 48)],
        ],
        (40,),
        (0, 0.25, 0.5),
    ),
    "5h": (
        ("5h",),
        [
            [(2, 0.5, 1.2, 0, 0), (1, 0.25, 2.0, 0, 0), (0.5, 0.25, 1.0, 0, 0.75)],  # second round's
            [(2, 0.5, 1.0, 0, 0), (1, 0.25, 2.0, 0, 0), (0.5, 0.25, 1.0, 0, 0.75)],
            [(2, 0.5, 1.0, 0, 1.5), (1, 0.25, 2.0, 0, 0), (0.5, 0.25, 1.0, 0, 0.75)],
        ],
        (30,),
        (0, 0.25, 0.5),
    ),
}


def config_for(kinds: tuple[str, ...], rules: list, min_elapsed: float, noise: float = 0.0):
    """Return the config with these rules, minimum elapsed percent and noise margin for ``kinds``."""
    keys = ("long_hours", "short_hours", "burn_rate", "hold_hours", "within_hours")
    items = [dict(zip(keys, rule, strict=True)) for rule in rules]
    forecast = {
        "rules": dict.fromkeys(kinds, items),
        "min_elapsed_percent": dict.fromkeys(kinds, min_elapsed),
        "noise_margin": dict.fromkeys(kinds, noise),
    }
    return build_config({"forecast": forecast}, None, {"HOME": "/nonexistent"})


def main(argv: list[str] | None = None) -> int:
    """Measure every candidate of the group(s) on the training part; print them, best last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=tuple(CANDIDATES), nargs="+", default=list(CANDIDATES))
    parser.add_argument("--per-shape", type=int, default=48)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    for group in args.group:
        kinds, candidates, min_percents, noises = CANDIDATES[group]
        results = []
        for rules, min_elapsed, noise in [
            (r, m, n) for r in candidates for m in min_percents for n in noises
        ]:
            config = config_for(kinds, rules, min_elapsed, noise)
            measured = bench.measure(kinds, ("training",), args.per_shape, config, args.jobs)
            scores = [(bench.score(ws, ours), bench.score(ws, naive)) for _, _, ws, ours, naive in measured]
            fair = all(s.recall >= b.recall and s.max_alerts <= bench.MAX_ALERTS for s, b in scores)
            ok = fair and all(
                s.recall >= bench.KINDS[k].recall
                and s.false_alarms <= bench.KINDS[k].false_alarms
                and s.median_lead >= (bench.KINDS[k].median_lead or 0)
                for k, (s, _) in zip(kinds, scores, strict=True)
            )
            worst_false = max(s.false_alarms for s, _ in scores)
            lead = min(s.median_lead for s, _ in scores)
            margin = min(s.recall for s, _ in scores) - worst_false
            line = " | ".join(
                f"{k}: recall {s.recall:.1%} (naive {b.recall:.1%}) lead {bench._duration(s.median_lead)} "
                f"false {s.false_alarms:.1%} (naive {b.false_alarms:.1%}) max {s.max_alerts}"
                for k, (s, b) in zip(kinds, scores, strict=True)
            )
            label = f"{group} {rules} min {min_elapsed}% noise {noise}"
            print(f"{label}: {'ok' if ok else '--'} {line}", flush=True)
            # Meeting every target first; then (as long as none does) no lower recall than
            # the naive projection and recall less false alarms; then fewer false alarms.
            rank = (ok, -worst_false, lead) if ok else (ok, fair, margin, -worst_false)
            results.append((rank, rules, min_elapsed, noise))
        _, rules, min_elapsed, noise = max(results, key=lambda r: r[0])
        print(f"{group} best: {rules} min elapsed {min_elapsed}% noise margin {noise}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
