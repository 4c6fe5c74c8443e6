"""Write-ahead: the decided state is saved before anything is sent, so a state that cannot
be saved sends nothing (instead of the same alert on every run, forever). And a replay of
a trace with failed runs gives exactly what the runs gave.

The full disk is real: a small tmpfs, filled up, in a private mount namespace that only
the job's process sees (``unshare -m``; root only).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply, StandIn
from tests.test_login_storage import can_unshare

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000


@pytest.mark.skipif(can_unshare() is not None, reason=str(can_unshare()))
def test_a_state_that_cannot_be_saved_sends_nothing_in_three_runs_and_says_why(tmp_path, receiver):
    factory = StandIn().start()
    health = StandIn().start()
    try:
        factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))  # 85 %: an alert is due
        health.route("GET", "/ping/check", Reply(200, {}))
        health.route("GET", "/ping/check/start", Reply(200, {}))
        health.route("GET", "/ping/check/fail", Reply(200, {}))
        state_dir = tmp_path / "state"
        state_dir.mkdir(mode=0o700)
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "factory": {"base_url": factory.url},
                    "state_file": str(state_dir / "state.json"),
                    "notify": {"urls": [receiver.apprise_url]},
                    "healthcheck_url": f"{health.url}/ping/check",
                }
            )
        )
        config.chmod(0o600)
        run = f"{shlex.quote(sys.executable)} -m alerter run --config {shlex.quote(str(config))}"
        script = f"""
D={shlex.quote(str(state_dir))}
mount -t tmpfs -o size=64k,mode=0700 tmpfs "$D" || exit 99
dd if=/dev/zero of="$D/filler" bs=4k 2>/dev/null
for i in 1 2 3; do {run}; echo "exit $?"; done
"""
        env = {
            "HOME": str(tmp_path),
            "FACTORY_API_KEY": API_KEY,
            "PATH": os.environ["PATH"],
            **same_clock(),
            "PYTHONPATH": python_path(str(ROOT)),
        }
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.stdout.split().count("exit") == 3, done.stdout + done.stderr
        assert [line for line in done.stdout.splitlines() if line.startswith("exit")] == ["exit 6"] * 3
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert len(errors) == 3
        for line in errors:
            assert "cannot save the state" in line and "No space left on device" in line
            assert "nothing was sent" in line and "free some space" in line
        assert receiver.messages() == []  # nothing sent, three times
        assert len(factory.calls("GET", USAGE_PATH)) == 3
        assert [c.path for c in health.calls()].count("/ping/check/fail") == 3
        assert "Traceback" not in done.stderr
    finally:
        factory.stop()
        health.stop()


def test_a_replay_with_failed_runs_equals_the_hourly_runs(app, receiver, tmp_path):
    # Three failed runs in a row with failures_before_alert: 1, then usage again: the runs
    # say "not working" once and "working again" once; the replay of what they saw says
    # exactly the same.
    # deadline_seconds: 2: the 503 is retried until the deadline, which need not be a minute.
    app.write_config(
        {
            "factory": {"deadline_seconds": 2},
            "notify": {"urls": [receiver.apprise_url]},
            "monitor": {"failures_before_alert": 1},
        }
    )
    start = 1_764_000_000
    answers = [
        Reply(200, usage_body(2 * M, start=start)),
        Reply(503, {"error": "down"}),
        Reply(200, b"<html>maintenance</html>"),
        Reply(200, {"error": "internal"}),
        Reply(200, usage_body(17 * M, start=start)),
    ]
    for hour, answer in enumerate(answers):
        app.now = start + (hour + 1) * 3600
        app.serve_usage(answer)
        app("run", "-q")
    arrived = [(m["title"], m["message"]) for m in receiver.messages()]
    assert len(arrived) == 3  # not working, working again, the 80 % threshold

    exported = app("history", "--jsonl")
    assert exported.code == 0, exported.err
    lines = [json.loads(line) for line in exported.out.splitlines()]
    assert sum("error" in line for line in lines) == 3
    trace = tmp_path / "trace.jsonl"
    trace.write_text(exported.out)
    replayed = app("backtest", str(trace), "--json")
    assert replayed.code == 0, replayed.err
    notes = json.loads(replayed.out)["notifications"]
    assert [(n["title"], n["body"]) for n in notes] == arrived
    assert [n["kind"] for n in notes] == ["stale", "recovered", "threshold"]
