"""Money: when an account starts paying for extra usage, and when its balance runs low.

Factory spends the standard usage first, then the Droid Core pool, then the prepaid Extra
Usage balance (``extraUsageBalanceCents`` in ``billing/limits``). Two notices, pure like
:mod:`alerter.monitor` (``assess(reading, state, config, now)`` returns alerts and a new
state; the job records deliveries in the ledger, so each is said once per channel):

- ``extra_spending``: a limit window is used up (some meter at 100 % or more) and the
  balance went down since the last run: "extra usage is being spent", with the balance.
  Once per episode: the episode ends when usage has clearly dropped (every meter below
  ``SPENDING_REARM_PERCENT``, as after a window's reset), and the next one is said again;
  a dip to 99.5 % and back is the same episode.
- ``low_balance`` (``extra_usage.low_balance_usd: N``): the balance fell below N dollars.
  Once, re-armed when the balance is topped up clearly above N: to N plus the larger of
  $1 and 10 % of N (:func:`rearm_cents`), so a balance a cent either side of N warns once.

Their ledger keys are ``DeliveryKey("extra_usage", kind, since, level)``: ``since`` is the
episode's start (or when the balance fell below N), so a new episode is a new alert.
"""

from __future__ import annotations

from dataclasses import replace

from alerter.config import Config
from alerter.meters import Reading
from alerter.rules import Alert
from alerter.state import DeliveryKey, ExtraUsage, State

METER = "extra_usage"  # the ledger's "meter" of the money notices
SPENDING = "extra_spending"
LOW = "low_balance"
# Hysteresis, as the forecast has (it re-arms below 90 %): a notice is said again only
# once what caused it has clearly gone, not when the input wobbles across the line.
SPENDING_REARM_PERCENT = 90.0
LOW_REARM_MIN_CENTS = 100.0
LOW_REARM_SHARE = 0.10


def level_cents(level_usd: float) -> float:
    """Given ``low_balance_usd``, return it in cents, free of binary rounding: 1.1 * 100 is
    110.00000000000001, which made a balance of exactly $1.10 "below $1.1"."""
    return round(level_usd * 100, 6)


def rearm_cents(level_usd: float) -> float:
    """Given ``low_balance_usd``, return the balance in cents at or above which the
    low-balance notice is armed again: the level plus the larger of $1 and 10 % of it."""
    level = level_cents(level_usd)
    return round(level + max(LOW_REARM_MIN_CENTS, LOW_REARM_SHARE * level), 6)


def assess(reading: Reading, state: State, config: Config, now: float) -> tuple[list[Alert], State]:
    """Given a reading, the state, the config and the time, return the money alerts due
    (each naming the channels that still need it) and the new state.

    A reading without a balance (the allowance endpoint, or Factory leaving it out)
    changes nothing.
    """
    cents = reading.extra_usage_cents
    if cents is None:
        return [], state
    before = state.extra_usage
    limited = [m for m in reading.meters if m.active and not m.unlimited]
    used_up = [m for m in limited if m.percent >= 100]
    spending_since = before.spending_since
    if all(m.percent < SPENDING_REARM_PERCENT for m in limited):
        spending_since = None  # usage clearly dropped (a window reset): the episode is over
    elif (
        spending_since is None
        and used_up
        and reading.extra_usage_allowed is not False
        and before.balance_cents is not None
        and cents < before.balance_cents
    ):
        spending_since = now
    low_since = before.low_since
    level = config.low_balance_usd
    if level is None or cents >= rearm_cents(level):
        low_since = None  # topped up clearly above the level (or no level): armed again
    elif low_since is None and cents < level_cents(level):
        low_since = now
    after = ExtraUsage(float(cents), spending_since, low_since)
    if after != before:
        state = replace(state, extra_usage=after)
    state = _forget_ended(state, {SPENDING: spending_since, LOW: low_since})
    alerts = []
    if spending_since is not None and used_up:
        names = ", ".join(m.id for m in used_up)
        title = f"Factory extra usage is being spent: ${cents / 100:.2f} left"
        was = f" from ${before.balance_cents / 100:.2f}" if before.balance_cents is not None else ""
        body = (
            f"The limit windows are used up ({names}), and the prepaid extra-usage balance went "
            f"down{was} to ${cents / 100:.2f}. Work goes on at a cost until the windows reset."
        )
        alerts += _due(state, config, DeliveryKey(METER, SPENDING, spending_since, 0.0), title, body)
    if low_since is not None and level is not None:
        title = f"Factory extra-usage balance low: ${cents / 100:.2f} (below ${level:g})"
        body = (
            f"The prepaid extra-usage balance is ${cents / 100:.2f}, below the ${level:g} set in "
            "extra_usage.low_balance_usd. Top it up in Factory's billing settings before work stops."
        )
        alerts += _due(state, config, DeliveryKey(METER, LOW, low_since, float(level)), title, body)
    return alerts, state


def _due(state: State, config: Config, key: DeliveryKey, title: str, body: str) -> list[Alert]:
    told = state.delivered(key)
    channels = tuple(
        ch.id for ch in config.delivery_channels() if "warning" in ch.severities and ch.id not in told
    )
    return [Alert(key, "warning", title, body, channels)] if channels else []


def _forget_ended(state: State, current: dict[str, float | None]) -> State:
    """Return the state without ledger entries of money episodes that have ended."""
    ended = [k for k in state.ledger if k.meter == METER and current.get(k.kind) != k.window]
    if not ended:
        return state
    state = state.copy()
    for key in ended:
        del state.ledger[key]
    return state
