"""Upgrading from the release of 2026-11-25 (commit fbc5bf8): how many alerts repeat?

That release's README had the user run the job by hand first, then enable the user
timer. By hand the state went to ``~/.local/state/factory-usage-alert/state.json``; the
timer's ``StateDirectory=`` is ``~/.config/factory-usage-alert`` on systemd 253 and older.
So two state files, each knowing some of what was sent. This script plays that story with
fbc5bf8's own code (a git worktree of it, run as a subprocess with its own python path)
against stand-ins on 127.0.0.1, then runs the code under test once and counts the alerts
it sends again.

    .venv/bin/python bench/upgrade_fbc5bf8.py [--new PATH] [--fixtures DIR]

``--new`` is the checkout to measure (default: this one); ``--fixtures`` copies the two
state files fbc5bf8 wrote there (how tests/data/fbc5bf8-*.json were made).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tests.conftest import USAGE_PATH, usage_body  # noqa: E402
from tests.standins import JsonReceiver, Reply, StandIn  # noqa: E402

OLD = "fbc5bf8"


def run(code: Path, home: Path, config: Path, timer: bool) -> None:
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(code),
        "FACTORY_API_KEY": "fk-bench-0123456789abcdef",
        "FACTORY_HOME_OVERRIDE": str(home),
    }
    if timer:  # the user unit's StateDirectory= on systemd 252
        env["STATE_DIRECTORY"] = str(home / ".config" / "factory-usage-alert")
        env["INVOCATION_ID"] = "0123"
    done = subprocess.run(
        [sys.executable, "-m", "alerter", "run", "--config", str(config)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{code} run failed ({done.returncode}): {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=Path, default=HERE)
    parser.add_argument("--fixtures", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fua-upgrade-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", str(old), OLD],
            check=True,
            capture_output=True,
        )
        factory, receiver = StandIn().start(), JsonReceiver().start()
        try:
            home = Path(tmp) / "home"
            home.mkdir()
            config = home / "config.yaml"
            config.write_text(
                f"factory:\n  base_url: {factory.url}\n  source: allowance\n"
                f"notify:\n  urls: ['{receiver.apprise_url}']\n"
            )
            start = time.time() - 10 * 86400

            def serve(percent: float) -> None:
                factory.route("GET", USAGE_PATH, Reply(200, usage_body(int(percent * 200_000), start=start)))

            serve(85)
            run(old, home, config, timer=False)  # by hand: the 80 % alert
            run(old, home, config, timer=True)  # the timer's own state: 80 % again (fbc5bf8's fault)
            serve(97)
            run(old, home, config, timer=True)  # the timer: 95 %
            before = len(receiver.messages())
            hand = home / ".local" / "state" / "factory-usage-alert" / "state.json"
            unit = home / ".config" / "factory-usage-alert" / "state.json"
            if args.fixtures:
                shutil.copy(hand, args.fixtures / f"{OLD}-hand.json")
                shutil.copy(unit, args.fixtures / f"{OLD}-timer.json")
                (args.fixtures / f"{OLD}-window.txt").write_text(f"{start} {receiver.apprise_url}\n")
            run(args.new, home, config, timer=False)  # the upgrade: the new units set no StateDirectory=
            first = len(receiver.messages()) - before
            run(args.new, home, config, timer=False)
            second = len(receiver.messages()) - before - first
        finally:
            factory.stop()
            receiver.stop()
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old)], check=False)
    print(f"{args.new}: alerts sent again after the upgrade: {first} (first run), {second} (second run)")


if __name__ == "__main__":
    main()
