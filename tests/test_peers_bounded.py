"""Every peer is bounded: a Factory API, a notification channel or a healthcheck that never
answers, or answers one byte a second, cannot keep the job past its deadline; a Factory
answer too large or too deeply nested is refused with bounded memory; and whatever goes
wrong while reading usage is a failed run, counted, in one line.

The misbehaving peers are real sockets (tests/standins.RawPeer). The runs that wait for a
deadline are real processes, started together so that the whole matrix costs one deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from alerter import http
from alerter.redact import mask_url
from tests.conftest import API_KEY, LIMITS_PATH, USAGE_PATH, python_path, same_clock, usage_body
from tests.credentials.helpers import HOUR, login_data, write_keyfile_store
from tests.standins import SLOW_BODY, SLOW_HEADERS, RawPeer, Reply, StandIn, flood, silent

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
DEADLINE = 5  # seconds: factory.deadline_seconds for every run here (about 17 start at once)
HANG_SECONDS = 60  # a run still going after this long hangs (a hang detector, not a timing)
CHANNEL_SECRET = "chan-pass-SECRET-4711"
CHECK_SECRET = "0b3c-check-uuid-SECRET"
MODES = {"silent": silent, "slow headers": SLOW_HEADERS, "slow body": SLOW_BODY}


@dataclass
class Run:
    """How one `factory-usage-alert` process ended (code None: it hung and was killed)."""

    code: int | None
    out: str
    err: str
    state: dict | None
    peer: RawPeer
    max_rss_kb: int = 0
    home: Path | None = None

    def lines(self, text: str) -> list[str]:
        """Return the output lines that contain ``text``."""
        return [line for line in (self.out + self.err).splitlines() if text in line]

    def assert_clean(self) -> None:
        """Nothing secret was printed, and no traceback."""
        for secret in (API_KEY, CHANNEL_SECRET, CHECK_SECRET):
            assert secret not in self.out + self.err
        assert "Traceback" not in self.err


def job_env(home: Path, droid: bool = False) -> dict:
    """The job's environment: an API key, or (``droid``) droid's store in home/.factory."""
    env = {
        "HOME": str(home),
        "FACTORY_HOME_OVERRIDE": str(home),
        "PATH": os.environ.get("PATH", ""),
        "TZ": "UTC",
        **same_clock(),  # the job judges token expiry by the same (maybe faked) clock
        "PYTHONPATH": python_path(str(ROOT)),
    }
    return env if droid else {**env, "FACTORY_API_KEY": API_KEY}


def write_config(
    home: Path, factory_url: str, workos_url: str | None = None, deadline: float = DEADLINE, **extra
) -> Path:
    factory = {"base_url": factory_url, "timeout_seconds": 5, "deadline_seconds": deadline}
    if workos_url:
        factory["workos_url"] = workos_url
    config = {
        "factory": factory,
        "state_file": str(home / "state" / "state.json"),
        **extra,
    }
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# Runs a command and writes its peak memory to a file. The job is its grandchild because a
# child's ru_maxrss starts at its parent's at fork time (Linux keeps it across exec): a
# small wrapper in between keeps the test process's own memory out of the figure.
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


# A renewal whose request WorkOS received is awaited past the deadline, up to a cap of
# 2 minutes (refresh.ANSWER_CAP_SECONDS); the runs that renew droid's login shorten the cap
# so that the matrix still costs about one deadline. What they check: the run ends, and
# says why, once the cap has passed.
ANSWER_CAP_SECONDS = 5.0
CAPPED = (
    "from alerter.credentials import refresh; "
    f"refresh.ANSWER_CAP_SECONDS = {ANSWER_CAP_SECONDS}; "
    "from alerter.cli import entry_point; entry_point()"
)


def start_job(home: Path, *args: str, measure: bool = False, droid: bool = False) -> subprocess.Popen:
    """Start `python -m alerter ARGS --config home/config.yaml`; its output goes to files.
    With ``measure`` its peak memory goes to home/max_rss_kb. With ``droid``, a renewal's
    answer is awaited at most ANSWER_CAP_SECONDS past the deadline."""
    launch = ["-c", CAPPED] if droid else ["-m", "alerter"]
    argv = [sys.executable, *launch, *args, "--config", str(home / "config.yaml")]
    if measure:
        argv = [sys.executable, "-c", MEASURE, str(home / "max_rss_kb"), *argv]
    out, err = (home / "stdout").open("wb"), (home / "stderr").open("wb")
    with out, err:
        return subprocess.Popen(
            argv, env=job_env(home, droid), stdout=out, stderr=err, start_new_session=True
        )


def finish_job(proc: subprocess.Popen, home: Path, peer: RawPeer, hang_at: float) -> Run:
    """Wait for the job, killing it at ``hang_at`` (a monotonic time); return how it ended."""
    try:
        code: int | None = proc.wait(timeout=max(0.0, hang_at - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    state_file, rss_file = home / "state" / "state.json", home / "max_rss_kb"
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    max_rss_kb = int(rss_file.read_text()) if rss_file.exists() else 0
    out, err = ((home / name).read_text() for name in ("stdout", "stderr"))
    return Run(code, out, err, state, peer, max_rss_kb, home)


# --- the matrix: each peer x each way of never finishing an answer ---------------------------


def channel_url(peer: RawPeer, kind: str) -> str:
    port = peer.url.rsplit(":", 1)[1]
    if kind == "mailto":
        return (
            f"mailto://user:{CHANNEL_SECRET}@localhost:{port}?smtp=127.0.0.1&mode=insecure"
            "&from=alerts@example.com&to=lead@example.com"
        )
    return f"json://user:{CHANNEL_SECRET}@127.0.0.1:{port}/notify"


SCENARIOS = [(peer, mode) for peer in ("factory", "workos", "json", "healthcheck") for mode in MODES] + [
    ("mailto", "silent"),
    ("test-notify", "slow body"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start one real run per scenario, all at once, each against its own misbehaving peer
    (a good Factory answers the others); wait for every one; return {scenario: Run}."""
    good = StandIn().start()
    good.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))  # 85%: an alert is due
    peers: list[RawPeer] = []
    started = {}
    try:
        for scenario in SCENARIOS:
            target, mode = scenario
            home = tmp_path_factory.mktemp(f"{target}-{mode.replace(' ', '-')}")
            peer = RawPeer(MODES[mode]).start()
            peers.append(peer)
            if target == "factory":
                write_config(home, peer.url)
            elif target == "workos":  # droid's token has expired: it must be renewed first
                write_keyfile_store(home / ".factory", login_data(-HOUR))
                # A renewal starts only while 3/4 of the deadline is left: a loaded machine
                # must not eat that before the request leaves.
                write_config(home, good.url, workos_url=f"{peer.url}/user_management", deadline=10)
            elif target == "healthcheck":
                write_config(home, good.url, healthcheck_url=f"{peer.url}/ping/{CHECK_SECRET}")
            else:
                kind = "mailto" if target == "mailto" else "json"
                write_config(home, good.url, notify={"urls": [channel_url(peer, kind)]})
            args = ("test-notify",) if target == "test-notify" else ("run",)
            started[scenario] = (start_job(home, *args, droid=target == "workos"), home, peer)
        hang_at = time.monotonic() + HANG_SECONDS
        yield {key: finish_job(proc, home, peer, hang_at) for key, (proc, home, peer) in started.items()}
    finally:
        for proc, _, _ in started.values():
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for peer in peers:
            peer.stop()
        good.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_factory_api_that_never_finishes_answering_fails_the_run_at_its_deadline(runs, mode):
    run = runs["factory", mode]
    assert run.code is not None, "the run hung"
    assert run.peer.heads, "the request never reached the stand-in"
    assert run.code == 4, run.err
    last = run.err.splitlines()[-1]
    assert last.startswith("factory-usage-alert: error: Factory API timed out"), last
    assert LIMITS_PATH in last and "will retry next run" in last
    assert run.state["health"]["failures"] == 1  # counted as a failed run
    run.assert_clean()


@pytest.mark.parametrize("mode", MODES)
def test_a_workos_that_never_finishes_answering_ends_the_run_at_the_cap_past_its_deadline(runs, mode):
    # WorkOS received the refresh token: its answer is awaited past the deadline, but only
    # up to the cap.
    run = runs["workos", mode]
    assert run.code is not None, "the run hung"
    assert run.peer.heads and run.peer.heads[0].startswith(b"POST /user_management/authenticate ")
    assert run.code == 4, run.err
    last = run.err.splitlines()[-1]
    assert last.startswith("factory-usage-alert: error: cannot renew the Factory login: WorkOS"), last
    assert "will try again next run" in last and "log in again" not in run.err
    assert run.state["health"]["failures"] == 1  # counted as a failed run
    store = sorted(p.name for p in (run.home / ".factory").iterdir())
    assert store == ["auth.v2.file", "auth.v2.key"]  # nothing left behind in droid's directory
    run.assert_clean()


@pytest.mark.parametrize("mode", MODES)
def test_a_channel_that_never_finishes_answering_is_a_failed_delivery(runs, mode):
    run = runs["json", mode]
    assert run.code is not None, "the run hung"
    assert run.peer.heads and run.peer.heads[0].startswith(b"POST /notify ")
    assert run.code == 5, run.err
    label = mask_url(channel_url(run.peer, "json"))
    # A silent peer may meet apprise's own socket timeout before the run's deadline: either
    # way it is one line naming the channel and why, and a failed delivery.
    failed = run.lines(f"channel {label}: not delivered: timed out")
    assert len(failed) == 1, run.err
    assert run.err.splitlines()[-1].startswith(f"factory-usage-alert: error: could not deliver to {label}")
    assert run.state["health"]["failures"] == 0  # the read worked; the alert waits for the next run
    run.assert_clean()


def test_a_mail_server_that_never_greets_is_a_failed_delivery(runs):
    run = runs["mailto", "silent"]
    assert run.code is not None, "the run hung"
    assert run.code == 5, run.err
    label = mask_url(channel_url(run.peer, "mailto"))
    assert len(run.lines(f"channel {label}: not delivered: timed out")) == 1
    run.assert_clean()


def test_test_notify_gives_a_trickling_channel_the_configured_deadline(runs):
    run = runs["test-notify", "slow body"]
    assert run.code is not None, "the run hung"
    assert run.code == 5, run.err
    label = mask_url(channel_url(run.peer, "json"))
    assert f"FAILED {label}" in run.out
    assert len(run.lines(f"channel {label}: not delivered: timed out")) == 1
    run.assert_clean()


@pytest.mark.parametrize("mode", MODES)
def test_a_healthcheck_that_never_finishes_answering_costs_a_warning_not_the_run(runs, mode):
    run = runs["healthcheck", mode]
    assert run.code is not None, "the run hung"
    paths = [head.split(b" ")[1].decode() for head in run.peer.heads]
    assert paths == [f"/ping/{CHECK_SECRET}/start", f"/ping/{CHECK_SECRET}"]
    assert run.code == 0, run.err
    host = run.peer.url
    for event in ("start", "success"):
        assert len(run.lines(f"healthcheck {event} ping to {host}/*** timed out")) == 1, run.err
    assert "standard" in run.state["meters"]  # the start ping left time to read the usage
    run.assert_clean()


# --- answers too large or too deep ---------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_a_60_mb_factory_answer_is_refused_with_bounded_memory(tmp_path, gzip):
    peer = RawPeer(flood(60 << 20, gzip=gzip)).start()
    try:
        write_config(tmp_path, peer.url)
        job = start_job(tmp_path, "run", measure=True)
        run = finish_job(job, tmp_path, peer, time.monotonic() + HANG_SECONDS)
    finally:
        peer.stop()
    assert run.code == 4, run.err
    last = run.err.splitlines()[-1]
    assert f"Factory API answered more than {http.MAX_ANSWER_BYTES} bytes at {LIMITS_PATH}" in last
    assert len(peer.heads) == 1  # refused, not retried
    assert run.state["health"]["failures"] == 1
    assert 0 < run.max_rss_kb < 100 * 1024, f"the job's peak memory was {run.max_rss_kb // 1024} MB"
    run.assert_clean()


@pytest.mark.parametrize("depth", [33, 100_000])
def test_a_too_deeply_nested_answer_is_refused_and_counted(app, depth):
    app.factory.route("GET", LIMITS_PATH, Reply(200, b"[" * depth + b"]" * depth))
    result = app("run")
    assert result.code == 4, result.err
    lines = result.err.splitlines()
    assert lines[-1].startswith(f"factory-usage-alert: error: Factory API answered HTTP 200 at {LIMITS_PATH}")
    assert "nested deeper than 32 levels" in lines[-1]
    assert app.state()["health"]["failures"] == 1


def test_32_levels_of_nesting_are_still_read(app):
    app.factory.route("GET", LIMITS_PATH, Reply(200, b"[" * 32 + b"]" * 32))
    result = app("run")
    assert "nested" not in result.err
    assert "is a JSON list, not an object" in result.err  # read, then refused by the parser


# --- anything else while reading usage ---------------------------------------------------------


def test_an_unforeseen_error_while_reading_is_a_counted_failed_run_in_one_line(app, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError(API_KEY)  # a bug whose text must not be printed

    monkeypatch.setattr("alerter.factory.fetch_reading", broken)
    result = app("run")
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[-1] == "factory-usage-alert: internal error: KeyError; run with -vv for details"
    assert "could not read usage (1 failed run in a row)" in lines[0] and len(lines) == 2
    assert app.state()["health"]["failures"] == 1
    assert API_KEY not in result.out + result.err
    assert "Traceback" not in app("run", "-v").err
    result = app("run", "-vv")
    assert "Traceback" in result.err and app.state()["health"]["failures"] == 3


# --- alerter.http on its own ---------------------------------------------------------------------


def test_redirects_are_never_followed(factory):
    factory.route("GET", "/a", Reply(307, b"", headers={"Location": factory.url + "/b"}))
    answer = http.request("GET", factory.url + "/a", peer="test", deadline=time.monotonic() + 10)
    assert answer.status == 307 and answer.headers["location"].endswith("/b")
    assert [c.path for c in factory.calls()] == ["/a"]


def test_tls_verification_cannot_be_turned_off():
    with pytest.raises(ValueError):
        http.request("GET", "https://127.0.0.1:9", peer="test", deadline=time.monotonic() + 1, verify=False)


def test_errors_name_the_peer_never_the_url(factory):
    port = factory.url.rsplit(":", 1)[1]
    factory.stop()
    with pytest.raises(http.PeerUnreachable) as caught:
        http.request(
            "GET", f"http://127.0.0.1:{port}/x?key=SECRET", peer="the peer", deadline=time.monotonic() + 10
        )
    assert str(caught.value) == "the peer unreachable (connection refused)"
    assert caught.value.reason == "connection refused"


def test_call_within_returns_raises_or_gives_up_at_the_deadline():
    assert http.call_within(time.monotonic() + 10, "x", lambda: 42) == 42
    with pytest.raises(KeyError):
        http.call_within(time.monotonic() + 10, "x", lambda: {}["missing"])
    with pytest.raises(http.PeerTimeout, match="^the peer timed out"):
        http.call_within(time.monotonic() - 1, "the peer", lambda: 42)
    gate = threading.Event()
    try:
        with pytest.raises(http.PeerTimeout, match="^the peer timed out"):
            http.call_within(time.monotonic() + 0.2, "the peer", gate.wait)
    finally:
        gate.set()  # the abandoned worker ends with the test


def test_answer_json_and_retry_after():
    answer = http.Answer(200, requests.structures.CaseInsensitiveDict({"retry-after": "3"}), b'{"a": [1]}')
    assert answer.json() == {"a": [1]}
    assert http.retry_after(answer) == 3.0
    for body in (b"", b" \n", b"<html>", b'{"a": 1', b"\xff\xfe\x00"):
        with pytest.raises(http.UnusableJson, match="not JSON"):
            http.Answer(200, {}, body).json()
    with pytest.raises(http.UnusableJson, match="nested deeper than 2 levels"):
        http.Answer(200, {}, b'{"a": {"b": 1}, "c": [[1]]}').json(max_depth=2)
    assert http.Answer(200, {}, b'{"a": {"b": 1}, "c": [1]}').json(max_depth=2)["a"] == {"b": 1}
