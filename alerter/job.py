"""One run of the job, top to bottom; every side effect is injected or at this edge.

::

    lock the state ─ start the deadline ─ load it ─ fetch (login -> Factory -> meters, or
    why not) ─ decide ─ save the decided state first (a state that cannot be saved sends
    nothing) ─ for each delivery: send, record, save (stop signals held across the three)
    ─ metrics ─ healthcheck

``fetch(state, now)`` and ``send(channel, alert)`` are passed in: the CLI passes the real
Factory client and apprise, tests pass stand-ins. The decision itself is
:func:`alerter.decide.decide`; nothing here chooses what to send.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerter.config import Config, QuietHours
from alerter.decide import Decision, Failure, Observation, decide
from alerter.errors import (
    AlerterError,
    AuthError,
    ConfigError,
    DeliveryError,
    StateBusy,
    StateError,
    reason_of,
)
from alerter.meters import Reading
from alerter.rules import Alert
from alerter.state import (
    State,
    carry_over,
    load_state,
    locked,
    record_delivery,
    save_state,
    settle,
    state_with_earlier,
    take_over_login_state,
)
from alerter.statefile import check_usable
from alerter.stopping import stop_deferred

log = logging.getLogger(__name__)

# Past the deadline, the notifications still due share this much time: a read that used
# up the deadline must still be able to say that the job is not working.
DELIVERY_FLOOR_SECONDS = 2.0


class Deadline:
    """The run's wall-clock deadline, which starts when the run holds its state lock.

    Waiting for the lock is not the run's time: a run that waited for another one still
    gives Factory, WorkOS and the channels the whole ``seconds`` (a run that never gets
    the lock is StateBusy, bounded by its own wait). With ``accounts:`` each account has
    its own lock, so each account's deadline starts when it has its own lock.

    Past the deadline the notifications still due share one floor of
    DELIVERY_FLOOR_SECONDS, counted from the first one that found too little time left:
    every (alert, channel) pair ends by then, however many channels are silent.

    ``clock`` is a ``time.monotonic()``-like clock (tests inject one).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._at: float | None = None
        self._floor_ends: float | None = None

    def start(self) -> None:
        """Start the run's time now (the lock is held, or none is needed)."""
        self._at = self._clock() + self.seconds
        self._floor_ends = None

    @property
    def at(self) -> float:
        """The deadline, a monotonic time; before :meth:`start`, counted from now."""
        return self._at if self._at is not None else self._clock() + self.seconds

    def for_delivery(self) -> float:
        """Return the time by which the next notification must be delivered: the deadline,
        or the end of the one floor the notifications still due share past it."""
        at = self.at
        if self._floor_ends is None:
            now = self._clock()
            if now + DELIVERY_FLOOR_SECONDS <= at:
                return at
            self._floor_ends = now + DELIVERY_FLOOR_SECONDS
        return max(at, self._floor_ends)


@dataclass(frozen=True)
class Fetched:
    """What a run learnt from Factory: the observation, the error behind a failure (raised
    again once the run is recorded), and what the fetch wants remembered: ``State`` fields
    and their new values (the endpoint that answered, what is known about droid's tokens)."""

    observation: Observation
    error: BaseException | None = None
    remember: Mapping[str, Any] = field(default_factory=dict)


Fetch = Callable[[State, float], Fetched]
Send = Callable[[Any, Alert], bool]  # (channel, alert) -> delivered
CheckChannels = Callable[[Config, State], tuple[State, dict[str, str]]]  # -> (state, {id: why unusable})


@dataclass(frozen=True)
class Shell:
    """The side effects of a run: reading usage, sending, checking channel URLs, pinging.

    ``check_channels(config, state)`` returns the state (remembering a check that found
    every URL usable) and {channel id: why it cannot be used}.
    """

    fetch: Fetch
    send: Send
    check_channels: CheckChannels = lambda config, state: (state, {})
    ping: Callable[[str], None] = lambda event: None
    write_metrics: Callable[[Observation, Decision, State], None] | None = None
    # Started once the run holds the state lock; fetch, send and ping read it then.
    deadline: Deadline | None = None


def run(config: Config, shell: Shell, clock: Callable[[], float], *, dry_run: bool = False) -> Decision:
    """Run the job once; return its Decision.

    Raise the read's own error (AuthError, UpstreamError, ...) after a failed read has been
    recorded and its notices sent; ConfigError when a channel's URL cannot be used (the
    others were used); DeliveryError when a channel failed; StateError when the
    state cannot be saved (then nothing was sent); StateBusy when another run holds the lock.
    """
    if dry_run:
        check_usable(config.state_file)  # what a real run would refuse, found without writing
        state = state_with_earlier(config.state_file, config.earlier_state_files, config.channel_aliases())
        if shell.deadline is not None:
            shell.deadline.start()
        return _once(config, shell, clock, state, dry_run=True)
    try:
        # The wait for the lock has its own bound: the run's deadline starts once it is held.
        with locked(config.state_file, timeout=config.deadline_seconds):
            if shell.deadline is not None:
                shell.deadline.start()
            # Pinged only once the lock is held: a run skipped for a busy lock is not a run.
            shell.ping("start")
            aliases = config.channel_aliases()
            carry_over(
                config.state_file, config.earlier_state_files, aliases, shared=not config.old_unit_state
            )
            state = load_state(config.state_file, aliases=aliases)
            decision = _once(config, shell, clock, state, dry_run=False)
    except StateBusy:
        raise
    except BaseException:
        # Also when the lock itself cannot be had (a read-only file system, an unsafe
        # directory): the run failed, and monitoring must hear it, not only miss a ping.
        shell.ping("fail")
        raise
    shell.ping("success")
    return decision


def _once(config: Config, shell: Shell, clock: Callable[[], float], state: State, dry_run: bool) -> Decision:
    now = clock()
    interrupted = state.in_flight()
    if interrupted:
        log.warning(
            "a run ended while sending %d notification(s) and could not record them; they are due again",
            len(interrupted),
        )
        state = settle(state)
    fetched = shell.fetch(state, now)
    if fetched.remember:
        state = dataclasses.replace(state, **fetched.remember)
    observation = fetched.observation
    if config.login_states and isinstance(observation, Reading):
        # Only now is the account's login known: it decides whether the state of the
        # single login before accounts: is this account's to take over.
        login = fetched.remember.get("credentials")
        state = take_over_login_state(state, config.state_file, config, login, config.channel_aliases())
    if isinstance(observation, Reading):
        # A run with nothing to say prints nothing (cron mails whatever a job prints).
        log.debug("usage from %s: %s", _endpoint(observation), _summary(observation))
    state, unusable = shell.check_channels(config, state)
    decision = decide(state, observation, config, now)
    if isinstance(observation, Failure):
        failures = decision.state.health.failures
        log.warning("could not read usage (%d failed run%s in a row)", failures, "" if failures == 1 else "s")
    if decision.held and config.quiet_hours is not None:
        until = QuietHours.text(config.quiet_hours.end)
        prefix = "[dry-run] " if dry_run else ""
        log.info("%squiet hours: holding %d notification(s) until %s", prefix, len(decision.held), until)
    if dry_run:
        _show(decision.send, config)
        return _finish(fetched, decision, set(), _skip(config, unusable))
    skipped = _skip(config, unusable)
    # Write-ahead: what is about to be sent is marked as being sent, and saved, first.
    intent = decision.state
    for alert in decision.send:
        for channel_id in alert.channels:
            if channel_id not in unusable:
                intent = record_delivery(intent, alert.key, channel_id, None)
    _save(config.state_file, intent, before_sending=True)
    state, failed = _deliver(decision.send, intent, config, shell.send, now, set(unusable))
    settled = settle(state)  # a failed delivery stays due
    if settled != state:
        _save(config.state_file, settled, before_sending=False)
    state = settled
    if shell.write_metrics is not None:
        shell.write_metrics(observation, decision, state)
    return _finish(fetched, dataclasses.replace(decision, state=state), failed, skipped)


def _skip(config: Config, unusable: dict[str, str]) -> list[str]:
    """Name each channel that cannot be used, in one line each; return their labels."""
    labels = []
    for channel in config.channels:
        if channel.id in unusable:
            log.error("channel %s: skipped: %s", channel.label, unusable[channel.id])
            labels.append(channel.label)
    return labels


def _finish(fetched: Fetched, decision: Decision, failed: set[str], skipped: list[str]) -> Decision:
    if fetched.error is not None:
        raise fetched.error
    if skipped:
        also = f"; could not deliver to {', '.join(sorted(failed))} either" if failed else ""
        raise ConfigError(
            f"cannot use {', '.join(skipped)} (skipped; the other channels were used){also}; "
            "fix the config (`factory-usage-alert check-config` says why)"
        )
    if failed:
        raise DeliveryError(
            f"could not deliver to {', '.join(sorted(failed))}; it will be retried on the next run "
            "(try the channel with `test-notify`)"
        )
    return decision


def _save(path: Path, state: State, *, before_sending: bool) -> None:
    """Save the state; a state that cannot be saved says what that means for the alerts."""
    try:
        save_state(path, state)
    except StateError as exc:
        consequence = (
            "nothing was sent (it would be sent again on every run)"
            if before_sending
            else "what was just sent may be sent once more"
        )
        raise StateError(f"{exc}; {consequence}") from None


def _deliver(
    alerts: tuple[Alert, ...], state: State, config: Config, send: Send, now: float, skip: set[str]
) -> tuple[State, set[str]]:
    """Send each alert to each of its channels; record and save each delivery as it succeeds.

    A stop signal waits until the delivery under way is sent, recorded and saved; no new
    one begins after it (StopRequested). What was not delivered stays marked in flight in
    the saved state, so the next run sends it. Only the delivery in flight can arrive
    twice: SIGKILL before its save, or a channel that took it without answering in time.
    """
    channels = {ch.id: ch for ch in config.delivery_channels()}
    failed: set[str] = set()
    for alert in alerts:
        for channel_id in alert.channels:
            channel = channels.get(channel_id)
            if channel is None or channel_id in skip:
                continue
            with stop_deferred(f"the delivery to {channel.label}"):
                if not send(channel, alert):
                    failed.add(channel.label)
                    continue
                state = record_delivery(state, alert.key, channel_id, now)
                # At once: a run killed later must not send this one again.
                _save(config.state_file, state, before_sending=False)
            if channel.url is not None:  # on stdout the alert itself is what was said
                # The title the channel shows, not the ledger's words ("stale alert for health")
                log.info('sent "%s" to %s', alert.title, channel.label)
    return state, failed


def _show(alerts: tuple[Alert, ...], config: Config) -> None:
    channels = {ch.id: ch for ch in config.delivery_channels()}
    for alert in alerts:
        names = ", ".join(channels[c].label for c in alert.channels if c in channels)
        print(f"[dry-run] would send ({alert.severity}) to {names}:\n{alert.title}\n{alert.body}\n")


def _endpoint(reading: Reading) -> str:
    return "billing/limits" if reading.endpoint == "limits" else "subscription/usage"


def _summary(reading: Reading) -> str:
    return ", ".join(f"{m.id} {m.percent:.1f}%" for m in reading.meters if m.active) or "no meters"


# --- the real fetch: droid's login or an API key, then Factory -------------------------


def fetch_from_factory(
    config: Config, env: Mapping[str, str], deadline: Deadline, *, may_renew: bool = True
) -> Fetch:
    """Given the config, return the fetch that reads usage from Factory by the run's
    ``deadline`` (read when the fetch runs, once the run holds its lock).

    Whatever goes wrong (a typed error, or one nobody foresaw) is a Failure carrying the
    error: the run is counted as failed, and the error is raised again at the end.
    """
    from alerter.credentials import LoginMemory
    from alerter.factory import connect, fetch_reading

    def fetch(state: State, now: float) -> Fetched:
        known = LoginMemory.load(state.credentials)
        client = None
        try:
            client = connect(config, env, deadline.at, memory=known, may_renew=may_renew)
            reading, endpoint = fetch_reading(client, config.endpoint, state.endpoint, now)
        except Exception as exc:  # whatever went wrong, it is a failed run, counted as such
            learned = client.login.memory if client is not None else known
            if isinstance(exc, AuthError) and exc.dead_refresh:
                learned = dataclasses.replace(learned, dead=exc.dead_refresh)
            reason = reason_of(exc)
            expired = isinstance(exc, AuthError) and exc.permanent
            return Fetched(Failure(reason, expired), exc, {"credentials": learned.dump() or None})
        remember = {"endpoint": endpoint, "credentials": client.login.memory.dump() or None}
        return Fetched(reading, None, remember)

    return fetch


def check_channels(config: Config, state: State) -> tuple[State, dict[str, str]]:
    """Given the config and the state, return (state, {channel id: why it cannot be used}).

    The URLs are checked once per change of the channels (apprise is slow to import):
    only a check that found every URL usable is remembered, so an unusable one is named on
    every run until it is fixed (or until what it lacked is installed).
    """
    from alerter.notify import channels_digest, unusable_channels

    digest = channels_digest(config.channels)
    if not config.channels or state.channels_checked == digest:
        return state, {}
    unusable = unusable_channels(config.channels)
    if unusable:
        return state, unusable
    return dataclasses.replace(state, channels_checked=digest), {}


def metrics_writer(path: Path) -> Callable[[Observation, Decision, State], None]:
    """Return the step that writes the Prometheus textfile from a run's decision, as of the
    time it was decided (so the textfile and ``status`` agree on the same inputs).

    Failing to write it is a warning, never the run's outcome.
    """

    def write(observation: Observation, decision: Decision, state: State) -> None:
        from alerter import metrics  # only runs that write a textfile need it

        now = decision.now
        reading = observation if isinstance(observation, Reading) else None
        projections = {meter_id: metrics.projection(f, now) for meter_id, f in decision.forecasts.items()}
        try:
            metrics.write_textfile(path, metrics.render(reading, state.health, now, projections))
        except (OSError, AlerterError) as exc:
            log.warning("could not write the Prometheus textfile %s (%s)", path, exc)

    return write


def send_within(deadline: Deadline) -> Send:
    """Return the send that delivers through apprise (or stdout) by the run's ``deadline``,
    or past it within the one floor all the notifications still due share."""
    from alerter.notify import send

    def deliver(channel: Any, alert: Alert) -> bool:
        return send(channel, alert.title, alert.body, alert.severity, deadline=deadline.for_delivery())

    return deliver
