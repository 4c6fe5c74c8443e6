"""Output read by a command that stops reading: `status | head -1`, `backtest --example | head`.

The reader closes the pipe, and the job's next write to stdout fails (EPIPE). That is the
reader's choice, not a bug: the job says nothing about it (no "internal error", no
"--- Logging error ---" traceback on stderr) and exits 141, as a command that SIGPIPE
ended would; a run still does all its work and keeps its own exit code when it has one.
Here stdout is a pipe whose read end is closed before the command starts, so every write
fails, on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000


@pytest.fixture
def home(tmp_path, factory, receiver) -> Path:
    home = tmp_path / "home"
    config = home / ".config" / "factory-usage-alert" / "config.yaml"
    config.parent.mkdir(parents=True)
    settings = {"factory": {"base_url": factory.url}, "notify": {"urls": [receiver.apprise_url]}}
    config.write_text(yaml.safe_dump(settings))
    config.chmod(0o600)
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(16 * M)))  # 80 %: an alert is due
    return home


def into_a_closed_pipe(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe nobody reads any more; return what it did."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "FACTORY_API_KEY": API_KEY,
        "PYTHONPATH": python_path(str(ROOT)),
        **same_clock(),
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "alerter", *args],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv", [["backtest", "--example"], ["status"], ["status", "--json"], ["check-config"], ["history"]]
)
def test_a_reader_that_stops_reading_is_no_error(home, argv):
    if argv == ["history"]:
        assert into_a_closed_pipe(home, "run", "-q").returncode == 0  # something to show
    result = into_a_closed_pipe(home, *argv)
    assert result.stderr == ""
    assert result.returncode == 141


def test_a_run_whose_log_reader_went_away_still_delivers_and_says_nothing(home, receiver):
    result = into_a_closed_pipe(home, "run", "-v")  # its info and debug lines go to stdout
    assert result.stderr == ""
    assert result.returncode == 141
    assert [m["title"] for m in receiver.messages()] == ["Factory standard at 80% (past 80%)"]
    state = json.loads((home / ".local" / "state" / "factory-usage-alert" / "state.json").read_text())
    assert state["ledger"], state  # the delivery is recorded: the next run repeats nothing
    again = into_a_closed_pipe(home, "run", "-q")
    assert again.returncode == 0, again.stderr
    assert len(receiver.messages()) == 1


def test_an_alert_printed_into_a_closed_pipe_is_not_delivered(home, factory):
    config = home / ".config" / "factory-usage-alert" / "config.yaml"
    config.write_text(yaml.safe_dump({"factory": {"base_url": factory.url}}))  # no channel: printed
    result = into_a_closed_pipe(home, "run")
    assert result.returncode == 5, result.stderr  # the alert's one channel, stdout, failed
    assert "channel stdout: not delivered" in result.stderr
    assert "Logging error" not in result.stderr and "internal error" not in result.stderr
