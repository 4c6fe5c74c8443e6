"""Faults around the renewal of droid's login, injected for real.

The job runs as a subprocess (``python -m alerter run``) against droid's file store in a
private HOME, a WorkOS stand-in that rotates single-use refresh tokens, and a Factory
stand-in. Kills are sent by a test-only launcher that wraps the job's own functions and
signals its process at a named point; nothing in ``alerter/`` knows about it. The real
droid 0.225.2 checks that it loads what is left, and races the job for the same token.

After every fault, what must hold: droid's store holds a refresh token WorkOS still
accepts, droid loads it, nothing the renewal left beside the store survives the next
run, and the job never says "login expired" while the login lives.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alerter.credentials.identity import token_expiry
from alerter.credentials.store import decrypt_envelope
from tests.conftest import USAGE_PATH, python_path, same_clock, usage_body
from tests.credentials.helpers import SOON, login_data, start_workos, wait_for, write_keyfile_store
from tests.credentials.test_droid_interop import DROID, DROID_VERSION, droid_doctor, droid_env, iso_ms
from tests.standins import Reply, StandIn

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
HANG = 120  # seconds: only a hung run takes this long

needs_droid = pytest.mark.skipif(
    DROID is None, reason=f"real droid {DROID_VERSION} not found: set DROID_BIN or run .ci/fetch-droid.sh"
)

# Runs the job with one fault: at the Nth call of a named function (FAULT_AT, e.g.
# "after:request_new_tokens#1"), the process sends itself FAULT_SIGNAL. FAULT_SAVE_WAIT
# shortens the wait for droid's own save where no droid is running; FAULT_INSTALLED runs
# the command's entry point (its stop gate installed) instead of cli.main.
LAUNCHER = textwrap.dedent(
    """
    import functools, os, signal, sys
    from alerter import cli, notify
    from alerter.credentials import lock, refresh, store, writeback

    spec = os.environ.get("FAULT_AT")
    if os.environ.get("FAULT_SAVE_WAIT"):
        refresh.DROID_SAVE_WAIT_SECONDS = float(os.environ["FAULT_SAVE_WAIT"])
    if spec:
        where, _, nth = spec.partition("#")
        when, _, name = where.partition(":")
        nth, sig, calls = int(nth or 1), signal.Signals[os.environ["FAULT_SIGNAL"]], [0]

        def wrap(func):
            @functools.wraps(func)
            def faulty(*args, **kwargs):
                calls[0] += 1
                hit = calls[0] == nth
                if hit and when == "before":
                    os.kill(os.getpid(), sig)
                result = func(*args, **kwargs)
                if hit and when == "after":
                    os.kill(os.getpid(), sig)
                return result
            return faulty

        class Os:  # a module's view of os, with one call wrapped
            def __getattr__(self, attr):
                return getattr(os, attr)

        homes = {
            "read_store": (store, refresh, writeback),  # each module imported it by name
            "reserve": (writeback,), "stage": (writeback,), "install": (writeback,),
            "request_new_tokens": (refresh,), "prepare": (lock,), "take": (lock,), "release": (lock,),
            "send": (notify,),  # one notification to one channel
        }
        os_calls = {"replace": writeback, "mkdir": lock, "rename": lock}
        if name in os_calls:
            view = Os()
            setattr(view, name, wrap(getattr(os, name)))
            os_calls[name].os = view
        else:
            wrapped = wrap(getattr(homes[name][0], name))
            for module in homes[name]:
                setattr(module, name, wrapped)
    if os.environ.get("FAULT_INSTALLED"):  # as the installed command runs: its stop gate too
        cli.entry_point()
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Rig:
    """One user's machine: droid's file store under a private HOME, WorkOS and Factory
    stand-ins, and the job's config pointing at them."""

    def __init__(self, root: Path, expires_in: float = SOON) -> None:
        self.root = root
        self.home = root / "home"
        self.store = self.home / ".factory"
        self.workos, self._stop_workos = start_workos()
        self.factory = StandIn().start()
        self.factory.route("GET", USAGE_PATH, Reply(200, usage_body(M)))
        first = login_data(expires_in)
        self.first_refresh_token = first["refresh_token"]
        self.key = write_keyfile_store(self.store, first)
        self.config = root / "config.yaml"
        config = {
            "factory": {"base_url": self.factory.url, "workos_url": self.workos.url},
            "state_file": str(root / "state" / "state.json"),
        }
        self.config.write_text(yaml.safe_dump(config))
        self.config.chmod(0o600)

    def close(self) -> None:
        self._stop_workos()
        self.factory.stop()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TZ": "UTC",
            **same_clock(),  # the job judges token expiry by the same (maybe faked) clock
            "PYTHONPATH": python_path(str(ROOT)),
            **extra,
        }

    def start(self, **extra: str) -> subprocess.Popen:
        """Start the job; with FAULT_* in ``extra``, through the fault launcher."""
        argv = ["run", "--config", str(self.config)]
        command = ["-c", LAUNCHER, *argv] if extra else ["-m", "alerter", *argv]
        return subprocess.Popen(
            [sys.executable, *command],
            env=self.env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, **extra: str) -> Result:
        return finish(self.start(**extra))

    def stored(self) -> dict:
        return json.loads(decrypt_envelope((self.store / "auth.v2.file").read_text(), self.key))

    def holds_live_login(self) -> bool:
        """True when the store's refresh token is one WorkOS issued (or the first) and not spent."""
        token = self.stored().get("refresh_token")
        issued = {pair["refresh_token"] for pair in self.workos.issued}
        known = token == self.first_refresh_token or token in issued
        return known and self.workos.accepts(token)

    def leftovers(self) -> list[str]:
        """What a renewal or droid's lock left beside the store."""
        return sorted(
            p.name
            for p in self.store.iterdir()
            if ".reserve-" in p.name or ".renewed-" in p.name or "auth.v2.write" in p.name
        )

    def issued(self) -> dict:
        (pair,) = self.workos.issued
        return pair


@pytest.fixture
def default_stop_signals():
    """SIGINT and SIGHUP as a timer or a terminal gives them, for the jobs this test starts.

    A suite started in the background (`&`, nohup) has them ignored, an ignored signal
    stays ignored across exec, and the job rightly keeps it so. Set here, in the test's
    own (main) thread, not in the child before exec: that is not safe with threads.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def finish(proc: subprocess.Popen, timeout: float = HANG) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the job hung:\n{err}") from None
    return Result(proc.returncode, out, err)


@pytest.fixture
def rig(tmp_path):
    machine = Rig(tmp_path)
    yield machine
    machine.close()


def assert_droid_loads(rig: Rig, access_token: str | None = None) -> None:
    """The real droid reads the store; with ``access_token``, it is the token droid reports."""
    report = droid_doctor(rig.home, rig.workos.url)
    assert report["auth.credentials"]["status"] == "pass", report["auth.credentials"]
    if access_token is not None:
        expected = f"access token valid until {iso_ms(token_expiry(access_token))}"
        assert report["auth.tokenExpiry"]["detail"].startswith(expected), report["auth.tokenExpiry"]


# -- 1. WorkOS answers slowly ---------------------------------------------------------------


@needs_droid
def test_a_slow_workos_answer_is_awaited_installed_and_loaded_by_droid(tmp_path):
    rigs = {delay: Rig(tmp_path / f"answer-after-{delay}s") for delay in (10.0, 20.0)}
    try:
        for delay, machine in rigs.items():
            machine.workos.answer_delay = delay  # rotated at once, answered late
        running = {delay: machine.start() for delay, machine in rigs.items()}  # both delays overlap
        for delay, machine in rigs.items():
            result = finish(running[delay])
            assert result.code == 0, (delay, result.err)
            pair = machine.issued()
            stored = machine.stored()
            assert stored["refresh_token"] == pair["refresh_token"]
            assert stored["access_token"] == pair["access_token"]
            assert machine.holds_live_login()
            (call,) = machine.factory.calls("GET", USAGE_PATH)
            assert call.headers["authorization"] == f"Bearer {pair['access_token']}"
            assert machine.leftovers() == []
            machine.workos.answer_delay = 0.0  # droid doctor probes WorkOS too
            assert_droid_loads(machine, pair["access_token"])
    finally:
        for machine in rigs.values():
            machine.close()


# -- 2. Kills around the renewal ------------------------------------------------------------

# Steps of a renewal, in the order a run takes them (``#N``: the Nth call in the run).
# read_store #3 is the compare under droid's lock; replace #1 names the staged pair, #2
# installs it. Kills at the steps left out here leave the same files as a neighbour's.
SIGKILL_POINTS = [
    "after:reserve#1",
    "after:mkdir#1",  # the lock's pending directory is made, its owner record not yet written
    "before:rename#1",  # ... written, the directory not yet under droid's pending name
    "after:prepare#1",
    "before:request_new_tokens#1",
    "after:request_new_tokens#1",  # WorkOS answered: the pair is already staged on disk
    "before:replace#1",  # the pair is written into the reserved file, not yet named
    "after:stage#1",
    "after:take#1",
    "after:read_store#3",
    "after:replace#2",
    "after:rename#3",  # the lock is released (renamed to a name of the job's), not yet deleted
    "after:release#1",
]
# From sending the request until the pair is installed, SIGTERM waits; before and after, it
# stops the run like SIGKILL does.
TERM_WAITS = [
    "before:request_new_tokens#1",
    "after:request_new_tokens#1",
    "before:replace#1",
    "after:take#1",
    "after:replace#2",
]
SIGTERM_POINTS = ["after:mkdir#1", "after:prepare#1", *TERM_WAITS]
# No step loses the login: the pair is staged on disk before request_new_tokens returns. (A
# SIGKILL in the microseconds between reading WorkOS's answer and the fsync inside it
# still would; no step of the job can be placed there, and the random kills below can.)
LOST_TO_SIGKILL: set[str] = set()
# The real droid checks a few of the outcomes (each check takes a second or two).
CHECKED_BY_DROID = {
    ("before:replace#1", "SIGKILL"),
    ("after:take#1", "SIGKILL"),
    ("after:replace#2", "SIGKILL"),
    ("after:request_new_tokens#1", "SIGTERM"),
}
KILLS = [(point, "SIGKILL") for point in SIGKILL_POINTS] + [(point, "SIGTERM") for point in SIGTERM_POINTS]


def assert_live_and_tidy(rig: Rig) -> None:
    """The store holds the pair WorkOS issued last, WorkOS still accepts it, nothing is left over."""
    assert rig.holds_live_login()
    assert rig.stored()["refresh_token"] == rig.workos.issued[-1]["refresh_token"]
    assert rig.leftovers() == []


@pytest.mark.parametrize(("point", "signame"), KILLS, ids=[f"{s}-{p}" for p, s in KILLS])
def test_a_run_killed_around_the_renewal_leaves_a_live_login(rig, point, signame):
    killed = rig.run(FAULT_AT=point, FAULT_SIGNAL=signame)
    assert killed.code == -signal.Signals[signame], killed.err  # the fault point was reached
    if signame == "SIGTERM" and point in TERM_WAITS:
        assert rig.stored()["refresh_token"] == rig.issued()["refresh_token"]  # installed, then stopped
        assert rig.leftovers() == []

    lost = signame == "SIGKILL" and point in LOST_TO_SIGKILL
    recovered = rig.run(FAULT_SAVE_WAIT="0.3") if lost else rig.run()
    if lost:
        # The one window no process can cover: the login is gone; the job uses the access
        # token while it lasts, then says "login expired".
        assert not rig.workos.accepts(rig.stored()["refresh_token"])
        assert recovered.code == 0 and "WorkOS rejected the refresh token" in recovered.err
        return
    assert recovered.code == 0, recovered.err
    assert "login expired" not in killed.err + recovered.err
    assert len(rig.workos.issued) == 1  # one renewal, by the killed run or the next
    assert_live_and_tidy(rig)
    (call,) = rig.factory.calls("GET", USAGE_PATH)
    assert call.headers["authorization"] == f"Bearer {rig.stored()['access_token']}"
    if (point, signame) in CHECKED_BY_DROID and DROID is not None:
        assert_droid_loads(rig, rig.stored()["access_token"])


def test_a_stop_signal_while_taking_the_reclaim_directory_waits_for_its_owner_record(
    rig, default_stop_signals
):
    # A lock left by a writer that is gone: the run reclaims it, taking droid's reclaim
    # directory droid's way (mkdir, then the owner record). Stopped between the two, it
    # would leave a reclaim directory without an owner, which keeps droid waiting 10 s.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    lock = rig.store / "auth.v2.write.lock"
    lock.mkdir(mode=0o700)
    (lock / "owner.json").write_text(json.dumps({"token": "t", "pid": int(gone.stdout)}))
    killed = rig.run(FAULT_AT="after:mkdir#1", FAULT_SIGNAL="SIGTERM")
    assert killed.code == -signal.SIGTERM, killed.err
    reclaim = rig.store / "auth.v2.write.lock.reclaim"
    owner = json.loads((reclaim / "owner.json").read_text())
    assert owner["pid"] > 0 and owner["token"]  # whole: a stale one the next run clears
    recovered = rig.run()
    assert recovered.code == 0, recovered.err
    assert_live_and_tidy(rig)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stop_signal_while_workos_answers_waits_until_the_pair_is_installed(
    rig, signame, default_stop_signals
):
    running: list[subprocess.Popen] = []
    # Sent while WorkOS holds the request, before it rotates the token and answers.
    rig.workos.script = [lambda: running[0].send_signal(signal.Signals[signame])]
    rig.workos.answer_delay = 0.3
    running.append(rig.start())
    stopped = finish(running[0])
    # The job ends with the signal; SIGINT is the user's Ctrl-C, reported as "interrupted".
    assert stopped.code == (130 if signame == "SIGINT" else -signal.Signals[signame]), stopped.err
    assert rig.factory.calls() == []  # it stopped right after the renewal
    assert_live_and_tidy(rig)
    assert rig.stored()["access_token"] == rig.issued()["access_token"]

    assert rig.run().code == 0
    assert len(rig.workos.requests) == 1  # the next run found the renewed login


def with_two_accounts(rig: Rig) -> tuple[Path, bytes]:
    """Make the rig's config two accounts, each with its own droid home (the rig's first);
    return the second home's store directory and its key."""
    second = rig.root / "second"
    data = login_data(SOON)
    key = write_keyfile_store(second / ".factory", data)
    config = yaml.safe_load(rig.config.read_text())
    config["accounts"] = [
        {"name": "one", "factory_home": str(rig.home)},
        {"name": "two", "factory_home": str(second)},
    ]
    rig.config.write_text(yaml.safe_dump(config))
    rig.first_refresh_token_two = data["refresh_token"]  # type: ignore[attr-defined]
    return second / ".factory", key


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_with_accounts_a_stop_signal_waits_for_the_renewal_in_the_accounts_thread(
    rig, signame, default_stop_signals
):
    # Each account renews in a worker thread of the installed command (python -m alerter:
    # its entry point routes the stop signals through the gate for every thread).
    store_two, key_two = with_two_accounts(rig)
    running: list[subprocess.Popen] = []
    rig.workos.script = [lambda: running[0].send_signal(signal.Signals[signame])]
    rig.workos.answer_delay = 0.3
    running.append(rig.start())
    stopped = finish(running[0])
    assert stopped.code in (130 if signame == "SIGINT" else -signal.Signals[signame],), stopped.err
    assert rig.workos.issued, "the signal came before any renewal"
    assert "stopping once the renewal is done" in stopped.out + stopped.err
    issued = {pair["refresh_token"] for pair in rig.workos.issued}
    stored_two = json.loads(decrypt_envelope((store_two / "auth.v2.file").read_text(), key_two))
    for token in (rig.stored()["refresh_token"], stored_two["refresh_token"]):
        assert rig.workos.accepts(token), "a renewal was cut in two: droid is logged out"
        assert token in issued or token in (rig.first_refresh_token, rig.first_refresh_token_two)
    assert rig.leftovers() == []

    again = rig.run()
    assert again.code == 0, again.err


def test_a_workos_answer_after_the_runs_deadline_is_awaited_and_installed(rig):
    config = yaml.safe_load(rig.config.read_text())
    # A renewal starts while 3/4 of the deadline is left: 3 s for a loaded machine to start.
    config["factory"]["deadline_seconds"] = 12
    rig.config.write_text(yaml.safe_dump(config))
    # Answered 12 s after the request arrived, so after the run's deadline (it began
    # earlier): the token is spent at once, the pair comes late.
    rig.workos.answer_delay = 12.0
    late = rig.run()
    assert "login expired" not in late.err
    pair = rig.issued()  # the renewal was started: enough of the deadline was left
    assert rig.stored()["refresh_token"] == pair["refresh_token"], late.err
    assert_live_and_tidy(rig)

    rig.workos.answer_delay = 0.0
    assert rig.run().code == 0
    assert len(rig.workos.requests) == 1  # the next run found the renewed pair


@needs_droid
def test_droid_renewing_first_at_a_slow_workos_is_no_login_expired(tmp_path):
    rig = Rig(tmp_path, expires_in=40)  # droid renews within 60 s of expiry, the job within 5 min
    try:
        granted = threading.local()
        plain_answer = rig.workos.answer

        def answer(form: dict):
            reply = plain_answer(form)
            granted.ok = reply[0] == 200
            return reply

        rig.workos.answer = answer  # type: ignore[method-assign]
        # A renewal takes WorkOS 9 s to grant (longer than the job's wait for droid's save);
        # a rejection comes at once.
        rig.workos.answer_delay = lambda: 9.0 if getattr(granted, "ok", False) else 0.0
        droid = subprocess.Popen(
            [str(DROID), "doctor", "--auth", "--json"],
            env=droid_env(rig.home, rig.workos.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: any(r["refresh_token"] == rig.first_refresh_token for r in rig.workos.requests), 60)
        job = rig.run()  # its request reaches WorkOS after droid's: rejected
        finish(droid)
        assert "login expired" not in job.err
        assert job.code == 0, job.err  # the access token is still valid: it is used
        assert rig.workos.requests[-1]["refresh_token"] == rig.first_refresh_token  # it was rejected
        assert rig.holds_live_login()  # droid's pair
        rig.workos.answer_delay = 0.0
        again = rig.run()
        assert again.code == 0, again.err
        assert "login expired" not in again.err
    finally:
        rig.close()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_a_run_killed_at_a_random_moment_while_workos_is_slow(rig, signame, seed):
    rig.workos.answer_delay = 1.0
    proc = rig.start()
    time.sleep(random.Random(seed).uniform(0.1, 2.5))  # anywhere from start-up to the end
    proc.send_signal(signal.Signals[signame])
    killed = finish(proc)
    rotated = bool(rig.workos.issued)  # the killed run's request reached WorkOS
    staged = [name for name in rig.leftovers() if ".renewed-" in name]
    if signame == "SIGTERM" and rotated:
        assert rig.stored()["refresh_token"] == rig.issued()["refresh_token"], killed.err

    recovered = rig.run(FAULT_SAVE_WAIT="0.3")
    if signame == "SIGKILL" and not rig.holds_live_login():
        # Killed while WorkOS held the request (or had just answered): no process survives that.
        assert rotated and not staged, killed.err
        # The access token still works, so the rejection may be droid's renewal in flight:
        # the token is used, and "login expired" waits until it has expired as well.
        assert recovered.code == 0 and "login expired" not in recovered.err, recovered.err
        assert "WorkOS rejected the refresh token" in recovered.err
        return
    assert recovered.code == 0, recovered.err
    assert_live_and_tidy(rig)


# -- 3. The job and the real droid renew the same login ---------------------------------------

ROUNDS = 15


@needs_droid
def test_the_job_and_droid_renewing_the_same_short_lived_login_never_log_it_out(tmp_path):
    rng = random.Random(20250)
    rig = Rig(tmp_path, expires_in=40)  # both renew it: droid within 60 s of expiry, the job within 5 min
    # WorkOS answers take a moment, so both often hold the same refresh token at once; not
    # much longer: droid doctor, holding a token it must renew again at once, may exit
    # before a slow answer arrives and so log itself out (seen from about 0.7 s).
    rig.workos.answer_delay = lambda: rng.uniform(0.02, 0.3)

    def start_droid() -> subprocess.Popen:
        return subprocess.Popen(
            [str(DROID), "doctor", "--auth", "--json"],
            env=droid_env(rig.home, rig.workos.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    try:
        for round_number in range(ROUNDS):
            rig.workos.new_token_lifetime = rng.uniform(30, 50)
            lag = rng.uniform(-0.3, 0.6)  # how much later the job starts than droid
            if lag >= 0:
                droid = start_droid()
                time.sleep(lag)
                job = rig.start()
            else:
                job = rig.start()
                time.sleep(-lag)
                droid = start_droid()
            finish(droid)  # droid may lose the race for the token: its next command re-reads
            result = finish(job)
            where = f"round {round_number}: {result.err}"
            assert result.code == 0, where  # never "login expired" (3) while droid is logged in
            assert rig.holds_live_login(), where
            assert rig.leftovers() == [], where
            delay, rig.workos.answer_delay = rig.workos.answer_delay, 0.0
            report = droid_doctor(rig.home, rig.workos.url)  # droid loads it, and renews it again
            rig.workos.answer_delay = delay
            assert report["auth.credentials"]["status"] == "pass", where
            assert report["auth.verify"]["status"] == "pass", (where, report["auth.verify"])
            assert rig.holds_live_login(), where
    finally:
        rig.close()
