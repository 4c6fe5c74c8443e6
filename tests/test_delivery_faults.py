"""Deliveries are never made twice nor lost when the run is stopped while it delivers.

The job runs as the installed command runs (its entry point, so its stop gate is in
place) in a subprocess, with one alert due for four json:// channels, each a receiver
that counts what arrives. The test-only fault launcher of ``test_login_faults`` signals
the process at the Nth call of ``notify.send`` (before it sends, or after it returned).
A second, undisturbed run then sends what the first left undone; every channel must have
the alert exactly once (SIGKILL right after a send returned may repeat that one
delivery, the only one not yet saved: at least once, never more than that one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import JsonReceiver, Reply, StandIn
from tests.test_login_faults import LAUNCHER, Result, finish

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
CHANNELS = 4


class Deliveries:
    """A Factory stand-in with an alert due (85 %), and CHANNELS receivers as channels."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.factory = StandIn().start()
        self.factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))
        self.receivers = [JsonReceiver().start() for _ in range(CHANNELS)]
        self.state_file = root / "state" / "state.json"
        self.config = root / "config.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "factory": {"base_url": self.factory.url},
                    "state_file": str(self.state_file),
                    "notify": {"urls": [r.apprise_url for r in self.receivers]},
                }
            )
        )
        self.config.chmod(0o600)

    def close(self) -> None:
        self.factory.stop()
        for receiver in self.receivers:
            receiver.stop()

    def run(self, fault: str | None = None, sig: str = "SIGKILL") -> Result:
        """Run the installed command once; with ``fault`` (e.g. "after:send#2"), signalled there."""
        env = {
            "HOME": str(self.root),
            "FACTORY_API_KEY": API_KEY,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **same_clock(),
            "PYTHONPATH": python_path(str(ROOT)),
            "FAULT_INSTALLED": "1",
        }
        if fault is not None:
            env |= {"FAULT_AT": fault, "FAULT_SIGNAL": sig}
        argv = [sys.executable, "-c", LAUNCHER, "run", "--config", str(self.config)]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return finish(proc)

    def arrivals(self) -> list[int]:
        """How many notifications each channel received."""
        return [len(r.messages()) for r in self.receivers]

    def recorded(self) -> int:
        """How many deliveries the state on disk records as made."""
        ledger = json.loads(self.state_file.read_text())["ledger"]
        return sum(at is not None for entry in ledger for at in entry["channels"].values())


@pytest.fixture
def deliveries(tmp_path):
    rig = Deliveries(tmp_path)
    yield rig
    rig.close()


def test_sigkill_between_two_deliveries_repeats_none_of_those_made(deliveries):
    killed = deliveries.run("before:send#3", "SIGKILL")
    assert killed.code == -signal.SIGKILL
    assert sum(deliveries.arrivals()) == 2
    assert deliveries.recorded() == 2  # each saved as it succeeded
    again = deliveries.run()
    assert again.code == 0, again.err
    assert "they are due again" in again.err  # the two that were about to be sent
    assert deliveries.arrivals() == [1] * CHANNELS


def test_sigterm_during_a_delivery_waits_until_it_is_recorded_then_stops(deliveries):
    stopped = deliveries.run("after:send#2", "SIGTERM")
    assert stopped.code == -signal.SIGTERM
    assert sum(deliveries.arrivals()) == 2
    assert deliveries.recorded() == 2  # the delivery under way was recorded before stopping
    assert "Traceback" not in stopped.err
    again = deliveries.run()
    assert again.code == 0, again.err
    assert deliveries.arrivals() == [1] * CHANNELS


def test_sigkill_right_after_a_send_repeats_at_most_that_one_delivery(deliveries):
    killed = deliveries.run("after:send#2", "SIGKILL")
    assert killed.code == -signal.SIGKILL
    assert deliveries.run().code == 0
    arrived = deliveries.arrivals()
    assert min(arrived) == 1 and sum(arrived) <= CHANNELS + 1
