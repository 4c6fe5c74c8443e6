"""Does the ledger keep its word? Repeated notices on flapping money input, after a
channel's URL is rotated, and which account takes over a single login's state.

    .venv/bin/python bench/ledger_faults.py [--code PATH] [--runs N]

``--code`` is the checkout to measure (default: this one; a `git worktree` of an older
commit measures that). Loopback only: a stand-in Factory API and a json:// receiver on
127.0.0.1, the job run in this process against a private HOME. Each figure is a count of
notifications, so it does not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def money_flaps(runs: int) -> tuple[int, int]:
    """Return (low-balance warnings in ``runs`` runs with the balance a cent either side of
    $10, "extra usage is being spent" notices after one dip to 99.5 % in ``runs`` runs)."""
    from alerter.config import Channel, Config
    from alerter.meters import Meter, Reading
    from alerter.money import assess
    from alerter.state import State, record_delivery

    team = Channel(id="ch-team", label="team", url="json://team")

    def told(readings: list[Reading], config: Config) -> int:
        state, count = State(), 0
        for i, one in enumerate(readings):
            now = 1_790_000_000.0 + i * 900
            alerts, state = assess(one, state, config, now)
            for alert in alerts:
                count += 1
                for channel in alert.channels:
                    state = record_delivery(state, alert.key, channel, now)
        return count

    def reading(percent: float, cents: int) -> Reading:
        meters = (Meter("standard.5h", percent / 100, window_end=1_790_018_000.0, active=True),)
        return Reading("limits", meters, extra_usage_cents=cents, extra_usage_allowed=True)

    flapping = [reading(50, 999 if i % 2 == 0 else 1001) for i in range(runs)]
    low = told(flapping, Config(channels=(team,), low_balance_usd=10))
    dip = [reading(100 if i != 2 else 99.5, 5000 - 100 * i) for i in range(runs)]
    spent = told(dip, Config(channels=(team,)))
    return low, spent


def levels_misjudged() -> tuple[int, int]:
    """Return (levels of ``low_balance_usd`` from $0.01 to $100, in cents, at which a balance
    exactly at the level warns or one exactly at the re-arm line does not re-arm; levels)."""
    from alerter.config import Channel, Config
    from alerter.meters import Meter, Reading
    from alerter.money import assess
    from alerter.state import State, record_delivery

    team = Channel(id="ch-team", label="team", url="json://team")
    meters = (Meter("standard.5h", 0.5, window_end=1_790_018_000.0, active=True),)
    wrong = 0
    for level in range(1, 10_001):
        usd = level / 100
        config = Config(channels=(team,), low_balance_usd=usd)
        at_level, _ = assess(Reading("limits", meters, extra_usage_cents=level), State(), config, 1.0)
        low, state = assess(Reading("limits", meters, extra_usage_cents=0), State(), config, 1.0)
        for alert in low:
            state = record_delivery(state, alert.key, "ch-team", 1.0)
        # The first whole cent at or above the documented line, level + max($1, 10 %),
        # computed exactly.
        line = math.ceil(level + max(Fraction(100), Fraction(level, 10)))
        _, state = assess(Reading("limits", meters, extra_usage_cents=line), state, config, 2.0)
        wrong += bool(at_level) or state.extra_usage.low_since is not None
    return wrong, 10_000


def url_rotation(runs: int) -> int:
    """Return how many alerts a named channel gets again in ``runs`` runs after the token
    in its URL is rotated (the same usage: every one is a repeat)."""
    from tests.conftest import App, usage_body
    from tests.standins import JsonReceiver, StandIn

    factory, receiver = StandIn().start(), JsonReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = App(Path(tmp), _Capture(), factory)
            port = receiver.server.server_address[1]

            def team(token: str) -> dict:
                url = f"json://user:{token}@127.0.0.1:{port}/notify"
                return {"notify": {"channels": [{"name": "team", "url": url}]}}

            app.write_config(team("old-token"))
            app.serve_usage(usage_body(19_400_000))  # 97 %: the 95 % alert
            _quietly(app, "run")
            before = len(receiver.messages())
            for i in range(runs):
                app.write_config(team(f"rotated-{i}"))
                _quietly(app, "run")
            return len(receiver.messages()) - before
    finally:
        factory.stop()
        receiver.stop()


def account_takeover() -> tuple[str, int]:
    """A single login (the key that becomes account ``home``'s) alerts at 85 %; then the
    config lists ``work`` first and ``home`` second, both at 85 %. Return (which account
    took over the state, alerts sent again to home)."""
    import time

    from tests.conftest import LIMITS_PATH, App
    from tests.standins import JsonReceiver, Reply, StandIn
    from tests.test_limits import HOUR, limits_body, window

    keys = {"home": "fk-home-0123456789abcdefSECRET", "work": "fk-work-0123456789abcdefSECRET"}
    factory, receiver = StandIn().start(), JsonReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = Reply(200, limits_body(window(85, time.time() + 3 * HOUR)))
            factory.route(
                "GET", LIMITS_PATH, lambda rec: body if _bearer(rec) in keys.values() else Reply(401, {})
            )
            app = App(Path(tmp), _Capture(), factory)
            app.env["FACTORY_API_KEY"] = keys["home"]
            app.write_config({"factory": {"endpoint": "limits"}, "notify": {"urls": [receiver.apprise_url]}})
            _quietly(app, "run")
            app.env.pop("FACTORY_API_KEY")
            app.env.update({"HOME_KEY": keys["home"], "WORK_KEY": keys["work"]})
            app.write_config(
                {
                    "factory": {"endpoint": "limits"},
                    "notify": {"urls": [receiver.apprise_url]},
                    "accounts": [
                        {"name": "work", "api_key_env": "WORK_KEY"},
                        {"name": "home", "api_key_env": "HOME_KEY"},
                    ],
                }
            )
            said = _quietly(app, "run")
            repeats = sum(1 for m in receiver.messages() if m["title"].startswith("[home]"))
    finally:
        factory.stop()
        receiver.stop()
    who = "none"
    for line in said.splitlines():
        if "carried the state over" in line:  # before: the first account listed, by its state file
            who = "work" if "state-work" in line else "home"
        elif "took over" in line:
            who = line.split("account ", 1)[1].split(":", 1)[0]
    return who, repeats


def _quietly(app, *args: str) -> str:
    """Run the job; return what it printed instead of showing it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        app(*args)
    return out.getvalue()


def _bearer(rec) -> str:
    return rec.headers.get("authorization", "").removeprefix("Bearer ")


class _Capture:
    """Stands in for pytest's capsys: the job's output is not needed here."""

    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=HERE)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path[:0] = [str(args.code.resolve()), str(HERE)]
    low, spent = money_flaps(args.runs)
    rotated = url_rotation(args.runs)
    who, repeats = account_takeover()
    misjudged, levels = levels_misjudged()
    n, code = args.runs, args.code
    print(f"{code}: low-balance warnings in {n} runs at $10 +- 1 cent: {low}")
    print(f"{code}: 'extra usage is being spent' notices, one dip to 99.5 % in {n} runs: {spent}")
    print(f"{code}: levels misjudging a balance exactly at the level or re-arm line: {misjudged} of {levels}")
    print(f"{code}: alerts sent again in {n} runs after rotating a named channel's URL: {rotated}")
    print(f"{code}: the single login's state taken over by: {who} (work listed first)")
    print(f"{code}: home's alerts sent again after moving to accounts: {repeats}")


if __name__ == "__main__":
    main()
