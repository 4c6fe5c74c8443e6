"""The one decision of a run: what to send now, what waits, and what to remember.

``decide(state, observation, config, now)`` is pure. The observation is what this run
learnt from Factory: a :class:`~alerter.meters.Reading`, or a :class:`Failure` saying why
usage could not be read. It is the only place where thresholds, forecasts, the job's
self-monitoring, reminders, reset notices, the money notices (:mod:`alerter.money`)
and quiet hours are combined; ``run``,
``backtest``, ``status``, the metrics and the tests all call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from alerter import money, monitor
from alerter.config import Config
from alerter.forecast import Assessment
from alerter.meters import Reading
from alerter.rules import Alert, assess_meter, evaluate, login_expired_alert
from alerter.state import State


@dataclass(frozen=True)
class Failure:
    """A run that could not read usage: why, in one line, and whether droid's login ended."""

    reason: str
    login_expired: bool = False


Observation = Reading | Failure


@dataclass(frozen=True)
class Decision:
    """What a run does with one observation.

    ``send``: due now (each naming the channels that still need it); ``held``: due, but
    waiting for quiet hours to end (they stay due in ``state``, see :mod:`alerter.monitor`);
    ``state``: what to remember, before any delivery is recorded; ``forecasts``: each
    forecast meter's assessment with this reading in its history (empty after a failure);
    ``now``: the time it was decided at (what is shown of the forecasts is relative to it).
    """

    send: tuple[Alert, ...]
    held: tuple[Alert, ...]
    state: State
    forecasts: Mapping[str, Assessment] = field(default_factory=dict)
    now: float = 0.0


def decide(state: State, observation: Observation, config: Config, now: float) -> Decision:
    """Given what is remembered, what this run observed, the config and the time, return the Decision.

    A failure never touches the usage state: nothing is re-armed or fired; it counts
    towards the "not working" notice and sends the "login expired" notice when the login
    ended. A reading fires thresholds and forecasts, ends a failure streak, and brings the
    reminders, reset notices and extra-usage notices that are due. With ``config.account``
    every title starts with ``[account]``.
    """
    forecasts: dict[str, Assessment] = {}
    if isinstance(observation, Failure):
        expired = login_expired_alert(state, config) if observation.login_expired else None
        stale, state = monitor.after_failure(
            state, config, now, observation.reason, login_expired=observation.login_expired
        )
        owed, state = monitor.stored_notices(state, config)
        alerts = ([expired] if expired is not None else []) + stale + owed
    else:
        usage, evaluated = evaluate(observation, state, config, now)
        more, state = monitor.after_read(observation, state, evaluated, config, now)
        spent, state = money.assess(observation, state, config, now)
        alerts = more + usage + spent
        forecasts = {
            m.id: assess_meter(m, state.meters[m.id], config, now)
            for m in observation.meters
            if m.active and not m.unlimited
        }
    if config.account is not None:
        # The one place an account's notifications are named: every alert passes here.
        alerts = [dataclasses.replace(a, title=f"[{config.account}] {a.title}") for a in alerts]
    send, held = monitor.hold(alerts, config, now)
    return Decision(tuple(send), tuple(held), state, forecasts, now)
