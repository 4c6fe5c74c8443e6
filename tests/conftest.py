"""Fixtures: stand-in servers, a private HOME, and a way to run the command."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alerter.cli import main
from tests.standins import JsonReceiver, Reply, SmtpReceiver, StandIn

USAGE_PATH = "/api/organization/subscription/usage"
LIMITS_PATH = "/api/billing/limits"
API_KEY = "fk-test-0123456789abcdefSECRET"
DAY = 86400

# What a child process needs to share this process's clock and time zone: TZ, and the
# variables of libfaketime, under which CI also runs the suite (see .ci/run).
CLOCK_VARIABLES = ("TZ", "LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC", "FAKETIME_SHARED")


def same_clock() -> dict[str, str]:
    """Return the environment a child process needs to see this process's clock and zone."""
    return {name: os.environ[name] for name in CLOCK_VARIABLES if name in os.environ}


def python_path(*first: str) -> str:
    """Return a PYTHONPATH with ``first`` ahead of this process's own entries."""
    return os.pathsep.join([*first, *filter(None, [os.environ.get("PYTHONPATH")])])


def at_local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Return the unix time at which a clock in this process's local time zone shows the given time.

    The suite runs in whatever zone it is given (CI runs it far east and far west of UTC), so
    tests about local times of day (quiet hours, "failing since 00:00") start from here.
    """
    return time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))


@pytest.fixture
def local_zone():
    """Set this test's local time zone with ``local_zone("UTC")``; the outer zone is restored after.

    For tests whose expected text holds times in one particular zone (a recording made in UTC).
    """
    outer = os.environ.get("TZ")

    def use(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if outer is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = outer
    time.tzset()


@pytest.fixture(autouse=True)
def fresh_logging():
    """The CLI sets up the "alerter" logger for a process (handlers, no propagation); give
    every test, whatever ran before it, a logger that pytest's caplog can see."""
    yield
    logger = logging.getLogger("alerter")
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def brief_wait_for_droids_save(monkeypatch):
    """After WorkOS rejects a refresh token the job waits for droid's own save (5 s); the
    tests that race the real droid restore that wait, the others need not sit through it."""
    monkeypatch.setattr("alerter.credentials.refresh.DROID_SAVE_WAIT_SECONDS", 0.3)


@pytest.fixture
def factory():
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture
def workos():
    """A WorkOS stand-in on 127.0.0.1 with single-use refresh tokens."""
    from tests.credentials.helpers import start_workos

    stand_in, stop = start_workos()
    yield stand_in
    stop()


@pytest.fixture
def receiver():
    server = JsonReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    server = SmtpReceiver().start()
    yield server
    server.stop()


def bucket(used: int, allowance: int, ratio: float | None = None) -> dict:
    """A usage bucket in Factory's shape."""
    return {
        "userTokens": used // 2,
        "orgTotalTokensUsed": used,
        "orgOverageUsed": 0,
        "basicAllowance": allowance,
        "totalAllowance": allowance,
        "orgOverageLimit": 0,
        "usedRatio": (used / allowance if allowance else 0) if ratio is None else ratio,
    }


def usage_body(
    used: int,
    allowance: int = 20_000_000,
    *,
    start: float | None = None,
    end: float | None | str = "auto",
    premium: dict | None = None,
) -> dict:
    """A subscription/usage answer; times are unix seconds here and ms on the wire."""
    start = time.time() - 10 * DAY if start is None else start
    end_ms = int((start + 27 * DAY) * 1000) if end == "auto" else (None if end is None else int(end * 1000))
    return {
        "usage": {
            "startDate": int(start * 1000),
            "endDate": end_ms,
            "standard": bucket(used, allowance),
            "premium": premium if premium is not None else bucket(0, 0),
        },
        "source": "cache",
        "cacheUpdated": False,
    }


@dataclass
class Result:
    code: int
    out: str
    err: str


class App:
    """Runs ``factory-usage-alert`` in this process against a private HOME."""

    def __init__(self, home: Path, capsys, factory: StandIn) -> None:
        self.home = home
        self.capsys = capsys
        self.factory = factory
        self.now: float | None = None  # set to run the job at a chosen wall time
        self.config_path = home / "config.yaml"
        self.state_path = home / "state" / "state.json"
        self.env = {
            "HOME": str(home),
            "FACTORY_API_KEY": API_KEY,
            "FACTORY_HOME_OVERRIDE": str(home),
            "PATH": os.environ.get("PATH", ""),
        }
        self.write_config({})

    def write_config(self, extra: dict) -> Path:
        config = {
            "factory": {"base_url": self.factory.url, "timeout_seconds": 5},
            "state_file": str(self.state_path),
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path.write_text(yaml.safe_dump(config))
        self.config_path.chmod(0o600)
        return self.config_path

    def __call__(self, *args: str, config: bool = True) -> Result:
        argv = list(args)
        if config and "--config" not in argv:
            argv += ["--config", str(self.config_path)]
        self.capsys.readouterr()
        clock = time.time if self.now is None else (lambda: self.now)
        code = main(argv, self.env, clock)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def serve_usage(self, body: dict | Reply, method: str = "GET") -> None:
        reply = body if isinstance(body, Reply) else Reply(200, body)
        self.factory.route(method, USAGE_PATH, reply)

    def state(self) -> dict:
        import json

        return json.loads(self.state_path.read_text())


@pytest.fixture
def app(tmp_path, capsys, factory) -> App:
    return App(tmp_path, capsys, factory)
