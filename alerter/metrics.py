"""The meters in Prometheus text format, for node_exporter's textfile collector.

``render`` is pure; ``write_textfile`` replaces the file atomically (node_exporter must
never read half a file) with mode 0644 (node_exporter usually runs as another user).

Series (gauges; ``meter`` is the meter id, e.g. ``standard.5h``):

- ``factory_usage_used_ratio``: 0.82 for 82 %, may exceed 1
- ``factory_usage_seconds_to_reset``: while the window's end is known
- ``factory_usage_projected_ratio_at_reset``, ``factory_usage_seconds_to_exhaustion``:
  only for meters with a forecast (see :class:`Projection`)
- ``factory_usage_extra_balance_usd``: the prepaid extra-usage balance, when Factory reports it
- ``factory_usage_alert_last_success_timestamp_seconds``,
  ``factory_usage_alert_last_run_timestamp_seconds``,
  ``factory_usage_alert_last_run_success`` (1/0), ``factory_usage_alert_consecutive_failures``

After a failed run only the ``factory_usage_alert_*`` series are written: usage numbers
that could not be read are left out rather than repeated stale. Alert on
``time() - factory_usage_alert_last_success_timestamp_seconds > 3600``. With ``accounts:``
every series carries an ``account`` label (``render_accounts``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alerter.forecast import Assessment
from alerter.meters import Reading
from alerter.state import Health, write_atomic


@dataclass(frozen=True)
class Projection:
    """What a forecast says about one meter; None where it says nothing.

    ``seconds_to_exhaustion`` is None when the meter is not expected to run out before
    its window resets; 0 when it already has.
    """

    ratio_at_reset: float | None = None
    seconds_to_exhaustion: float | None = None


def projection(assessment: Assessment, now: float) -> Projection:
    """Given a forecast.Assessment, return its Projection (exhaustion only before the reset)."""
    exhaustion = assessment.exhaustion_at
    end = assessment.window_end
    seconds = None
    if exhaustion is not None and (end is None or exhaustion < end):
        seconds = max(0.0, exhaustion - now)
    return Projection(assessment.projected_at_reset, seconds)


_HELP = {
    "factory_usage_used_ratio": "Share of the meter's allowance or window used (1 = 100 %).",
    "factory_usage_seconds_to_reset": "Seconds until the meter's window or billing period resets.",
    "factory_usage_projected_ratio_at_reset": "Forecast share used when the window resets.",
    "factory_usage_seconds_to_exhaustion": "Forecast seconds until the meter reaches 100 %.",
    "factory_usage_extra_balance_usd": "Prepaid extra-usage balance left, in US dollars.",
    "factory_usage_alert_last_success_timestamp_seconds": "Unix time of the last successful usage read.",
    "factory_usage_alert_last_run_timestamp_seconds": "Unix time of the last run.",
    "factory_usage_alert_last_run_success": "1 when the last run read usage, else 0.",
    "factory_usage_alert_consecutive_failures": "Runs in a row that could not read usage.",
}


def render(
    reading: Reading | None,
    health: Health,
    now: float,
    projections: Mapping[str, Projection] | None = None,
    account: str | None = None,
) -> str:
    """Given this run's reading (None when it failed), the health state, the time, the
    optional forecast per meter id and the account (labels every series when given),
    return the textfile content."""
    return _format(_samples(reading, health, now, projections or {}, account))


@dataclass(frozen=True)
class AccountMetrics:
    """One account's part of the textfile: what ``render`` takes, with its name."""

    account: str
    reading: Reading | None
    health: Health
    now: float
    projections: Mapping[str, Projection]


def render_accounts(parts: list[AccountMetrics]) -> str:
    """Given each account's part, return one textfile with every series labelled by account."""
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in _HELP}
    for part in parts:
        own = _samples(part.reading, part.health, part.now, part.projections, part.account)
        for name, values in own.items():
            samples[name] += values
    return _format(samples)


def _labels(account: str | None, meter: str | None = None) -> str:
    pairs = ([("account", account)] if account is not None else []) + ([("meter", meter)] if meter else [])
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _samples(
    reading: Reading | None,
    health: Health,
    now: float,
    projections: Mapping[str, Projection],
    account: str | None,
) -> dict[str, list[tuple[str, float]]]:
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in _HELP}
    for meter in reading.meters if reading is not None else ():
        if meter.unlimited:
            continue
        label = _labels(account, meter.id)
        samples["factory_usage_used_ratio"].append((label, meter.used_ratio if meter.active else 0.0))
        if meter.active and meter.window_end is not None:
            samples["factory_usage_seconds_to_reset"].append((label, max(0.0, meter.window_end - now)))
        projection = projections.get(meter.id)
        if projection is not None and projection.ratio_at_reset is not None:
            samples["factory_usage_projected_ratio_at_reset"].append((label, projection.ratio_at_reset))
        if projection is not None and projection.seconds_to_exhaustion is not None:
            samples["factory_usage_seconds_to_exhaustion"].append(
                (label, max(0.0, projection.seconds_to_exhaustion))
            )
    if reading is not None and reading.extra_usage_cents is not None:
        samples["factory_usage_extra_balance_usd"].append((_labels(account), reading.extra_usage_cents / 100))
    job = _labels(account)
    if health.last_success is not None:
        samples["factory_usage_alert_last_success_timestamp_seconds"].append((job, health.last_success))
    samples["factory_usage_alert_last_run_timestamp_seconds"].append((job, now))
    samples["factory_usage_alert_last_run_success"].append((job, 1.0 if reading is not None else 0.0))
    samples["factory_usage_alert_consecutive_failures"].append((job, health.failures))
    return samples


def _format(samples: dict[str, list[tuple[str, float]]]) -> str:
    lines = []
    for name, values in samples.items():
        if not values:
            continue
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        lines += [f"{name}{label} {_number(value)}" for label, value in values]
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Given the .prom path and its content, replace the file atomically (mode 0644)."""
    write_atomic(path, text.encode("utf-8"), mode=0o644)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(float(value), 6)) if value != int(value) else str(int(value))
