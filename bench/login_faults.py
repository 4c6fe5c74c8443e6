"""Does a run ever log droid out? Faults around a renewal, counted over many trials.

Every trial is a real `run` process (``python -m alerter``, the installed command's entry
point) against droid's file store in a private HOME, a WorkOS stand-in on 127.0.0.1 that
rotates single-use refresh tokens, and a Factory stand-in. Scenarios:

- ``kills``: `accounts:` with two droid homes, both due for renewal; SIGTERM, SIGINT or
  SIGHUP (in turn) at a random moment after WorkOS received the first refresh token,
  with a slow (2 s) and a fast (0.05 s) WorkOS. After the killed run, an account whose
  store does not hold a live pair is "failing until the next run" when a later run
  repairs it, "lost" when not.
- ``deadline``: the run's deadline against a later WorkOS answer (8 s / 9 s, 10 s / 9 s,
  60 s / 65 s); lost when the store ends up holding a spent token.
- ``droid-first``: the real droid 0.225.2 (``droid doctor --auth``) renews first at a
  WorkOS that takes 9 s to grant a renewal (rejections come at once); the job starts
  0-1 s after droid's request arrived. Counted: the job's false "login expired" (exit 3).

    .venv/bin/python bench/login_faults.py [--tree PATH] [--scenario kills deadline droid-first]
        [--trials 20] [--rounds 6]

``--tree`` runs the alerter code of another checkout (e.g. an older commit in a
temporary `git worktree`); the stand-ins always come from this one. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from alerter.credentials.store import decrypt_envelope  # noqa: E402
from tests.conftest import USAGE_PATH, usage_body  # noqa: E402
from tests.credentials.helpers import SOON, login_data, start_workos, write_keyfile_store  # noqa: E402
from tests.standins import Reply, StandIn  # noqa: E402

HANG = 400.0  # seconds: no run may take this long
DROID = Path(os.environ.get("DROID_BIN") or ROOT / ".cache/droid-0.225.2/package/bin/droid")
CLOSED_PORT = "http://127.0.0.1:9"


class Machine:
    """One user's machine: droid homes (one per account), the stand-ins, the job's config."""

    def __init__(self, root: Path, tree: Path, accounts: int, deadline: float = 60, expires_in=SOON):
        self.root, self.tree = root, tree
        self.workos, self._stop_workos = start_workos()
        self.factory = StandIn().start()
        self.factory.route("GET", USAGE_PATH, Reply(200, usage_body(1_000_000)))
        self.homes = [root / f"user{i}" for i in range(accounts)]
        self.keys, self.first = {}, set()
        for home in self.homes:
            data = login_data(expires_in)
            self.first.add(data["refresh_token"])
            self.keys[home] = write_keyfile_store(home / ".factory", data)
        config: dict = {
            "factory": {
                "base_url": self.factory.url,
                "workos_url": self.workos.url,
                "deadline_seconds": deadline,
            },
            "state_file": str(root / "state" / "state.json"),
        }
        if accounts > 1:
            config["accounts"] = [{"name": f"a{i}", "factory_home": str(h)} for i, h in enumerate(self.homes)]
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.config.chmod(0o600)

    def close(self) -> None:
        self._stop_workos()
        self.factory.stop()

    def start(self) -> subprocess.Popen:
        env = {
            "HOME": str(self.homes[0]),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TZ": "UTC",
            "PYTHONPATH": str(self.tree),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "alerter", "run", "--config", str(self.config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
        )

    def live(self, home: Path) -> bool:
        """True when the store holds a refresh token WorkOS issued (or the first) and has not spent."""
        text = (home / ".factory" / "auth.v2.file").read_text()
        token = json.loads(decrypt_envelope(text, self.keys[home]))["refresh_token"]
        issued = {pair["refresh_token"] for pair in self.workos.issued}
        return (token in self.first or token in issued) and self.workos.accepts(token)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, "hung: " + err
    return proc.returncode, err


def kill_trial(tree: Path, delay: float, seed: int) -> str:
    """One killed run with two accounts; return "live", "until-next-run" or "lost"."""
    rng = random.Random(seed)
    sig = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[seed % 3]
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine(Path(tmp), tree, accounts=2)
        try:
            machine.workos.answer_delay = delay
            running: list[subprocess.Popen] = []
            fired = threading.Event()

            def kill_soon() -> None:
                if not fired.is_set():
                    fired.set()
                    threading.Timer(rng.uniform(0, delay + 0.1), lambda: running[0].send_signal(sig)).start()

            machine.workos.script = [kill_soon, kill_soon]
            running.append(machine.start())
            finish(running[0])
            after_kill = [machine.live(h) for h in machine.homes]
            machine.workos.script = []
            machine.workos.answer_delay = 0.0
            finish(machine.start())
            after_next = [machine.live(h) for h in machine.homes]
        finally:
            machine.close()
    if not all(after_next):
        return "lost"
    return "live" if all(after_kill) else "until-next-run"


def kills(tree: Path, trials: int) -> None:
    for label, delay in (("slow WorkOS (2 s)", 2.0), ("fast WorkOS (0.05 s)", 0.05)):
        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = list(pool.map(lambda seed, d=delay: kill_trial(tree, d, seed), range(trials)))
        print(
            f"kills, accounts: 2, {label}: {outcomes.count('lost')} of {trials} lost for good, "
            f"{outcomes.count('until-next-run')} more failing until the next run"
        )


def deadline_trial(tree: Path, deadline: float, answer: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine(Path(tmp), tree, accounts=1, deadline=deadline)
        try:
            machine.workos.answer_delay = answer
            code, err = finish(machine.start())
            if not machine.workos.issued:
                return f"exit {code}, WorkOS not asked"
            return f"exit {code}, {'live' if machine.live(machine.homes[0]) else 'LOGGED OUT'}"
        finally:
            machine.close()


def deadlines(tree: Path) -> None:
    pairs = [(8, 9), (10, 9), (60, 65)]
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        results = list(pool.map(lambda p: deadline_trial(tree, *p), pairs))
    for (deadline, answer), result in zip(pairs, results, strict=True):
        print(f"deadline {deadline} s, WorkOS answers after {answer} s: {result}")


def droid_env(home: Path, workos_url: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FACTORY_DISABLE_KEYRING": "1",
        "FACTORY_WORKOS_BASE_URL": workos_url,
        "FACTORY_API_BASE_URL": CLOSED_PORT,
        "FACTORY_TELEMETRY_INGEST_BASE_URL": CLOSED_PORT,
        "FACTORY_DROID_AUTO_UPDATE_ENABLED": "false",
        "HTTPS_PROXY": CLOSED_PORT,
        "HTTP_PROXY": CLOSED_PORT,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def droid_first_round(tree: Path, seed: int, grant_seconds: float) -> tuple[bool, bool]:
    """Return (the job said "login expired", the store holds a live login afterwards)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine(Path(tmp), tree, accounts=1, expires_in=40)  # droid renews within 60 s
        try:
            workos = machine.workos
            granted = threading.local()
            plain_answer = workos.answer

            def answer(form: dict):
                reply = plain_answer(form)
                granted.ok = reply[0] == 200
                return reply

            workos.answer = answer  # type: ignore[method-assign]
            workos.answer_delay = lambda: grant_seconds if getattr(granted, "ok", False) else 0.0
            droid = subprocess.Popen(
                [str(DROID), "doctor", "--auth", "--json"],
                env=droid_env(machine.homes[0], workos.url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            give_up = time.monotonic() + 30
            while not any(r.get("refresh_token") in machine.first for r in workos.requests):
                if time.monotonic() > give_up:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 1))
            code, err = finish(machine.start())
            droid.communicate(timeout=HANG)
            return code == 3 or "login expired" in err, machine.live(machine.homes[0])
        finally:
            machine.close()


def droid_first(tree: Path, rounds: int) -> None:
    if not DROID.is_file():
        print("droid-first: skipped, no droid binary (run .ci/fetch-droid.sh)")
        return
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda seed: droid_first_round(tree, seed, 9.0), range(rounds)))
    false_expired = sum(1 for said, live in results if said and live)
    said = sum(1 for s, _ in results if s)
    lost = sum(1 for _, live in results if not live)
    print(
        f"droid first, WorkOS grants after 9 s: {false_expired} of {rounds} rounds a false "
        f"'login expired' ({said} said it, {lost} ended without a live login)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose alerter/ is run")
    scenarios = ["kills", "deadline", "droid-first"]
    parser.add_argument("--scenario", nargs="+", default=scenarios, choices=scenarios)
    parser.add_argument("--trials", type=int, default=20, help="kill trials per WorkOS speed")
    parser.add_argument("--rounds", type=int, default=6, help="droid-first rounds")
    args = parser.parse_args()
    tree = args.tree.resolve()
    print(f"alerter code from {tree}")
    started = time.monotonic()
    if "kills" in args.scenario:
        kills(tree, args.trials)
    if "deadline" in args.scenario:
        deadlines(tree)
    if "droid-first" in args.scenario:
        droid_first(tree, args.rounds)
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
