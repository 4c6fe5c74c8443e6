"""A reader that stops reading (`status | head -1`): what each command says and returns.

Each command runs once with stdout a pipe whose read end is already closed, against a
Factory stand-in on 127.0.0.1 (usage at 80 %, one json:// channel), in a private HOME.
For each it reports the exit code, whether stderr said "internal error", how many
"--- Logging error ---" tracebacks stderr held, and (for `run -v`) whether the alert was
delivered and recorded.

    .venv/bin/python bench/closed_output.py [--tree PATH]

``--tree`` is the checkout measured (default: this one), e.g. a worktree of an older commit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import USAGE_PATH, usage_body  # noqa: E402
from tests.standins import JsonReceiver, Reply, StandIn  # noqa: E402

COMMANDS = (
    ("run", "-v"),
    ("status",),
    ("status", "--json"),
    ("history",),
    ("check-config",),
    ("backtest", "--example"),
)


def into_a_closed_pipe(tree: Path, home: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(tree),
        "FACTORY_API_KEY": "fk-bench-0123456789abcdef",
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
            check=False,
        )
    finally:
        os.close(write_end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose job is measured")
    tree = parser.parse_args().tree.resolve()
    factory = StandIn().start()
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(16_000_000)))
    receiver = JsonReceiver().start()
    report: dict = {"tree": str(tree)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            config = home / ".config" / "factory-usage-alert" / "config.yaml"
            config.parent.mkdir(parents=True)
            config.write_text(
                json.dumps({"factory": {"base_url": factory.url}, "notify": {"urls": [receiver.apprise_url]}})
            )
            config.chmod(0o600)
            for args in COMMANDS:
                done = into_a_closed_pipe(tree, home, args)
                report[" ".join(args)] = {
                    "exit": done.returncode,
                    "internal error": "internal error" in done.stderr,
                    "logging tracebacks": done.stderr.count("--- Logging error ---"),
                    "stderr lines": len(done.stderr.splitlines()),
                }
            state = home / ".local" / "state" / "factory-usage-alert" / "state.json"
            report["run -v"]["delivered"] = len(receiver.messages())
            ledger = state.exists() and json.loads(state.read_text()).get("ledger")
            report["run -v"]["recorded"] = bool(ledger)
    finally:
        factory.stop()
        receiver.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
