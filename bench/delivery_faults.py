"""Deliveries under faults: kills mid-delivery, silent channels past the deadline, a busy lock.

Everything runs on 127.0.0.1: a stand-in Factory API (an alert is due), json:// receivers
that count what arrives, silent channels (tests/standins.RawPeer/silent) and a lock
holder in another process. The job is the installed command's entry point (its stop gate
installed), run through the test-only fault launcher of tests/test_login_faults.py.

1. kills: for each kill point (before / after the Nth ``notify.send``, N = 1..CHANNELS) and
   each signal, run once with the fault, then once undisturbed; then ``--timed`` trials
   per signal sent from outside at a random moment of the deliveries (each receiver
   answering in 0.2 s). A trial is "doubled" when some channel received the alert twice;
   "extra" counts the surplus deliveries, "lost" the channels that got none.
2. silent: seconds from the start of a run to its end, with a good Factory and N silent
   channels (after ``--deadline`` s every channel still waiting is abandoned).
3. busy lock: another process holds the state lock for 3 s of a 4 s deadline and Factory
   answers in 2 s: the run's exit code, and whether it counted a failed read.

    .venv/bin/python bench/delivery_faults.py [--reps 5] [--deadline 5] [--only kills silent lock]

Bounded: every run is killed after 120 s; the default takes about 3-4 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.conftest import API_KEY, USAGE_PATH, bucket, python_path, usage_body  # noqa: E402
from tests.standins import JsonReceiver, RawPeer, Reply, StandIn, silent  # noqa: E402
from tests.test_login_faults import LAUNCHER  # noqa: E402
from tests.test_state_file import HOLDER  # noqa: E402

M = 1_000_000
CHANNELS = 6
HANG = 120.0


def write_config(root: Path, factory: StandIn, urls: list[str], **factory_extra) -> Path:
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": factory.url, **factory_extra},
                "state_file": str(root / "state" / "state.json"),
                "notify": {"urls": urls},
                "monitor": {"failures_before_alert": 1},
            }
        )
    )
    config.chmod(0o600)
    return config


def run_job(root: Path, config: Path, **fault: str) -> tuple[int | None, str]:
    """Run the installed command once (through the fault launcher); return (exit code, stderr)."""
    try:
        done = subprocess.run(
            _argv(config), env=_env(root, **fault), capture_output=True, text=True, timeout=HANG
        )
    except subprocess.TimeoutExpired:
        return None, "hung"
    return done.returncode, done.stderr


def start_job(root: Path, config: Path) -> subprocess.Popen:
    """Start the installed command's entry point (no fault) in the background."""
    return subprocess.Popen(
        _argv(config), env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _env(root: Path, **fault: str) -> dict[str, str]:
    """The environment of a run in ``root`` (its HOME), with the fault launcher's ``fault``."""
    return {
        "HOME": str(root),
        "FACTORY_API_KEY": API_KEY,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": python_path(str(ROOT)),
        "FAULT_INSTALLED": "1",
        **fault,
    }


def _argv(config: Path) -> list[str]:
    """The command line of a run through the fault launcher (the installed entry point)."""
    return [sys.executable, "-c", LAUNCHER, "run", "-q", "--config", str(config)]


def kills(reps: int) -> dict[str, dict[str, int]]:
    """Kill at every point of a delivery; return {signal: {trials, doubled, extra, lost}}."""
    factory = StandIn().start()
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))
    figures: dict[str, dict[str, int]] = {}
    try:
        for sig in ("SIGKILL", "SIGTERM"):
            tally = {"trials": 0, "doubled": 0, "extra": 0, "lost": 0}
            points = [f"{when}:send#{n}" for n in range(1, CHANNELS + 1) for when in ("before", "after")]
            for _ in range(reps):
                for point in points:
                    receivers = [JsonReceiver().start() for _ in range(CHANNELS)]
                    try:
                        with tempfile.TemporaryDirectory() as tmp:
                            root = Path(tmp)
                            config = write_config(root, factory, [r.apprise_url for r in receivers])
                            run_job(root, config, FAULT_AT=point, FAULT_SIGNAL=sig)
                            run_job(root, config)
                        arrived = [len(r.messages()) for r in receivers]
                    finally:
                        for r in receivers:
                            r.stop()
                    tally["trials"] += 1
                    tally["doubled"] += any(n > 1 for n in arrived)
                    tally["extra"] += sum(max(0, n - 1) for n in arrived)
                    tally["lost"] += sum(n == 0 for n in arrived)
            figures[sig] = tally
    finally:
        factory.stop()
    return figures


def timed_kills(trials: int, seed: int) -> dict[str, dict[str, int]]:
    """Signal the running job from outside at a random moment of its deliveries (each
    receiver takes 0.2 s to answer); return {signal: {trials, doubled, extra, lost}}."""
    rng = random.Random(seed)
    factory = StandIn().start()
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M)))
    figures: dict[str, dict[str, int]] = {}
    try:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            tally = {"trials": 0, "doubled": 0, "extra": 0, "lost": 0}
            for _ in range(trials):
                receivers = [JsonReceiver().start() for _ in range(CHANNELS)]
                for r in receivers:
                    r.route("POST", "/notify", lambda rec: Reply(200, {"ok": True}, delay=0.2))
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        root = Path(tmp)
                        config = write_config(root, factory, [r.apprise_url for r in receivers])
                        proc = start_job(root, config)
                        give_up = time.monotonic() + HANG
                        while sum(len(r.calls()) for r in receivers) == 0 and proc.poll() is None:
                            if time.monotonic() > give_up:
                                break
                            time.sleep(0.01)
                        time.sleep(rng.uniform(0.0, 0.25 * CHANNELS))  # somewhere in the deliveries
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(sig)
                        proc.communicate(timeout=HANG)
                        run_job(root, config)
                    arrived = [len(r.messages()) for r in receivers]
                finally:
                    for r in receivers:
                        r.stop()
                tally["trials"] += 1
                tally["doubled"] += any(n > 1 for n in arrived)
                tally["extra"] += sum(max(0, n - 1) for n in arrived)
                tally["lost"] += sum(n == 0 for n in arrived)
            figures[f"{sig.name} at a random moment"] = tally
    finally:
        factory.stop()
    return figures


def silent_channels(deadline: float) -> dict[str, float | None]:
    """Return {scenario: seconds the run took} for alerts x silent channels."""
    factory = StandIn().start()
    results: dict[str, float | None] = {}
    try:
        for alerts, count in ((1, 1), (1, 4), (2, 10)):
            premium = bucket(17 * M, 20 * M) if alerts == 2 else None  # a second meter past 80 %
            factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M, premium=premium)))
            peers = [RawPeer(silent).start() for _ in range(count)]
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    urls = [f"json://127.0.0.1:{p.url.rsplit(':', 1)[1]}/notify" for p in peers]
                    config = write_config(root, factory, urls, deadline_seconds=deadline)
                    started = time.monotonic()
                    code, _ = run_job(root, config)
                    took = time.monotonic() - started if code is not None else None
            finally:
                for p in peers:
                    p.stop()
            results[f"{alerts} alert(s) x {count} silent channel(s)"] = took
    finally:
        factory.stop()
    return results


def busy_lock() -> dict[str, object]:
    """The lock held 3 s of a 4 s deadline, Factory answering in 2 s: how the run ends."""
    factory = StandIn().start()
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(17 * M), delay=2.0))
    receiver = JsonReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            config = write_config(root, factory, [receiver.apprise_url], deadline_seconds=4)
            (root / "state").mkdir(mode=0o700)
            state = root / "state" / "state.json"
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(state), "job"],
                env={**os.environ, "PYTHONPATH": python_path(str(ROOT))},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout.readline() == "held\n"
            threading.Timer(3.0, holder.stdin.close).start()
            code, err = run_job(root, config)
            holder.wait(timeout=20)
            saved = json.loads(state.read_text()) if state.exists() else {}
            return {
                "exit": code,
                "failed reads counted": saved.get("health", {}).get("failures", 0),
                "notices": [m["title"] for m in receiver.messages()],
                "error": err.strip().splitlines()[-1] if err.strip() else "",
            }
    finally:
        factory.stop()
        receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="trials per kill point and signal")
    parser.add_argument("--timed", type=int, default=20, help="trials per signal sent at a random moment")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--deadline", type=float, default=5.0, help="factory.deadline_seconds")
    parser.add_argument("--only", nargs="*", default=["kills", "silent", "lock"])
    args = parser.parse_args()
    print(f"code: {ROOT}")
    if "kills" in args.only:
        figures = {**kills(args.reps), **timed_kills(args.timed, args.seed)}
        for sig, tally in figures.items():
            print(
                f"{sig}: {tally['doubled']} of {tally['trials']} trials doubled, "
                f"{tally['extra']} extra deliveries, {tally['lost']} lost"
            )
    if "silent" in args.only:
        for scenario, took in silent_channels(args.deadline).items():
            shown = "hung (killed)" if took is None else f"{took:.1f} s"
            print(f"deadline {args.deadline:g} s, {scenario}: {shown}")
    if "lock" in args.only:
        print(f"lock held 3 s of a 4 s deadline: {busy_lock()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
