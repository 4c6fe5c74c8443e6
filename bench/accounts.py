"""How long a `run` with several accounts takes: 1, 10 and 50 accounts against the stand-in API.

Starts a stand-in Factory API on 127.0.0.1 that answers billing/limits per API key (each
account has its own key in its own variable, `api_key_env`), optionally after a delay
that plays the network's latency. For each count it runs the installed command once to
settle (the first run probes the endpoint and creates each account's state file), then
times steady-state runs: the full `factory-usage-alert run` process, wall time, median
of the repetitions, and the HTTP requests each run made.

    python bench/accounts.py [--counts 1 10 50] [--reps 5] [--latency 0.1]

Exits non-zero when a target is missed: 50 accounts in under 3 s (median), and exactly
one request per account in the steady state.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.standins import Recorded, Reply, StandIn  # noqa: E402
from tests.test_limits import limits_body, window  # noqa: E402

LIMITS_PATH = "/api/billing/limits"
TARGET_SECONDS = 3.0


def command() -> list[str]:
    """Return the installed command beside this interpreter (the venv's), or `python -m alerter`."""
    installed = Path(sys.executable).with_name("factory-usage-alert")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "alerter"]


def serve(factory: StandIn, keys: list[str], latency: float) -> None:
    """Answer billing/limits for every key (40 % used, a balance), after ``latency`` seconds."""
    body = limits_body(window(40, time.time() + 3 * 3600), extraUsageBalanceCents=5000)
    known = set(keys)

    def answer(rec: Recorded) -> Reply:
        token = rec.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in known:
            return Reply(401, {"error": "unauthorized"})
        return Reply(200, body, delay=latency)

    factory.route("GET", LIMITS_PATH, answer)


def measure(count: int, reps: int, latency: float, factory: StandIn) -> tuple[float, list[float], float]:
    """Run `run` with ``count`` accounts; return (median seconds, all times, requests per account per run)."""
    keys = [f"fk-bench-{i:03d}-0123456789abcdef" for i in range(count)]
    serve(factory, keys, latency)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", ""),
            "FACTORY_DISABLE_KEYRING": "1",
            **{f"BENCH_KEY_{i}": key for i, key in enumerate(keys)},
        }
        config = home / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "factory": {"base_url": factory.url, "endpoint": "auto", "deadline_seconds": 30},
                    "state_file": str(home / "state" / "state.json"),
                    "accounts": [
                        {"name": f"a{i:03d}", "api_key_env": f"BENCH_KEY_{i}"} for i in range(count)
                    ],
                }
            )
        )
        config.chmod(0o600)
        argv = [*command(), "run", "--config", str(config), "-q"]
        settle = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if settle.returncode != 0:
            raise SystemExit(f"the first run failed ({settle.returncode}): {settle.stderr.strip()}")
        times = []
        before = len(factory.calls())
        for _ in range(reps):
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"a run failed ({done.returncode}): {done.stderr.strip()}")
        per_account = (len(factory.calls()) - before) / (reps * count)
    return statistics.median(times), times, per_account


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--latency", type=float, default=0.1, help="seconds the stand-in waits before answering"
    )
    args = parser.parse_args()
    factory = StandIn().start()
    missed = []
    try:
        print(f"stand-in latency {args.latency:g} s, {args.reps} steady runs each, {os.cpu_count()} CPUs")
        print(f"{'accounts':>8}  {'median s':>8}  {'min s':>6}  {'max s':>6}  requests/account/run")
        for count in args.counts:
            median, times, per_account = measure(count, args.reps, args.latency, factory)
            print(f"{count:>8}  {median:>8.2f}  {min(times):>6.2f}  {max(times):>6.2f}  {per_account:g}")
            if per_account != 1:
                missed.append(
                    f"{count} accounts made {per_account:g} requests per account per run (target 1)"
                )
            if count >= 50 and median >= TARGET_SECONDS:
                missed.append(f"{count} accounts took {median:.2f} s (target < {TARGET_SECONDS:g} s)")
    finally:
        factory.stop()
    for line in missed:
        print(f"MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
