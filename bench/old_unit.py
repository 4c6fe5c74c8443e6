"""The package upgraded, the units not copied again: how many alerts come twice?

An old unit (the release of 2026-11-25's user unit on systemd 252, or its system unit)
still sets ``StateDirectory=`` and now runs the new command; the user also runs the job by
hand. Runs alternate (unit, hand, unit, hand, ...) while usage climbs through every
threshold, against stand-ins on 127.0.0.1; the script counts the alerts delivered more
than once and the unit's runs that warned about the old unit.

    .venv/bin/python bench/old_unit.py [--tree PATH]

``--tree`` is the checkout measured (default: this one), e.g. a worktree of an older commit.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import USAGE_PATH, usage_body  # noqa: E402
from tests.standins import JsonReceiver, Reply, StandIn  # noqa: E402

# Percent used at each run; the unit runs first, then the hand, alternately.
STEPS = (40, 60, 60, 85, 85, 97, 97, 100, 100, 100)


def one_machine(tree: Path, old_dir_of) -> dict:
    factory = StandIn().start()
    receiver = JsonReceiver().start()
    start = time.time() - 10 * 86400
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            config = home / "config.yaml"
            settings = {"factory": {"base_url": factory.url}, "notify": {"urls": [receiver.apprise_url]}}
            config.write_text(json.dumps(settings))
            config.chmod(0o600)
            old_dir = old_dir_of(home)
            env = {
                "HOME": str(home),
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": str(tree),
                "FACTORY_API_KEY": "fk-bench-0123456789abcdef",
            }
            warned = 0
            for i, percent in enumerate(STEPS):
                factory.route("GET", USAGE_PATH, Reply(200, usage_body(percent * 200_000, start=start)))
                run_env = dict(env)
                if i % 2 == 0:  # the old unit
                    run_env.update(STATE_DIRECTORY=str(old_dir), INVOCATION_ID="0123")
                done = subprocess.run(
                    [sys.executable, "-m", "alerter", "--config", str(config), "run"],
                    env=run_env,
                    cwd=home,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"run {i} failed ({done.returncode}): {done.stderr}")
                warned += "started by a unit from a release before 1.0" in done.stderr
            # An alert is its threshold ("(past 80%)"), whatever percent it was sent at.
            titles = [m["title"].rsplit("(past ", 1)[-1] for m in receiver.messages()]
    finally:
        factory.stop()
        receiver.stop()
    counts = collections.Counter(titles)
    return {
        "alerts delivered": len(titles),
        "delivered more than once": sum(n - 1 for n in counts.values()),
        "unit runs that warned": f"{warned} of {(len(STEPS) + 1) // 2}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose job is measured")
    tree = parser.parse_args().tree.resolve()
    report = {
        "tree": str(tree),
        "user unit (systemd 252)": one_machine(tree, lambda home: home / ".config" / "factory-usage-alert"),
        # The system unit's place, /var/lib/factory-usage-alert/<user>, needs root: its
        # user unit twin above takes the same path through the code.
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
