"""How much a quiet `run` costs next to the single HTTP request it has to make.

Starts a stand-in Factory API on 127.0.0.1, then times, interleaved over many
repetitions, (a) a full `factory-usage-alert run` with nothing to send and (b) a bare
Python script that makes only the same GET with requests. Reports medians, the ratio,
peak RSS of each (from the kernel's rusage of the child) and HTTP requests per run.

    python bench/run_overhead.py [--reps 30]

Exits non-zero when a target is missed: median ratio <= 1.3, peak RSS < 60 MB,
exactly one request per steady-state run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import usage_body  # noqa: E402
from tests.standins import Reply, StandIn  # noqa: E402

BARE = """
import sys, requests
r = requests.get(sys.argv[1], params={"useCache": "true"},
                 headers={"Authorization": "Bearer " + sys.argv[2]}, timeout=10)
r.raise_for_status()
r.json()
"""
# The same script ending the way the job's command ends (flush, then os._exit, skipping
# the interpreter's teardown of every module): printed beside, so that what the job gains
# by ending early can be told apart from what it saves by doing less.
BARE_EARLY_EXIT = (
    BARE
    + """
import os
sys.stdout.flush()
os._exit(0)
"""
)


# A forked child's peak RSS starts at its parent's size, and this process is large (a
# server, test helpers). So a tiny launcher forks and execs the command, and reports the
# command's own wall time and peak RSS.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(argv: list[str], env: dict) -> tuple[float, int]:
    """Run argv; return (wall seconds, peak RSS in KiB) of that command alone."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}): {done.stderr.strip()}")
    elapsed, rss = done.stdout.split()
    return float(elapsed), int(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument(
        "--droid-store",
        action="store_true",
        help="log in through droid's encrypted file store (token days from expiry) instead of an API key",
    )
    args = parser.parse_args()

    server = StandIn().start()
    server.route("GET", "/api/organization/subscription/usage", Reply(200, usage_body(3_000_000)))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "factory": {"base_url": server.url, "source": "allowance"},
                    "state_file": str(Path(tmp) / "state.json"),
                    "notify": {"urls": ["json://127.0.0.1:9/never-called"]},
                }
            )
        )
        config.chmod(0o600)
        env = {
            "HOME": tmp,
            "PATH": os.environ.get("PATH", ""),
            "FACTORY_API_KEY": "fk-bench-key",
            "FACTORY_HOME_OVERRIDE": str(Path(tmp) / "droid"),  # droid reads droid/.factory
        }
        if args.droid_store:
            from tests.credentials.helpers import DAY, login_data, write_keyfile_store

            write_keyfile_store(Path(tmp) / "droid" / ".factory", login_data(5 * DAY))
            del env["FACTORY_API_KEY"]
        run = [sys.executable, "-m", "alerter", "run", "--config", str(config), "-q"]
        bare = [
            sys.executable,
            "-c",
            BARE,
            server.url + "/api/organization/subscription/usage",
            "fk-bench-key",
        ]
        timed(run, env)  # the first run checks the channel URLs once and saves state
        before = len(server.calls())
        bare_early = [sys.executable, "-c", BARE_EARLY_EXIT, *bare[3:]]
        runs, bares, early = [], [], []
        for _ in range(args.reps):
            runs.append(timed(run, env))
            bares.append(timed(bare, env))
            early.append(timed(bare_early, env))
        per_run = (len(server.calls()) - before - 2 * args.reps) / args.reps  # minus both bare scripts
    server.stop()

    run_median = statistics.median(t for t, _ in runs)
    bare_median = statistics.median(t for t, _ in bares)
    ratio = run_median / bare_median
    run_rss = max(r for _, r in runs) / 1024
    bare_rss = max(r for _, r in bares) / 1024
    login = "droid's file store" if args.droid_store else "FACTORY_API_KEY"
    print(f"repetitions: {args.reps} of each, interleaved; login: {login}")
    print("| what | median wall time | peak RSS | HTTP requests |")
    print("|---|---|---|---|")
    print(
        f"| `run`, nothing to send | {run_median * 1000:.0f} ms | {run_rss:.1f} MB | {per_run:.2f} per run |"
    )
    print(f"| bare requests script | {bare_median * 1000:.0f} ms | {bare_rss:.1f} MB | 1 |")
    early_median = statistics.median(t for t, _ in early)
    print(f"| bare script, ending early like the job | {early_median * 1000:.0f} ms | | 1 |")
    print(f"ratio run / bare: {ratio:.2f} (target <= 1.3)")
    print(f"ratio run / bare ending early: {run_median / early_median:.2f} (for comparison)")
    ok = ratio <= 1.3 and run_rss < 60 and per_run == 1
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
