"""Usage alerts: thresholds and forecasts, a pure function of (reading, state, config, now).

``evaluate`` never does I/O. It returns the alerts that are due, each naming the channels
that still need it, and the new state *without* any delivery recorded: the job records
each delivery in the state's ledger (:func:`alerter.state.record_delivery`) as apprise
reports it, so a failed send stays due and is retried on the next run.

A threshold once delivered to a channel in a window stays delivered even if usage later
dips (the ledger holds it under the window's key), and a new window re-arms them all.
Each meter's memory (:class:`alerter.state.MeterMemory`) also keeps its recent readings
for the forecast, the forecast's risk episode and, for billing periods, the last known
period length.
"""

from __future__ import annotations

from dataclasses import dataclass

from alerter import forecast
from alerter.config import Config
from alerter.messages import forecast_message, threshold_message
from alerter.meters import Meter, Reading
from alerter.state import DeliveryKey, MeterMemory, State, Window

# Limit windows are identified by their end; the server's end may drift by a few minutes
# between answers, while two consecutive 5-hour windows are hours apart.
WINDOW_DRIFT_SECONDS = 15 * 60
EPSILON = 1e-9
LOGIN_KEY = DeliveryKey("login", "login", 0.0, 0.0)
# Alerts that belong to one usage window (or a risk episode in it): forgotten when it ends.
WINDOW_KINDS = ("threshold", "reminder", "forecast")


@dataclass(frozen=True)
class Alert:
    """One notification that is due, and the channels that have yet to receive it.

    ``key`` says which alert it is (see :class:`alerter.state.DeliveryKey`): two alerts
    with the same key are the same alert, delivered once per channel.
    """

    key: DeliveryKey
    severity: str  # info, warning or critical
    title: str
    body: str
    channels: tuple[str, ...]

    @property
    def meter_id(self) -> str:
        """The meter it is about, or ``health``/``login`` for the job's own notices."""
        return self.key.meter

    @property
    def kind(self) -> str:
        """threshold, reminder, forecast, reset, stale, recovered or login."""
        return self.key.kind

    @property
    def level(self) -> float:
        """The percent of the limit it is about (a threshold), 0 when none."""
        return self.key.level


def same_window(saved: Window | None, meter: Meter) -> bool:
    """Given a remembered window and a meter, return True when the meter is still in it."""
    if saved is None:
        return False
    if meter.window_start is not None or saved.start is not None:
        # Billing periods are identified by their start; the end may be unknown.
        return (
            meter.window_start is not None
            and saved.start is not None
            and abs(meter.window_start - saved.start) <= WINDOW_DRIFT_SECONDS
        )
    if meter.window_end is not None and saved.end is not None:
        return abs(meter.window_end - saved.end) <= WINDOW_DRIFT_SECONDS
    return meter.window_end is None and saved.end is None


def forget(state: State, meter_id: str, kinds: tuple[str, ...], keep_window: float | None = None) -> None:
    """Drop the ledger entries of ``meter_id`` of these kinds, but those of ``keep_window``."""
    for key in [k for k in state.ledger if k.meter == meter_id and k.kind in kinds]:
        if key.window != keep_window:
            del state.ledger[key]


def evaluate(reading: Reading, state: State, config: Config, now: float) -> tuple[list[Alert], State]:
    """Given a reading, the saved state, the config and the time, return (alerts, new state)."""
    new_state = state.copy()
    new_state.ledger.pop(LOGIN_KEY, None)  # a working login re-arms the "login expired" notice
    alerts: list[Alert] = []
    for meter in reading.meters:
        if meter.unlimited or not meter.active:
            continue  # nothing can run out, or the window has reset
        saved = new_state.meters.get(meter.id)
        same = saved is not None and same_window(saved.window, meter)
        history = saved.history if saved is not None else []
        length = _period_length(saved, meter, same)
        if saved is None or not same:
            # A new window re-arms every threshold and ends any episode.
            saved = MeterMemory(window_key=Window(meter.window_start, meter.window_end).ident)
            forget(new_state, meter.id, WINDOW_KINDS)
        saved.period_seconds = length
        saved.window = Window(meter.window_start, meter.window_end)
        saved.history = forecast.add_sample(history, meter, now, same)
        new_state.meters[meter.id] = saved
        alerts.extend(_threshold_alerts(meter, saved, new_state, reading, config, now))
        if config.forecast.enabled:
            alerts.extend(_forecast_alerts(meter, saved, new_state, config, now))
    return alerts, new_state


def _period_length(saved: MeterMemory | None, meter: Meter, same: bool) -> float | None:
    """Return the billing period length known so far (to place the end of a period without one)."""
    low, high = forecast.PERIOD_RANGE
    if meter.window_start is not None and meter.window_end is not None:
        length = meter.window_end - meter.window_start
        return length if low <= length <= high else None
    if saved is None:
        return None
    old = (
        saved.period_seconds
        if saved.period_seconds is not None and low <= saved.period_seconds <= high
        else None
    )
    old_start = saved.window.start if saved.window is not None else None
    if not same and old_start is not None and meter.window_start is not None:
        length = meter.window_start - old_start  # one period ran from the old start to this one
        if low <= length <= high:
            return length
    return old


def assess_meter(meter: Meter, saved: MeterMemory, config: Config, now: float) -> forecast.Assessment:
    """Given a meter and its memory (its reading already in the history), return its forecast."""
    kind = forecast.window_kind(meter.id)
    start, end = forecast.window_bounds(meter, saved.period_seconds)
    rules = config.forecast.rules_for(kind)
    longest = max((rule.reach for rule in rules), default=0.0)
    # The noise margin looks at the whole window so far; the rules, only their reach.
    since = None if config.forecast.noise_margin_for(kind) else now - longest
    pts = forecast.points(saved.history, meter, start, since=since)
    return forecast.assess(pts, now, start, end, rules, config.forecast, kind)


def _forecast_alerts(
    meter: Meter, saved: MeterMemory, state: State, config: Config, now: float
) -> list[Alert]:
    settings = config.forecast
    assessment = assess_meter(meter, saved, config, now)
    kind = forecast.window_kind(meter.id)
    saved.episode = forecast.next_episode(saved.episode, assessment, now, settings.rearm_seconds(kind))
    episode = saved.episode
    # An episode that ended is forgotten with its deliveries; the next one is told anew.
    forget(state, meter.id, ("forecast",), keep_window=episode.since if episode is not None else None)
    if episode is None:
        return []
    # Within an episode a channel that has not heard of it yet (a failed send) is told as
    # long as the meter still runs out before the reset, with today's numbers.
    start, _ = forecast.window_bounds(meter, saved.period_seconds)
    if assessment.firing is not None:
        rate, seconds = assessment.rate, assessment.firing.long_seconds
        if start is not None and now - start < seconds * (1 - forecast.COVERAGE_SLACK):
            seconds = now - start  # the lookback is not covered yet: the pace since the window began
    else:
        rate, seconds = assessment.pace, assessment.pace_seconds
    runs_out = assessment.runs_out_at(rate)
    end = assessment.window_end
    if runs_out is None or end is None or runs_out >= end:
        return []
    key = DeliveryKey(meter.id, "forecast", episode.since, 0.0)
    told = state.delivered(key)
    channels = tuple(
        ch.id for ch in config.delivery_channels() if settings.severity in ch.severities and ch.id not in told
    )
    if not channels:
        return []
    title, body = forecast_message(meter, rate, seconds, runs_out, (start, end), now)
    return [Alert(key, settings.severity, title, body, channels)]


def highest_delivered(state: State, meter_id: str, window: float) -> dict[str, float]:
    """Given a meter and its window key, return per channel the highest threshold it was sent."""
    top: dict[str, float] = {}
    for key in state.ledger:
        if key.meter == meter_id and key.kind == "threshold" and key.window == window:
            for channel in state.delivered(key):
                top[channel] = max(top.get(channel, 0.0), key.level)
    return top


def _threshold_alerts(
    meter: Meter, saved: MeterMemory, state: State, reading: Reading, config: Config, now: float
) -> list[Alert]:
    crossed = [t for t in config.thresholds_for(meter.id) if meter.percent + EPSILON >= t]
    if not crossed:
        return []
    sent = highest_delivered(state, meter.id, saved.window_key)
    due: dict[float, list[str]] = {}
    for channel in config.delivery_channels():
        mine = [t for t in crossed if config.severity_of(t) in channel.severities]
        if not mine:
            continue
        top = max(mine)
        if sent.get(channel.id, 0.0) >= top:
            continue  # this channel already heard of this threshold (or a higher one)
        due.setdefault(top, []).append(channel.id)
    alerts = []
    for level, channels in sorted(due.items()):
        severity = config.severity_of(level)
        title, body = threshold_message(meter, level, reading, now, severity == "critical")
        key = DeliveryKey(meter.id, "threshold", saved.window_key, float(level))
        alerts.append(Alert(key, severity, title, body, tuple(channels)))
    return alerts


LOGIN_TITLE = "Factory login expired: run `droid` to log in again"
LOGIN_BODY = (
    "factory-usage-alert can no longer read your Factory usage: the droid login has expired "
    "or was revoked.\nRun `droid` on this machine and log in; alerts resume on the next run."
)


def login_expired_alert(state: State, config: Config) -> Alert | None:
    """Given the state, return the "login expired" alert for channels not yet told, if any."""
    told = state.delivered(LOGIN_KEY)
    channels = tuple(ch.id for ch in config.delivery_channels() if ch.id not in told)
    if not channels:
        return None
    return Alert(LOGIN_KEY, "critical", LOGIN_TITLE, LOGIN_BODY, channels)
