"""What the job remembers between runs: the schema, and the one way to load and save it.

The state is a small JSON file. This module owns its shape: typed records in memory, one
lenient :func:`load` that turns anything read from disk into a valid :class:`State` (a
part of the wrong shape is dropped with one warning, never a crash), and one
:func:`dump`. Nothing else reads or writes the JSON, so no reader guards against shapes.

On disk (version 2)::

    {"version": 2,
     "meters": {"standard.5h": {"window": {"start": null, "end": 1770641326.0},
                                "window_key": 1770641300.0,
                                "history": [...], "period_seconds": null, "peak": 81.5,
                                "episode": {"since": 1770630000, "safe_since": null,
                                            "safe_last": null}}},
     "ledger": [{"meter": "standard.5h", "kind": "threshold", "window": 1770641326.0,
                 "level": 80.0, "channels": {"ch-1a2b...": 1770631000.0}}],
     "notices": [{"meter": "standard.5h", "kind": "reset", "window": 1770641326.0,
                  "level": 0.0, "severity": "info", "title": ..., "body": ...,
                  "channels": ["ch-1a2b..."], "since": 1770641400.0}],
     "health": {"failures": 2, "failing_since": ..., "last_success": ...,
                "last_failure": ..., "last_error": "...", "last_outage": {...},
                "failed_runs": [[t, "reason"], [t, "reason", true]]},
     "endpoint": {"name": "limits", "checked_at": ...},
     "credentials": {...}, "channels_checked": "...",
     "extra_usage": {"balance_cents": 1234, "spending_since": null, "low_since": null}}

The **ledger** is the record of what was delivered: one entry per alert, keyed by
:class:`DeliveryKey` (meter, kind, window, level), holding the channels that have it and
when they got it. ``None`` instead of a time marks a delivery that was about to be made
when the state was saved (write-ahead): a run killed while sending leaves such marks, and
the next run sends those alerts again rather than lose them.

Version 1 files (written by earlier releases: ``sent``/``reminded`` per meter,
``health.stale_sent``, ``login.expired_sent``, ``pending``, ``source``) are read into the
same records, so an upgrade repeats nothing.

Written atomically (temp file in the same directory, fsync, rename, fsync of the
directory), mode 0600, its directory 0700. A file that cannot be read back (corrupt,
truncated, from a newer version) is kept aside as ``<name>.corrupt-<time>`` and the job
starts afresh: repeating this period's alerts is better than losing one. Runs may
overlap, so a run holds an exclusive lock on ``<name>.lock`` (see ``statefile``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alerter.errors import StateBusy, StateError
from alerter.meters import is_number
from alerter.statefile import (
    earlier_states,
    earlier_tag,
    ensure_private_dir,
    locked,
    read_private,
    write_atomic,
)

if TYPE_CHECKING:
    from alerter.config import Config

STATE_VERSION = 2
FAILED_RUNS_KEPT = 200
MAX_COUNT = 10**9  # more failed runs than this in a row is not a count but damage
MERGED_KEPT = 32  # tags of earlier state files merged: a few places, a few versions each
log = logging.getLogger(__name__)
# The command line takes locked from here and metrics write_atomic; callers catch the errors.
__all__ = [
    "DeliveryKey",
    "Episode",
    "ExtraUsage",
    "FailedRun",
    "Health",
    "MeterMemory",
    "Notice",
    "Outage",
    "State",
    "StateBusy",
    "StateError",
    "Window",
    "carry_over",
    "dump",
    "load",
    "load_state",
    "merge_ledger",
    "take_over_login_state",
    "locked",
    "save_state",
    "state_with_earlier",
    "write_atomic",
]


# --- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A usage window as first seen: billing periods by their start, limit windows by their end."""

    start: float | None = None
    end: float | None = None

    @property
    def ident(self) -> float:
        """The number that names this window in the ledger (its start, else its end, else 0)."""
        if self.start is not None:
            return self.start
        return self.end if self.end is not None else 0.0


@dataclass(frozen=True)
class Episode:
    """A forecast risk episode: since when, and since when the pace has looked safe."""

    since: float
    safe_since: float | None = None
    safe_last: float | None = None


@dataclass
class MeterMemory:
    """What is remembered of one meter in its current window.

    ``window`` is the window as last seen (limit windows drift by minutes between answers);
    ``window_key`` names it in the ledger and stays as it was when the window was first
    seen. ``history`` is the meter's recent readings in :mod:`alerter.forecast`'s segment form
    (checked here, replaced as a whole there); ``period_seconds`` the last known billing
    period length (to place the end of a period without one); ``peak`` the highest
    percent seen in the window; ``episode`` the forecast risk episode, if any.
    """

    window: Window | None = None
    window_key: float = 0.0
    history: list = field(default_factory=list)
    period_seconds: float | None = None
    peak: float = 0.0
    episode: Episode | None = None


@dataclass(frozen=True)
class Outage:
    """A failure streak that has ended: since when, and how many runs failed."""

    since: float | None
    failures: int


@dataclass(frozen=True)
class FailedRun:
    """One run that could not read usage (kept for ``history --jsonl`` and backtests)."""

    at: float
    reason: str
    login_expired: bool = False


@dataclass
class Health:
    """The job watching itself: the current failure streak and the last outcomes."""

    failures: int = 0
    failing_since: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    last_outage: Outage | None = None
    failed_runs: tuple[FailedRun, ...] = ()


@dataclass(frozen=True, order=True)
class DeliveryKey:
    """What makes two alerts the same alert.

    ``meter``: the meter id, ``health``/``login`` for the job's own notices, or
    ``extra_usage`` for the money notices. ``kind``: threshold, reminder, forecast, reset,
    stale, recovered, login, extra_spending or low_balance (the window of these two: the
    spending episode's start, the time the balance fell below the level). ``window``: the span
    of time within which the alert is said once: the usage window (its start, else its
    end) for thresholds, reminders and reset notices, the risk episode's start for a
    forecast, the outage's start for stale and recovered, 0 for login. ``level``: the
    percent of the limit the alert is about (a threshold; the threshold a reminder
    repeats), 0 for alerts about no percent.
    """

    meter: str
    kind: str
    window: float
    level: float


@dataclass(frozen=True)
class Notice:
    """An alert whose text was written when its cause was seen (a reset notice): it is
    owed to ``channels`` until each has it in the ledger."""

    key: DeliveryKey
    severity: str
    title: str
    body: str
    channels: tuple[str, ...]
    since: float


# channel id -> when it was delivered; None: being delivered when the state was saved.
Deliveries = dict[str, float | None]


@dataclass(frozen=True)
class ExtraUsage:
    """What is remembered of the prepaid extra-usage balance (see :mod:`alerter.money`):
    the balance last seen, since when the current episode of spending it began, and since
    when it has been below ``extra_usage.low_balance_usd`` (None: above it, armed)."""

    balance_cents: float | None = None
    spending_since: float | None = None
    low_since: float | None = None


@dataclass
class State:
    """Everything a run remembers. Change a :meth:`copy`, never a loaded original."""

    meters: dict[str, MeterMemory] = field(default_factory=dict)
    health: Health = field(default_factory=Health)
    ledger: dict[DeliveryKey, Deliveries] = field(default_factory=dict)
    notices: tuple[Notice, ...] = ()
    endpoint: dict = field(default_factory=dict)  # which Factory endpoint answered (factory.py)
    credentials: dict | None = None  # what is known of droid's tokens (credentials.LoginMemory)
    channels_checked: str | None = None  # digest of the channel URLs last found valid
    extra_usage: ExtraUsage = field(default_factory=ExtraUsage)
    # The earlier state files already merged into this one (statefile.earlier_tag).
    merged: tuple[str, ...] = ()

    def copy(self) -> State:
        """Return a copy whose records and ledger may be changed without touching this one.

        Meter histories are shared: they are only ever replaced as a whole (see
        :func:`alerter.forecast.add_sample`), and copying every sample on every run would
        cost more than the rest of a decision.
        """
        return replace(
            self,
            meters={mid: replace(m) for mid, m in self.meters.items()},
            health=replace(self.health),
            ledger={key: dict(channels) for key, channels in self.ledger.items()},
        )

    def delivered(self, key: DeliveryKey) -> dict[str, float]:
        """Given an alert's key, return the channels that have it and when they got it."""
        return {c: at for c, at in self.ledger.get(key, {}).items() if at is not None}

    def in_flight(self) -> list[tuple[DeliveryKey, str]]:
        """Return the deliveries marked as being made but never recorded as made."""
        return [(key, c) for key, chans in self.ledger.items() for c, at in chans.items() if at is None]


def record_delivery(state: State, key: DeliveryKey, channel_id: str, at: float | None) -> State:
    """Given the state, an alert's key, a channel and the delivery time, return the new state.

    ``at`` None marks the delivery as about to be made (write-ahead, see :func:`settle`).
    """
    new_state = replace(state, ledger=dict(state.ledger))
    new_state.ledger[key] = {**state.ledger.get(key, {}), channel_id: at}
    return new_state


def settle(state: State) -> State:
    """Return the state without marks of deliveries that were about to be made but were not."""
    if not state.in_flight():
        return state
    ledger = {}
    for key, channels in state.ledger.items():
        made = {c: at for c, at in channels.items() if at is not None}
        if made:
            ledger[key] = made
    return replace(state, ledger=ledger)


def merge_ledger(state: State, other: State) -> State:
    """Given the state and an earlier one, return the state that also holds every delivery
    the earlier one recorded: per alert and channel the newest record wins.

    A usage window is named by the time it was first seen, which two states may have seen a
    few minutes apart: an earlier threshold or reminder of a window within the drift of
    this state's is recorded under this state's name of it. A meter only the earlier state
    knows is taken with its memory (its window, history and episode). A delivery the
    earlier run was about to make but never recorded stays due.
    """
    from alerter.rules import WINDOW_DRIFT_SECONDS

    new = state.copy()
    for meter_id, memory in other.meters.items():
        new.meters.setdefault(meter_id, replace(memory))
    for key, channels in other.ledger.items():
        memory = new.meters.get(key.meter)
        if (
            key.kind in ("threshold", "reminder")
            and memory is not None
            and abs(key.window - memory.window_key) <= WINDOW_DRIFT_SECONDS
        ):
            key = replace(key, window=memory.window_key)
        mine = new.ledger.setdefault(key, {})
        for channel, at in channels.items():
            if at is not None and (mine.get(channel) is None or at > mine[channel]):
                mine[channel] = at
        if not mine:
            del new.ledger[key]
    return new


# --- dump ----------------------------------------------------------------------------------


def dump(state: State) -> dict:
    """Given a state, return its JSON form (version 2)."""
    data: dict[str, Any] = {"version": STATE_VERSION, "meters": {}}
    for meter_id, memory in state.meters.items():
        entry: dict[str, Any] = {"history": memory.history, "peak": memory.peak}
        if memory.window is not None:
            entry["window"] = {"start": memory.window.start, "end": memory.window.end}
            entry["window_key"] = memory.window_key
        if memory.period_seconds is not None:
            entry["period_seconds"] = memory.period_seconds
        if memory.episode is not None:
            ep = memory.episode
            entry["episode"] = {"since": ep.since, "safe_since": ep.safe_since, "safe_last": ep.safe_last}
        data["meters"][meter_id] = entry
    h = state.health
    health: dict[str, Any] = {"failures": h.failures}
    for name in ("failing_since", "last_success", "last_failure", "last_error"):
        if getattr(h, name) is not None:
            health[name] = getattr(h, name)
    if h.last_outage is not None:
        health["last_outage"] = {"since": h.last_outage.since, "failures": h.last_outage.failures}
    if h.failed_runs:
        health["failed_runs"] = [
            [r.at, r.reason, True] if r.login_expired else [r.at, r.reason] for r in h.failed_runs
        ]
    data["health"] = health
    if state.ledger:
        data["ledger"] = [
            {**_key_json(key), "channels": dict(sorted(channels.items()))}
            for key, channels in sorted(state.ledger.items())
        ]
    if state.notices:
        data["notices"] = [
            {
                **_key_json(n.key),
                "severity": n.severity,
                "title": n.title,
                "body": n.body,
                "channels": list(n.channels),
                "since": n.since,
            }
            for n in state.notices
        ]
    if state.endpoint:
        data["endpoint"] = state.endpoint
    if state.credentials:
        data["credentials"] = state.credentials
    if state.channels_checked is not None:
        data["channels_checked"] = state.channels_checked
    if state.extra_usage != ExtraUsage():
        x = state.extra_usage
        data["extra_usage"] = {
            "balance_cents": x.balance_cents,
            "spending_since": x.spending_since,
            "low_since": x.low_since,
        }
    if state.merged:
        data["merged"] = list(state.merged)
    return data


def _key_json(key: DeliveryKey) -> dict:
    return {"meter": key.meter, "kind": key.kind, "window": key.window, "level": key.level}


# --- load ----------------------------------------------------------------------------------


class _Reader:
    """Turns whatever was on disk into records, noting each part it had to drop."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def drop(self, where: str) -> None:
        self.dropped.append(where)

    def mapping(self, value: object, where: str) -> dict:
        if isinstance(value, dict):
            return value
        if value is not None:
            self.drop(where)
        return {}

    def items(self, value: object, where: str) -> list:
        if isinstance(value, list):
            return value
        if value is not None:
            self.drop(where)
        return []

    def number(self, value: object, where: str) -> float | None:
        if value is None:
            return None
        if is_number(value):
            return float(value)
        self.drop(where)
        return None

    def time(self, value: object, where: str) -> float | None:
        seconds = self.number(value, where)
        if seconds is None:
            return None
        if 0 < seconds < 1e11:
            return seconds
        self.drop(where)
        return None

    def text(self, value: object, where: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        self.drop(where)
        return None

    def channels(self, value: object, where: str) -> tuple[str, ...]:
        items = self.items(value, where)
        good = tuple(c for c in items if isinstance(c, str))
        if len(good) != len(items):
            self.drop(where)
        return good


def load(data: object, aliases: Mapping[str, str] | None = None) -> tuple[State, list[str]]:
    """Given JSON read from a state file (version 1 or 2), return (state, parts dropped).

    ``aliases`` maps a channel id the file may know to the id that channel has now
    (:meth:`alerter.config.Config.channel_aliases`: a named channel was its URL's before it
    was its name's), so a channel keeps what it was sent. Never raises: a part of the
    wrong shape is left out and named in the second value.
    """
    r = _Reader()
    top = r.mapping(data, "the whole file")
    version = top.get("version")
    state = State()
    for meter_id, raw in r.mapping(top.get("meters"), "meters").items():
        if not isinstance(meter_id, str) or not isinstance(raw, dict):
            r.drop(f"meters.{meter_id}")
            continue
        state.meters[meter_id] = _meter(r, meter_id, raw)
    state.health = _health(r, r.mapping(top.get("health"), "health"))
    if version == 1:
        _ledger_from_v1(r, top, state)
    else:
        _ledger(r, top, state)
    state.endpoint = r.mapping(top.get("endpoint" if version != 1 else "source"), "endpoint")
    credentials = r.mapping(top.get("credentials"), "credentials")
    state.credentials = credentials or None
    state.channels_checked = r.text(top.get("channels_checked"), "channels_checked")
    extra = r.mapping(top.get("extra_usage"), "extra_usage")
    if extra:
        balance = r.number(extra.get("balance_cents"), "extra_usage.balance_cents")
        state.extra_usage = ExtraUsage(
            balance if balance is None or balance >= 0 else None,
            r.time(extra.get("spending_since"), "extra_usage.spending_since"),
            r.time(extra.get("low_since"), "extra_usage.low_since"),
        )
    state.merged = r.channels(top.get("merged"), "merged")[-MERGED_KEPT:]
    if aliases:
        _rename_channels(state, aliases)
    return state, r.dropped


def _rename_channels(state: State, aliases: Mapping[str, str]) -> None:
    """Record every delivery and owed notice under the channel's id now; where a channel has
    a record under both ids, the newest wins."""
    for key, channels in state.ledger.items():
        renamed: Deliveries = {}
        for channel, at in sorted(channels.items(), key=lambda item: item[1] or 0.0):
            renamed[aliases.get(channel, channel)] = at
        state.ledger[key] = renamed
    state.notices = tuple(
        replace(n, channels=tuple(dict.fromkeys(aliases.get(c, c) for c in n.channels)))
        for n in state.notices
    )


def _window(r: _Reader, value: object, where: str) -> Window | None:
    raw = r.mapping(value, where)
    if not raw:
        return None
    return Window(r.number(raw.get("start"), where), r.number(raw.get("end"), where))


def _meter(r: _Reader, meter_id: str, raw: dict) -> MeterMemory:
    from alerter.forecast import clean_history

    where = f"meters.{meter_id}"
    history = raw.get("history")
    memory = MeterMemory(
        window=_window(r, raw.get("window"), f"{where}.window"),
        history=clean_history(history),
        period_seconds=r.number(raw.get("period_seconds"), f"{where}.period_seconds"),
        peak=r.number(raw.get("peak"), f"{where}.peak") or 0.0,
    )
    key = r.number(raw.get("window_key"), f"{where}.window_key")
    if key is None and memory.window is not None:
        key = memory.window.ident  # version 1 kept no key: the window as last seen names it
    memory.window_key = key or 0.0
    episode = raw.get("episode")
    if episode is None and isinstance(raw.get("forecast"), dict):  # version 1
        forecast = raw["forecast"]
        episode = forecast.get("episode")
        if isinstance(episode, dict):
            episode = {
                **episode,
                "safe_since": forecast.get("safe_since"),
                "safe_last": forecast.get("safe_last"),
            }
    episode = r.mapping(episode, f"{where}.episode")
    since = r.time(episode.get("since"), f"{where}.episode")
    if since is not None:
        memory.episode = Episode(
            since,
            r.time(episode.get("safe_since"), f"{where}.episode"),
            r.time(episode.get("safe_last"), f"{where}.episode"),
        )
    return memory


def _health(r: _Reader, raw: dict) -> Health:
    runs = []
    for record in r.items(raw.get("failed_runs"), "health.failed_runs")[-FAILED_RUNS_KEPT:]:
        if isinstance(record, list) and len(record) in (2, 3) and isinstance(record[1], str):
            at = r.time(record[0], "health.failed_runs")
            if at is not None:
                runs.append(FailedRun(at, record[1], len(record) == 3 and record[2] is True))
                continue
        r.drop("health.failed_runs")
    outage = r.mapping(raw.get("last_outage"), "health.last_outage")
    failures = r.number(raw.get("failures"), "health.failures") or 0
    if not 0 <= failures <= MAX_COUNT:
        r.drop("health.failures")
        failures = 0
    return Health(
        failures=int(failures),
        failing_since=r.time(raw.get("failing_since"), "health.failing_since"),
        last_success=r.time(raw.get("last_success"), "health.last_success"),
        last_failure=r.time(raw.get("last_failure"), "health.last_failure"),
        last_error=r.text(raw.get("last_error"), "health.last_error"),
        last_outage=Outage(
            r.time(outage.get("since"), "health.last_outage"),
            int(min(max(r.number(outage.get("failures"), "health.last_outage") or 0, 0), MAX_COUNT)),
        )
        if outage
        else None,
        failed_runs=tuple(runs),
    )


def _key(r: _Reader, raw: dict, where: str) -> DeliveryKey | None:
    meter, kind = raw.get("meter"), raw.get("kind")
    window, level = raw.get("window"), raw.get("level")
    if isinstance(meter, str) and isinstance(kind, str) and is_number(window) and is_number(level):
        return DeliveryKey(meter, kind, float(window), float(level))
    r.drop(where)
    return None


def _ledger(r: _Reader, top: dict, state: State) -> None:
    for raw in r.items(top.get("ledger"), "ledger"):
        key = _key(r, r.mapping(raw, "ledger"), "ledger")
        if key is None:
            continue
        channels: Deliveries = {}
        for channel, at in r.mapping(raw.get("channels"), "ledger.channels").items():
            if at is None or is_number(at):
                channels[channel] = None if at is None else float(at)
            else:
                r.drop("ledger.channels")
        state.ledger[key] = channels
    notices = []
    for raw in r.items(top.get("notices"), "notices"):
        raw = r.mapping(raw, "notices")
        key = _key(r, raw, "notices")
        title, body = r.text(raw.get("title"), "notices"), r.text(raw.get("body"), "notices")
        since = r.time(raw.get("since"), "notices")
        severity = raw.get("severity")
        if key is None or title is None or body is None or since is None:
            continue
        severity = severity if severity in ("info", "warning", "critical") else "info"
        notices.append(Notice(key, severity, title, body, r.channels(raw.get("channels"), "notices"), since))
    state.notices = tuple(notices)


def _ledger_from_v1(r: _Reader, top: dict, state: State) -> None:
    """Read version 1's scattered records of what was sent into the ledger."""
    fallback = state.health.last_success or 0.0
    for meter_id, raw in r.mapping(top.get("meters"), "meters").items():
        memory = state.meters.get(meter_id)
        if memory is None or not isinstance(raw, dict):
            continue
        window = memory.window_key
        reminded = r.mapping(raw.get("reminded"), f"meters.{meter_id}.reminded")
        for channel, level in r.mapping(raw.get("sent"), f"meters.{meter_id}.sent").items():
            if not is_number(level) or level <= 0:
                r.drop(f"meters.{meter_id}.sent")
                continue
            at = reminded.get(channel)
            at = float(at) if is_number(at) else fallback
            key = DeliveryKey(meter_id, "threshold", window, float(level))
            state.ledger.setdefault(key, {})[channel] = at
            if is_number(reminded.get(channel)) and level >= 100:
                state.ledger.setdefault(DeliveryKey(meter_id, "reminder", window, float(level)), {})[
                    channel
                ] = at
        forecast = raw.get("forecast")
        episode = forecast.get("episode") if isinstance(forecast, dict) else None
        if memory.episode is not None and isinstance(episode, dict):
            key = DeliveryKey(meter_id, "forecast", memory.episode.since, 0.0)
            for channel in r.channels(episode.get("sent"), f"meters.{meter_id}.forecast"):
                state.ledger.setdefault(key, {})[channel] = memory.episode.since
    health = r.mapping(top.get("health"), "health")
    told = r.channels(health.get("stale_sent"), "health.stale_sent")
    if told:
        since = state.health.failing_since or 0.0
        state.ledger[DeliveryKey("health", "stale", since, 0.0)] = dict.fromkeys(told, since)
    login = r.mapping(top.get("login"), "login")
    told = r.channels(login.get("expired_sent"), "login.expired_sent")
    if told:
        state.ledger[DeliveryKey("login", "login", 0.0, 0.0)] = dict.fromkeys(told, fallback)
    notices = []
    for raw in r.items(top.get("pending"), "pending"):
        raw = r.mapping(raw, "pending")
        meter, title, body = raw.get("meter"), raw.get("title"), raw.get("body")
        if raw.get("kind") != "reset" or not all(isinstance(x, str) for x in (meter, title, body)):
            r.drop("pending")
            continue
        since = r.time(raw.get("since"), "pending") or fallback
        # Version 1 kept no key of the window that reset; the time it was seen names it.
        key = DeliveryKey(meter, "reset", since, 0.0)
        notices.append(Notice(key, "info", title, body, r.channels(raw.get("channels"), "pending"), since))
    state.notices = tuple(notices)


# --- the file ------------------------------------------------------------------------------


def load_state(path: Path, keep_aside: bool = True, aliases: Mapping[str, str] | None = None) -> State:
    """Given the state path, return what it remembers; a missing file gives a fresh state.

    A file that is not JSON, or from a newer version, is moved aside with a warning; a
    part of the wrong shape is dropped with a warning; a file open to others is made 0600
    (moving and tightening are left out when ``keep_aside`` is False, as a dry run
    changes nothing). ``aliases``: see :func:`load`. Raise StateError when the file or its
    directory is unsafe or odd (see ``statefile``).
    """
    raw = read_private(path, tighten=keep_aside)
    if raw is None:
        return State()
    problem, data = _parse(raw)
    if problem is None:
        state, dropped = load(data, aliases)
        if dropped:
            shown = ", ".join(sorted(set(dropped))[:5]) + (" ..." if len(set(dropped)) > 5 else "")
            log.warning("state file %s: ignored what was not understood (%s)", path, shown)
        return state
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    if not keep_aside:
        kept = "left it in place"
    else:
        try:
            os.replace(path, aside)
            kept = f"kept a copy as {aside.name}"
        except OSError:
            kept = "could not keep a copy"
    log.warning(
        "state file %s %s; %s and starting afresh (this period's alerts may repeat once)",
        path,
        problem,
        kept,
    )
    return State()


def _parse(raw: bytes) -> tuple[str | None, object]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "is not valid JSON (corrupt or truncated)", None
    if not isinstance(data, dict) or not is_number(data.get("version")):
        return "has no version", None
    if data["version"] > STATE_VERSION:
        return f"is from a newer version ({data['version']})", None
    if data["version"] < 1:
        return "has an unknown layout", None
    return None, data


def save_state(path: Path, state: State) -> None:
    """Given the state path and the state, write it atomically with mode 0600.

    Raise StateError naming the file and the fix when it cannot be written.
    """
    ensure_private_dir(path.parent)
    data = json.dumps(dump(state), sort_keys=True, separators=(",", ":")).encode("utf-8")
    try:
        write_atomic(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free some space on the file system of {shlex.quote(str(path.parent))}"
        else:
            fix = f"make {shlex.quote(str(path.parent))} writable or set state_file to a writable path"
        raise StateError(f"{path}: cannot save the state ({exc.strerror}); {fix}") from None
    _remove_leftovers(path)


def carry_over(
    path: Path, earlier: Sequence[Path], aliases: Mapping[str, str] | None = None, *, shared: bool = True
) -> None:
    """Given the state path (its lock held) and where earlier releases kept the state, merge
    what each earlier state file says was delivered into the state, once, so that an
    upgrade repeats no alert.

    With no state at the path yet the newest earlier state becomes it (its history and
    health too); the ledgers of the others are merged into it (:func:`merge_ledger`),
    also when a state is already there: an earlier release run by hand and by its unit kept
    two. The state remembers which version of each file it merged, so the next run merges
    nothing, and a file an older unit still writes is merged again once it has changed.
    The earlier files are left as they were. One that cannot be read is named in a warning.
    ``aliases``: see :func:`load`. ``shared``: the state is the one every way of starting
    the job uses (not an old unit's own). Raise StateError when the state cannot be read or
    saved.
    """
    state, said = _carried(path, earlier, aliases, keep_aside=True)
    if state is None or not said:
        return
    save_state(path, state)
    why = ", the one state every way of starting the job now uses" if shared else ""
    for line in said:
        if line:
            log.info("%s%s", line, why)


def state_with_earlier(
    path: Path, earlier: Sequence[Path], aliases: Mapping[str, str] | None = None
) -> State:
    """Given the state path and the earlier places, return the state a real run would have
    after :func:`carry_over`, changing nothing on disk (a dry run)."""
    state, _ = _carried(path, earlier, aliases, keep_aside=False)
    return state if state is not None else load_state(path, keep_aside=False, aliases=aliases)


def _carried(
    path: Path, earlier: Sequence[Path], aliases: Mapping[str, str] | None, *, keep_aside: bool
) -> tuple[State | None, list[str]]:
    """Return (the state with the earlier files not yet merged merged in, or None when
    there is nothing to merge into; a line per file looked at, "" for one left out)."""
    found = earlier_states(path, earlier)
    if not found:
        return None, []
    exists = os.path.lexists(path)
    state = load_state(path, keep_aside=keep_aside, aliases=aliases) if exists else None
    done = set(state.merged) if state is not None else set()
    tags, said = [], []
    for source, info in reversed(found):  # the newest first: it becomes the state if none is
        try:
            data = read_private(source, tighten=False)
        except StateError as exc:
            log.warning("not carrying over an earlier state: %s", exc)
            continue
        if data is None:
            continue
        tag = earlier_tag(source, info, data)
        if tag in done:
            continue
        tags.append(tag)
        problem, parsed = _parse(data)
        if problem is not None:
            log.warning("not carrying over the earlier state %s: it %s", source, problem)
            said.append("")
            continue
        other, _ = load(parsed, aliases)
        if state is None:
            state = replace(other, merged=())
            said.append(f"carried the state over from {source} to {path}")
        else:
            state = merge_ledger(state, other)
            said.append(f"merged the alerts already sent from {source} into {path}")
    if state is None or not tags:
        return state, []
    return replace(state, merged=(*state.merged, *tags)[-MERGED_KEPT:]), said


def take_over_login_state(
    state: State, path: Path, config: Config, login: Mapping[str, Any] | None, aliases: Mapping[str, str]
) -> State:
    """Given an account's state, its path, its Config, what its run just learnt of its login
    (``LoginMemory.dump()``) and the channel aliases, return the state with what the single
    login's state before ``accounts:`` says was sent merged in, when that state records
    this account's login (:func:`alerter.credentials.identity.same_login`).

    Not by the account's place in the list: a new account listed first would otherwise
    take over another login's alerts, and that login's account would send them again.
    A state that records no login is taken over by none (the first account says so once).
    Each version of a file is looked at once (its tag joins ``merged``). Reads only.
    """
    from alerter.credentials.identity import LoginMemory, same_login

    found = earlier_states(path, config.login_states)
    done = set(state.merged)
    mine = LoginMemory.load(login)
    tags = []
    for source, info in found:
        try:
            data = read_private(source, tighten=False)
        except StateError as exc:
            log.warning("account %s: not taking over an earlier state: %s", config.account, exc)
            continue
        if data is None or (tag := earlier_tag(source, info, data)) in done:
            continue
        tags.append(tag)
        problem, parsed = _parse(data)
        if problem is not None:
            continue  # a run without accounts: would have kept it aside; nothing to take
        other, _ = load(parsed, aliases)
        verdict = same_login(LoginMemory.load(other.credentials), mine)
        if verdict:
            state = merge_ledger(state, other)
            log.info(
                "account %s: took over the alerts already sent from %s, the state of its login "
                "before accounts:",
                config.account,
                source,
            )
        elif verdict is None and config.first_account:
            log.warning(
                "%s, the state from before accounts:, does not record which login it was; no "
                "account takes it over (its alerts of this period may be sent once more)",
                source,
            )
    if not tags:
        return state
    return replace(state, merged=(*state.merged, *tags)[-MERGED_KEPT:])


def _remove_leftovers(path: Path, older_than: float = 600.0) -> None:
    """Remove temp files that a killed run left behind (runs hold the lock, so none is live)."""
    cutoff = time.time() - older_than
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
