"""Fault injection: overlapping runs, killed runs, broken state, slow and odd networks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alerter.config import Config
from alerter.meters import Meter, Reading
from alerter.rules import evaluate
from alerter.state import State, dump, load, load_state, record_delivery, save_state
from tests.conftest import USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply, TlsStandIn

M = 1_000_000
ROOT = Path(__file__).resolve().parent.parent


def child_env(app) -> dict:
    return {**app.env, **same_clock(), "PYTHONPATH": python_path(str(ROOT))}


def test_five_runs_started_at_once_send_exactly_one_notification(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    # A slow answer keeps every run inside its fetch while the others start.
    app.serve_usage(Reply(200, usage_body(17 * M), delay=0.3))
    argv = [sys.executable, "-m", "alerter", "run", "--config", str(app.config_path)]
    procs = [
        subprocess.Popen(argv, env=child_env(app), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(5)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [r[1] for r in results]
    assert len(receiver.messages()) == 1
    assert len(app.factory.calls("GET", USAGE_PATH)) == 5


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from alerter.state import Health, State, save_state
    path = Path(sys.argv[1])
    n = 0
    while True:
        n += 1
        # Growing content, so that a half-written file could not pass as a whole one.
        save_state(path, State(health=Health(failures=n, last_error="x" * (n % 5000))))
        print(n, flush=True)
    """
)


def test_a_run_killed_at_random_points_leaves_the_old_or_the_new_state(tmp_path):
    path = tmp_path / "state.json"
    rng = random.Random(7)
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            env={**os.environ, "PYTHONPATH": python_path(str(ROOT))},
            stdout=subprocess.PIPE,
            text=True,
        )
        target = rng.randint(1, 40)
        last = 0
        for line in proc.stdout:  # wait until the writer has saved `target` times
            last = int(line)
            if last >= target:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = json.loads(path.read_bytes())  # never a broken file
        n = data["health"]["failures"]
        assert n >= last and data["health"].get("last_error", "") == "x" * (n % 5000)
        assert load_state(path).health.failures == n
    assert not list(tmp_path.glob("state.json.corrupt-*"))


def test_a_corrupt_state_is_kept_aside_with_a_warning_and_alerts_repeat(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(17 * M))
    assert app("run").code == 0
    for broken in (b'{"version": 1, "meters": {"standard"', b"\x00\xff", b'{"version": 99}', b"[]"):
        app.state_path.write_bytes(broken)
        result = app("run")
        assert result.code == 0, result.err
        warnings = [line for line in result.err.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and "starting afresh" in warnings[0] and "may repeat" in warnings[0]
        copies = list(app.state_path.parent.glob("state.json.corrupt-*"))
        assert copies and any(c.read_bytes() == broken for c in copies)
        for copy in copies:
            copy.unlink()
        assert app.state()["version"] == 2
    assert len(receiver.messages()) == 5  # the first run, then once again after each loss


def test_dry_run_does_not_move_a_corrupt_state(app):
    app.serve_usage(usage_body(17 * M))
    app.state_path.parent.mkdir(parents=True)
    app.state_path.write_bytes(b"garbage")
    assert app("run", "--dry-run").code == 0
    assert app.state_path.read_bytes() == b"garbage"
    assert not list(app.state_path.parent.glob("state.json.corrupt-*"))


def test_save_state_is_private_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "deep" / "state.json"
    save_state(path, State())
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_hung_server_cannot_hold_the_run_past_its_deadline(app):
    # The server answers only after 30 s: past the run's 2 s deadline, within the 60 s read
    # timeout. So only the deadline can end the run with "timed out"; a run that waited for
    # the answer would succeed instead (no assertion on elapsed time needed).
    app.write_config({"factory": {"timeout_seconds": 60, "deadline_seconds": 2}})
    app.serve_usage(Reply(200, usage_body(1 * M), delay=30))
    result = app("run")
    assert result.code == 4 and "timed out" in result.err


def test_429_honours_retry_after_and_4xx_is_not_retried(app):
    answers = iter(
        [Reply(429, {"error": "slow down"}, headers={"Retry-After": "0"}), Reply(200, usage_body(1 * M))]
    )
    app.factory.route("GET", USAGE_PATH, lambda rec: next(answers))
    assert app("run").code == 0
    assert len(app.factory.calls("GET", USAGE_PATH)) == 2
    app.serve_usage(Reply(422, {"error": "bad"}))
    assert app("run").code == 4
    assert len(app.factory.calls("GET", USAGE_PATH)) == 3


def test_a_config_readable_by_others_with_credentials_draws_a_warning(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url + "?token=abc"]}})
    app.config_path.chmod(0o644)
    app.serve_usage(usage_body(1 * M))
    result = app("run")
    assert result.code == 0
    assert "readable by other users" in result.err and "chmod 600" in result.err
    assert "token=abc" not in result.err


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_any = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
meter_entry = st.fixed_dictionaries(
    {},
    optional={
        "window": json_any
        | st.fixed_dictionaries({"start": st.just(1.0) | json_scalars, "end": json_scalars}),
        "sent": json_any | st.dictionaries(st.sampled_from(["stdout", "x"]), json_scalars, max_size=2),
    },
)
state_like = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 0, 2, "1"])},
    optional={
        "meters": json_any
        | st.dictionaries(st.sampled_from(["standard", "premium"]), meter_entry | json_any),
        "source": json_any,
        "login": json_any,
        "channels_checked": json_any,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(state_like.map(lambda s: json.dumps(s).encode()), st.binary(max_size=64)))
@example(b'{"version": 1, "meters": {"standard": {"window": {"start": 1.0}, "sent": {"stdout": "abc"}}}}')
@example(b'{"version": 1, "meters": {"standard": {"window": {"start": 1.0}, "sent": []}}, "login": []}')
def test_any_state_file_loads_cleanly_and_the_job_can_use_it(tmp_path, raw):
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    state = load_state(path, keep_aside=False)
    assert isinstance(state, State)
    reading = Reading("allowance", (Meter("standard", 0.97, window_start=1.0, window_end=None),))
    alerts, new_state = evaluate(reading, state, Config(), 100.0)
    for alert in alerts:
        new_state = record_delivery(new_state, alert.key, "stdout", 100.0)
    assert evaluate(reading, new_state, Config(), 100.0)[0] == []
    assert load(json.loads(json.dumps(dump(new_state))))[0] == new_state


def test_tls_is_verified_and_ca_bundle_serves_a_private_ca(app, tmp_path):
    tls = TlsStandIn(tmp_path).start()
    try:
        tls.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))
        app.write_config({"factory": {"base_url": tls.url, "deadline_seconds": 3}})
        result = app("run")
        assert result.code == 4
        assert "TLS verification failed" in result.err and "factory.ca_bundle" in result.err
        app.write_config({"factory": {"base_url": tls.url, "ca_bundle": tls.cert}})
        result = app("run")
        assert result.code == 0, result.err
        assert "past 80%" in result.out
    finally:
        tls.stop()


# JSON and YAML read integers of up to 4300 digits; no float holds one of 400, and
# math.isfinite raises OverflowError on it.
HUGE = "1" + "0" * 400


def test_a_state_file_with_a_number_no_float_holds_drops_that_part_not_the_run(app):
    app.serve_usage(usage_body(17 * M))
    app.state_path.parent.mkdir(mode=0o700)
    for text in (
        '{"version": %s}',
        '{"version": 2, "health": {"failures": %s}}',
        '{"version": 2, "meters": {"standard": {"peak": %s}}}',
        '{"version": 2, "ledger": [{"meter": "standard", "kind": "threshold", "window": 1, "level": %s}]}',
    ):
        app.state_path.write_text(text % HUGE)
        app.state_path.chmod(0o600)
        result = app("run")
        assert result.code == 0, (text, result.err)
        assert "state.json" in result.err  # the part (or the file) is named as not understood


def test_an_answer_with_a_number_no_float_holds_is_unusable_not_a_bug(app):
    body = json.dumps(usage_body(17 * M)).replace(
        '"orgTotalTokensUsed": 17000000', '"orgTotalTokensUsed": ' + HUGE
    )
    assert HUGE in body
    app.serve_usage(Reply(200, body.encode(), headers={"Content-Type": "application/json"}))
    result = app("run")
    assert result.code == 4, result.err
    assert "impossible value in usage.standard.orgTotalTokensUsed" in result.err
    assert HUGE not in result.err  # one short line, not 400 digits
