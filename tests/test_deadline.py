"""The run's one deadline budget (job.Deadline), with an injected monotonic clock.

Past the deadline, every notification still due shares one floor of
DELIVERY_FLOOR_SECONDS: silent channels cannot stretch the run by 2 s each.
"""

from __future__ import annotations

import pytest

from alerter import job
from alerter.config import Channel, Config, MonitorSettings
from alerter.decide import Failure
from alerter.errors import DeliveryError

T0 = 1_790_000_000.0
DEADLINE = 5.0


class Monotonic:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("silent_channels", [1, 4, 10])
def test_silent_channels_past_the_deadline_share_one_floor(tmp_path, monkeypatch, silent_channels):
    channels = tuple(Channel(id=f"ch-{i}", label=f"c{i}", url=f"json://c{i}") for i in range(silent_channels))
    config = Config(
        channels=channels,
        monitor=MonitorSettings(failures_before_alert=1),
        state_file=tmp_path / "state.json",
    )
    clock = Monotonic()
    deadline = job.Deadline(DEADLINE, clock)
    given = []

    def silent(channel, title, body, severity, out=None, deadline=None):
        # A channel that never answers is given up at the time it was given.
        given.append(deadline)
        clock.now = max(clock.now, deadline)
        return False

    monkeypatch.setattr("alerter.notify.send", silent)

    def read_that_used_up_the_deadline(state, now):
        clock.now += DEADLINE
        return job.Fetched(Failure("Factory API timed out"))

    shell = job.Shell(read_that_used_up_the_deadline, job.send_within(deadline), deadline=deadline)
    clock.now = 1000.0
    with pytest.raises(DeliveryError):
        job.run(config, shell, lambda: T0)
    assert len(given) == silent_channels  # the "not working" notice, to each channel
    assert clock.now == 1000.0 + DEADLINE + job.DELIVERY_FLOOR_SECONDS
    assert set(given) == {1000.0 + DEADLINE + job.DELIVERY_FLOOR_SECONDS}


def test_the_deadline_starts_when_the_run_holds_the_lock_and_is_given_whole_before_it():
    clock = Monotonic()
    deadline = job.Deadline(DEADLINE, clock)
    clock.now += 3.0  # waiting for the lock
    deadline.start()
    assert deadline.at == clock.now + DEADLINE
    clock.now += 1.0
    assert deadline.for_delivery() == deadline.at  # time left: the deadline itself


def test_a_delivery_begun_just_before_the_deadline_still_gets_the_floor_once():
    clock = Monotonic()
    deadline = job.Deadline(DEADLINE, clock)
    deadline.start()
    clock.now += DEADLINE - 0.5  # half a second left
    first = deadline.for_delivery()
    assert first == clock.now + job.DELIVERY_FLOOR_SECONDS
    clock.now = first  # that channel was silent
    assert deadline.for_delivery() == first  # the next one has nothing more
