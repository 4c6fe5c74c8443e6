"""Replay recorded observations through the same evaluation as ``run``.

A trace is JSON Lines, one observation a line, in time order::

    {"at": 1764000000000, "usage": <the "usage" object of subscription/usage>}
    {"at": 1764000300000, "limits": <the body of billing/limits>}
    {"at": 1764000600000, "error": "Factory API answered HTTP 503 ..."}

The last kind is a run that could not read usage (``"login_expired": true`` when droid's
login had ended). A line may name its account (``"account": "work"``, as ``history
--jsonl`` writes for a config with ``accounts:``); each account is replayed on its own,
with its own settings. ``replay`` is a loop over the observations through the same decision as
``run`` (:func:`alerter.decide.decide`), with the clock set to each ``at``: the state
lives in memory, every channel counts as delivered, nothing is sent. An answer the job
would reject counts as a failed run, as it does in ``run``. ``export_history`` goes the
other way: it turns the history kept in the state file, failed runs included, back into
observations of the same format, so a user can replay their own past.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from alerter.config import Config, is_account_name
from alerter.decide import Failure, decide
from alerter.decide import Observation as Observed
from alerter.errors import ConfigError
from alerter.meters import WINDOW_KEYS, BadAnswer, Reading, is_number, parse_limits, parse_usage
from alerter.state import State, record_delivery

# Unix milliseconds from 2001 to 2096: anything else is seconds, or not a time at all.
AT_RANGE = (1e12, 4e12)
WINDOW_FIELDS = {suffix: key for key, suffix in WINDOW_KEYS}


class TraceError(ConfigError):
    """A trace line is not an observation (exit 2, like any bad input file)."""


@dataclass(frozen=True)
class Observation:
    """One recorded answer: when (unix ms), which endpoint, and its body."""

    at: int
    kind: str  # "usage", "limits", or "error" (a run that could not read usage)
    body: dict
    account: str | None = None  # the account it was observed for, when the trace names one

    def reading(self) -> Reading:
        """Return the Reading the job would have made of it. Raise BadAnswer."""
        if self.kind == "usage":
            return parse_usage({"usage": self.body})
        if self.kind == "error":
            raise BadAnswer(str(self.body.get("error")))
        return parse_limits(self.body, self.at / 1000.0)

    def observed(self) -> Observed:
        """Return what a run at this time observed: a Reading, or the Failure it ended in."""
        if self.kind == "error":
            return Failure(str(self.body.get("error")), bool(self.body.get("login_expired")))
        try:
            return self.reading()
        except BadAnswer as exc:
            return Failure(str(exc))


@dataclass(frozen=True)
class Notification:
    """One notification that would have been sent."""

    at: int
    meter: str
    kind: str
    severity: str
    title: str
    body: str
    account: str | None = None

    def as_json(self) -> dict:
        """Return the notification as the dict ``backtest --json`` prints."""
        named = {"account": self.account} if self.account is not None else {}
        return named | {
            "at": self.at,
            "meter": self.meter,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "body": self.body,
        }


@dataclass(frozen=True)
class Replay:
    """What a replay produced."""

    notifications: tuple[Notification, ...]
    observations: int
    skipped: tuple[str, ...]  # "line N: why", for observations the job would have rejected
    state: State


# --- reading a trace -------------------------------------------------------------------------


def parse_line(text: str, where: str) -> Observation | None:
    """Given one trace line, return its Observation (None for a blank line). Raise TraceError."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise TraceError(f"{where}: not a JSON object") from None
    if not isinstance(data, dict):
        raise TraceError(f"{where}: not a JSON object")
    at = data.get("at")
    if not is_number(at):
        raise TraceError(f'{where}: "at" must be a time in unix milliseconds')
    if not AT_RANGE[0] <= at <= AT_RANGE[1]:
        hint = " (it looks like seconds)" if 1e9 <= at < 1e11 else ""
        raise TraceError(f'{where}: "at" is not a time in unix milliseconds{hint}: {at!r}')
    account = data.get("account")
    if account is not None and not is_account_name(account):
        raise TraceError(f'{where}: "account" must be an account\'s name (letters, digits, ".", "_", "-")')
    kinds = [key for key in ("usage", "limits", "error") if key in data]
    if len(kinds) != 1:
        raise TraceError(f'{where}: needs exactly one of "usage", "limits" or "error"')
    kind = kinds[0]
    if kind == "error":
        if not isinstance(data["error"], str) or not isinstance(data.get("login_expired", False), bool):
            raise TraceError(f'{where}: "error" must be text (and "login_expired" true or false)')
        failed = {"error": data["error"], "login_expired": data.get("login_expired", False)}
        return Observation(int(at), "error", failed, account)
    body = data[kind]
    if not isinstance(body, dict):
        raise TraceError(f'{where}: "{kind}" must be a JSON object')
    if kind == "limits" and not isinstance(body.get("limits"), dict):
        body = {"limits": body}  # the inner object alone is accepted too
    if kind == "usage" and isinstance(body.get("usage"), dict) and "startDate" not in body:
        body = body["usage"]  # the whole answer of subscription/usage is accepted too
    return Observation(int(at), kind, body, account)


def read_trace(lines: Iterable[str], name: str) -> list[Observation]:
    """Given the lines of a trace, return its observations. Raise TraceError naming the line.

    Each account's observations must be in time order (one account's may follow another's).
    """
    observations: list[Observation] = []
    last: dict[str | None, int] = {}
    for number, line in enumerate(lines, 1):
        observation = parse_line(line, f"{name}:{number}")
        if observation is None:
            continue
        if observation.at < last.get(observation.account, 0):
            whose = f" of account {observation.account!r}" if observation.account is not None else ""
            raise TraceError(f"{name}:{number}: goes back in time; observations{whose} must be in time order")
        last[observation.account] = observation.at
        observations.append(observation)
    return observations


def by_account(observations: Iterable[Observation]) -> dict[str | None, list[Observation]]:
    """Given observations, return them by account (None: unnamed), in order of first appearance."""
    groups: dict[str | None, list[Observation]] = {}
    for observation in observations:
        groups.setdefault(observation.account, []).append(observation)
    return groups


def config_for(config: Config, account: str | None) -> Config:
    """Given the config and an account a trace names, return the settings to replay it with:
    the account's own, or the config's own (named after the account) when it has no such one."""
    if account is None:
        return config
    for entry in config.accounts:
        if entry.name == account:
            return entry.config
    return dataclasses.replace(config, account=account)


# --- replaying -------------------------------------------------------------------------------


def replay(observations: Iterable[Observation], config: Config, state: State | None = None) -> Replay:
    """Given observations and the config, return what ``run`` at each ``at`` would have sent."""
    state = State() if state is None else state
    notifications: list[Notification] = []
    skipped: list[str] = []
    count = 0
    for count, observation in enumerate(observations, 1):
        observed = observation.observed()
        if isinstance(observed, Failure) and observation.kind != "error":
            skipped.append(f"observation {count}: {observed.reason} (a failed run)")
        now = observation.at / 1000.0
        decision = decide(state, observed, config, now)
        state = decision.state
        for alert in decision.send:  # held ones stay due in the state
            notifications.append(
                Notification(
                    observation.at,
                    alert.meter_id,
                    alert.kind,
                    alert.severity,
                    alert.title,
                    alert.body,
                    config.account,
                )
            )
            for channel_id in alert.channels:
                state = record_delivery(state, alert.key, channel_id, now)
    return Replay(tuple(notifications), count, tuple(skipped), state)


def replay_each(observations: Iterable[Observation], config: Config) -> Replay:
    """Given a trace's observations and the config, replay each account the trace names on
    its own, with its own settings (:func:`config_for`); return all their notifications in
    time order. The state returned is the last account's."""
    groups = by_account(observations)
    if len(groups) <= 1:
        account, group = next(iter(groups.items()), (None, []))
        return replay(group, config_for(config, account))
    notes: list[Notification] = []
    skipped: list[str] = []
    count, state = 0, State()
    for account, group in groups.items():
        result = replay(group, config_for(config, account))
        notes.extend(result.notifications)
        skipped.extend(f"account {account or '(unnamed)'}: {why}" for why in result.skipped)
        count, state = count + result.observations, result.state
    notes.sort(key=lambda note: note.at)  # stable: at the same time, in the accounts' order
    return Replay(tuple(notes), count, tuple(skipped), state)


def render(result: Replay) -> str:
    """Given a replay, return it as text: each notification with its (local) time."""
    lines = []
    for note in result.notifications:
        when = datetime.fromtimestamp(note.at / 1000).astimezone().strftime("%a %Y-%m-%d %H:%M")
        lines.append(f"{when}  {note.kind} ({note.severity}) {note.meter}")
        lines.append(f"  {note.title}")
        lines.extend(f"  {line}" for line in note.body.splitlines())
        lines.append("")
    total = len(result.notifications)
    summary = f"{total} notification{'s' if total != 1 else ''} from {result.observations} observations"
    if result.skipped:
        summary += f" ({len(result.skipped)} unusable: Factory's answer, counted as a failed run)"
    lines.append(summary)
    return "\n".join(lines)


# --- exporting the history -------------------------------------------------------------------


def export_history(state: State) -> list[dict]:
    """Given a state, return the observations its history holds, in trace format, oldest first.

    History is thinned with age, so older observations are sparser than the runs were.
    Meters of one reading share their sample times and are put back together.
    """
    usage: dict[tuple, dict] = {}
    limits: dict[int, dict] = {}
    for meter_id, saved in sorted(state.meters.items()):
        for segment in saved.history:
            for t, value in segment["samples"]:
                t = int(t)
                if "." in meter_id:
                    _add_limit(limits, meter_id, segment, t, value)
                else:
                    _add_usage(usage, meter_id, segment, t, value)
    lines = [{"at": t * 1000, "limits": body} for t, body in limits.items()]
    for (t, *_), body in usage.items():
        if "standard" in body:  # subscription/usage always has a standard bucket
            lines.append({"at": t * 1000, "usage": body})
    for run in state.health.failed_runs:
        line: dict = {"at": int(round(run.at * 1000)), "error": run.reason}
        if run.login_expired:
            line["login_expired"] = True
        lines.append(line)
    lines.sort(key=lambda line: line["at"])
    return lines


def _ms(seconds: Any) -> int | None:
    return int(round(seconds * 1000)) if isinstance(seconds, (int, float)) else None


def _add_usage(lines: dict, meter_id: str, segment: dict, t: int, value: float) -> None:
    start, end = _ms(segment.get("start")), _ms(segment.get("end"))
    if start is None:
        return
    body = lines.setdefault((t, start, end), {"startDate": start, "endDate": end})
    scale = segment.get("scale") or 1
    used = value if scale != 1 else None
    body[meter_id] = {
        "orgTotalTokensUsed": used,
        "totalAllowance": scale,
        "basicAllowance": scale,
        "usedRatio": value / scale,
    }


def _add_limit(lines: dict, meter_id: str, segment: dict, t: int, value: float) -> None:
    pool, _, suffix = meter_id.partition(".")
    field = WINDOW_FIELDS.get(suffix)
    end = segment.get("end")
    if field is None or not isinstance(end, (int, float)):
        return
    body = lines.setdefault(t, {"limits": {}})
    window_end = datetime.fromtimestamp(end, timezone.utc).isoformat().replace("+00:00", "Z")
    body["limits"].setdefault(pool, {})[field] = {"usedPercent": value, "windowEnd": window_end}
