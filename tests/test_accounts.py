"""Several accounts in one run (``accounts:``) against the stand-in Factory API.

One stand-in serves every account and answers by the bearer token, so each account's
own key is what decides what it reads; a real json:// receiver gets the notifications.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from alerter.config import build_config
from alerter.errors import EXIT_AUTH, EXIT_OK, EXIT_UPSTREAM, ConfigError
from tests.conftest import LIMITS_PATH, USAGE_PATH, python_path, same_clock
from tests.standins import Recorded, Reply
from tests.test_limits import HOUR, limits_body, window

M = 1_000_000
KEYS = {"home": "fk-home-0123456789abcdefSECRET", "work": "fk-work-0123456789abcdefSECRET"}


class Accounts:
    """Per-key answers of the stand-in: ``bodies[key]`` is a Reply for billing/limits."""

    def __init__(self, app) -> None:
        self.replies: dict[str, Reply] = {}
        app.factory.route("GET", LIMITS_PATH, self._answer)
        app.factory.route("GET", USAGE_PATH, Reply(404, {"error": "not found"}))

    def _answer(self, rec: Recorded) -> Reply:
        token = rec.headers.get("authorization", "").removeprefix("Bearer ")
        return self.replies.get(token, Reply(401, {"error": "unauthorized"}))


def two_accounts(app, receiver, **more) -> Accounts:
    app.env.pop("FACTORY_API_KEY")
    app.env.update({"HOME_KEY": KEYS["home"], "WORK_KEY": KEYS["work"]})
    app.write_config(
        {
            "factory": {"endpoint": "limits"},
            "notify": {"urls": [receiver.apprise_url]},
            "accounts": [
                {"name": "home", "api_key_env": "HOME_KEY"},
                {"name": "work", "api_key_env": "WORK_KEY", **more},
            ],
        }
    )
    return Accounts(app)


def limits_at(percent: float, end: float, **extra) -> Reply:
    return Reply(200, limits_body(window(percent, end), **extra))


def titles(receiver) -> list[str]:
    return [m["title"] for m in receiver.messages()]


def test_each_account_alerts_on_its_own_usage_once_named_by_account(app, receiver):
    served = two_accounts(app, receiver)
    end = time.time() + 3 * HOUR
    served.replies[KEYS["home"]] = limits_at(55, end)
    served.replies[KEYS["work"]] = limits_at(85, end)
    result = app("run")
    assert result.code == EXIT_OK, result.err
    assert sorted(titles(receiver)) == sorted(
        ["[home] Factory standard.5h at 55% (past 50%)", "[work] Factory standard.5h at 85% (past 80%)"]
    ), titles(receiver)
    # Dedup per account: nothing new is said; one request per account in the steady state.
    before = len(app.factory.calls("GET", LIMITS_PATH))
    assert app("run").code == EXIT_OK
    assert len(receiver.messages()) == 2
    assert len(app.factory.calls("GET", LIMITS_PATH)) == before + 2
    # Only home climbs: only home says so.
    served.replies[KEYS["home"]] = limits_at(82, end)
    assert app("run").code == EXIT_OK
    assert titles(receiver)[2:] == ["[home] Factory standard.5h at 82% (past 80%)"]
    # Each account has its own state next to the default one; the default is not used.
    states = app.state_path.parent
    assert (states / "state-home.json").exists() and (states / "state-work.json").exists()
    assert not app.state_path.exists()
    home = json.loads((states / "state-home.json").read_text())
    assert {e["level"] for e in home["ledger"]} == {50.0, 80.0}


def test_one_failing_account_does_not_stop_the_other_and_gets_its_own_notice(app, receiver):
    served = two_accounts(app, receiver)
    app.write_config(
        {
            "factory": {"endpoint": "limits"},
            "notify": {"urls": [receiver.apprise_url]},
            "monitor": {"failures_before_alert": 2},
            "accounts": [
                {"name": "home", "api_key_env": "HOME_KEY"},
                {"name": "work", "api_key_env": "WORK_KEY"},
            ],
        }
    )
    end = time.time() + 3 * HOUR
    served.replies[KEYS["home"]] = limits_at(60, end)
    served.replies[KEYS["work"]] = Reply(503, {"error": "down"}, headers={"Retry-After": "100"})
    first = app("run")
    assert first.code == EXIT_UPSTREAM, first.err
    assert "work:" in first.err and "home:" not in first.err
    assert titles(receiver) == ["[home] Factory standard.5h at 60% (past 50%)"]
    assert app("run").code == EXIT_UPSTREAM
    stale = [t for t in titles(receiver) if "not working" in t]
    assert stale and all(t.startswith("[work] ") for t in stale), titles(receiver)
    assert len(stale) == 1
    # The key disappears too: the worse outcome (the login) is the run's exit code.
    app.env.pop("HOME_KEY")
    third = app("run")
    assert third.code == EXIT_AUTH, third.err
    assert "HOME_KEY is not set" in third.err
    assert KEYS["work"] not in third.err + third.out
    # work recovers: a "working again" for work alone, and its usage alert.
    app.env["HOME_KEY"] = KEYS["home"]
    served.replies[KEYS["work"]] = limits_at(51, end)
    assert app("run").code == EXIT_OK
    new = titles(receiver)[2:]
    assert any(t.startswith("[work] ") and "working again" in t for t in new), new
    assert "[work] Factory standard.5h at 51% (past 50%)" in new
    assert not any(t.startswith("[home] ") for t in new), new


def test_an_account_may_override_thresholds_and_routing(app, receiver, smtp):
    served = two_accounts(app, receiver, thresholds={"default": [90]}, notify={"urls": [smtp.apprise_url]})
    end = time.time() + 3 * HOUR
    served.replies[KEYS["home"]] = limits_at(85, end)
    served.replies[KEYS["work"]] = limits_at(85, end)
    assert app("run").code == EXIT_OK
    assert titles(receiver) == ["[home] Factory standard.5h at 85% (past 80%)"]
    assert smtp.messages == []  # work's own threshold (90) is not crossed
    served.replies[KEYS["work"]] = limits_at(91, end)
    assert app("run").code == EXIT_OK
    assert len(receiver.messages()) == 1
    assert ["[work]" in m["Subject"] for m in smtp.messages] == [True]


def test_a_factory_home_account_uses_that_droid_login_not_the_api_key(app, receiver, tmp_path):
    from tests.credentials.helpers import login_data, write_keyfile_store

    other = tmp_path / "other"
    data = login_data()
    token = data["access_token"]
    write_keyfile_store(other / ".factory", data)
    app.env["FACTORY_DISABLE_KEYRING"] = "1"
    app.write_config(
        {
            "factory": {"endpoint": "limits"},
            "notify": {"urls": [receiver.apprise_url]},
            "accounts": [{"name": "laptop", "factory_home": str(other)}],
        }
    )
    served = Accounts(app)
    served.replies[token] = limits_at(70, time.time() + 3 * HOUR)
    result = app("run")  # FACTORY_API_KEY is set in the environment, and ignored for this account
    assert result.code == EXIT_OK, result.err
    assert titles(receiver) == ["[laptop] Factory standard.5h at 70% (past 50%)"]


def test_prometheus_series_and_status_name_the_account(app, receiver, tmp_path):
    served = two_accounts(app, receiver)
    end = time.time() + 3 * HOUR
    served.replies[KEYS["home"]] = limits_at(40, end, extraUsageBalanceCents=1234)
    served.replies[KEYS["work"]] = limits_at(20, end)
    prom = tmp_path / "usage.prom"
    assert app("run", "--prometheus-textfile", str(prom)).code == EXIT_OK
    text = prom.read_text()
    assert 'factory_usage_used_ratio{account="home",meter="standard.5h"} 0.4' in text
    assert 'factory_usage_used_ratio{account="work",meter="standard.5h"} 0.2' in text
    assert 'factory_usage_extra_balance_usd{account="home"} 12.34' in text
    assert 'factory_usage_alert_last_run_success{account="work"} 1' in text
    shown = app("status", "--json")
    assert shown.code == EXIT_OK, shown.err
    entries = json.loads(shown.out)["accounts"]
    assert [e["account"] for e in entries] == ["home", "work"]
    assert entries[0]["extra_usage"]["balance_usd"] == 12.34
    text_status = app("status")
    assert "account home" in text_status.out and "account work" in text_status.out
    history = app("history", "--jsonl")
    lines = [json.loads(line) for line in history.out.splitlines()]
    assert {line["account"] for line in lines} == {"home", "work"}


def test_status_shows_the_other_accounts_when_one_fails(app, receiver):
    served = two_accounts(app, receiver)
    served.replies[KEYS["home"]] = limits_at(40, time.time() + 3 * HOUR)
    shown = app("status", "--json")
    assert shown.code == EXIT_AUTH
    entries = json.loads(shown.out)["accounts"]
    assert entries[0]["account"] == "home" and "meters" in entries[0]
    assert entries[1]["account"] == "work" and "refused WORK_KEY" in entries[1]["error"]


def test_check_config_names_each_account_and_its_login_masked(app, receiver, tmp_path):
    two_accounts(app, receiver)
    result = app("check-config")
    assert result.code == EXIT_OK, result.err
    assert "home: API key from $HOME_KEY (fk-…CRET)" in result.out, result.out
    assert "state-work.json" in result.out
    assert KEYS["home"] not in result.out + result.err
    app.env.pop("WORK_KEY")
    assert "work: API key from $WORK_KEY (not set)" in app("check-config").out


@pytest.mark.parametrize(
    ("accounts", "problem"),
    [
        ([{"name": "a"}], "At 'accounts[0]': needs exactly one login"),
        ([{"name": "a", "api_key_env": "fk-abc"}], "the key itself never goes into the config"),
        ([{"name": "a b", "api_key_env": "K"}], "At 'accounts[0].name'"),
        ([{"name": "a\n", "api_key_env": "K"}], "At 'accounts[0].name'"),  # names a state file
        ([{"name": "a", "api_key_env": "K"}, {"name": "a", "api_key_env": "L"}], "names another account"),
        (
            [{"name": "a", "factory_home": "/h"}, {"name": "b", "factory_home": "/h/../h/"}],
            "At 'accounts[1].factory_home': is account 'a''s droid home too",
        ),
        ([{"name": "a", "api_key_env": "K", "thresholds": {"default": [0]}}], "At 'accounts[0].thresholds"),
        ([{"name": "a", "api_key_env": "K", "factory": {"home": "/x"}}], "At 'accounts[0].factory.home'"),
        ([{"name": "a", "api_key_env": "K", "colour": 1}], "At 'accounts[0].colour'"),
        ([], "At 'accounts'"),
    ],
)
def test_bad_accounts_are_named_by_their_place(accounts, problem):
    with pytest.raises(ConfigError) as caught:
        build_config({"accounts": accounts}, None, {"HOME": "/nonexistent"})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("linked", ["the home", "its .factory"])
def test_a_symlink_cannot_make_one_droid_home_look_like_two(tmp_path, linked):
    real = tmp_path / "real"
    (real / ".factory").mkdir(parents=True)
    other = tmp_path / "other"
    if linked == "the home":
        other.symlink_to(real)
    else:
        other.mkdir()
        (other / ".factory").symlink_to(real / ".factory")
    accounts = [{"name": "a", "factory_home": str(real)}, {"name": "b", "factory_home": str(other)}]
    with pytest.raises(ConfigError) as caught:
        build_config({"accounts": accounts}, None, {"HOME": str(tmp_path)})
    problem = "At 'accounts[1].factory_home': is account 'a''s droid home too"
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_two_droid_homes_side_by_side_are_two_accounts(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name / ".factory").mkdir(parents=True)
    accounts = [{"name": n, "factory_home": str(tmp_path / n)} for n in ("one", "two")]
    config = build_config({"accounts": accounts}, None, {"HOME": str(tmp_path)})
    assert [a.name for a in config.accounts] == ["one", "two"]


def test_an_account_config_inherits_the_top_level_and_overrides_its_own_keys():
    config = build_config(
        {
            "state_file": "/s/state.json",
            "thresholds": {"default": [50, 80], "standard.5h": [70]},
            "factory": {"base_url": "https://api.factory.ai", "timeout_seconds": 3},
            "extra_usage": {"low_balance_usd": 5},
            "accounts": [
                {"name": "eu", "api_key_env": "EU_KEY", "factory": {"base_url": "https://api.eu.factory.ai"}},
                {"name": "mine", "factory_home": "/h", "thresholds": {"default": [90]}},
            ],
        },
        None,
        {"HOME": "/nonexistent"},
    )
    eu, mine = (a.config for a in config.accounts)
    assert config.account is None and eu.account == "eu"
    assert str(eu.state_file) == "/s/state-eu.json" and str(mine.state_file) == "/s/state-mine.json"
    assert eu.base_url == "https://api.eu.factory.ai" and eu.timeout_seconds == 3
    assert (eu.api_key_env, eu.droid_store) == ("EU_KEY", False)
    assert (mine.api_key_env, mine.droid_store, str(mine.home)) == (None, True, "/h/.factory")
    assert mine.thresholds_for("standard.weekly") == (90.0,) and mine.thresholds_for("standard.5h") == (70.0,)
    assert eu.thresholds_for("standard.weekly") == (50.0, 80.0)
    assert eu.low_balance_usd == 5.0


# --- money: extra usage ------------------------------------------------------------------------


def test_extra_usage_spending_and_low_balance_are_each_said_once_per_episode(app, receiver):
    served = two_accounts(app, receiver)
    app.write_config(
        {
            "factory": {"endpoint": "limits"},
            "notify": {"urls": [receiver.apprise_url]},
            "thresholds": {"default": [200]},  # only the money notices speak in this test
            "extra_usage": {"low_balance_usd": 10},
            "accounts": [
                {"name": "home", "api_key_env": "HOME_KEY"},
                {"name": "work", "api_key_env": "WORK_KEY"},
            ],
        }
    )
    end = time.time() + 3 * HOUR
    served.replies[KEYS["work"]] = limits_at(50, end, extraUsageBalanceCents=5000)

    def home(percent: float, cents: int, ends: float = end) -> None:
        served.replies[KEYS["home"]] = limits_at(percent, ends, extraUsageBalanceCents=cents)

    def said() -> list[str]:
        return [t for t in titles(receiver) if "extra" in t]

    home(90, 2500)
    assert app("run").code == EXIT_OK
    home(100, 2500)  # used up, but nothing spent yet
    assert app("run").code == EXIT_OK
    assert said() == []
    home(100, 2300)  # the balance goes down while the window is used up
    assert app("run").code == EXIT_OK
    assert said() == ["[home] Factory extra usage is being spent: $23.00 left"]
    body = receiver.messages()[-1]["message"]
    assert "from $25.00 to $23.00" in body and "standard.5h" in body
    home(100, 2000)
    assert app("run").code == EXIT_OK
    assert len(said()) == 1  # the same episode
    home(100, 900)  # below $10: one low-balance notice
    assert app("run").code == EXIT_OK
    assert said()[1:] == ["[home] Factory extra-usage balance low: $9.00 (below $10)"]
    home(100, 800)
    assert app("run").code == EXIT_OK
    assert len(said()) == 2
    # A new window: the episode ends; topped up: the low-balance notice is armed again.
    later = end + 5 * HOUR
    home(10, 1500, later)
    assert app("run").code == EXIT_OK
    assert len(said()) == 2
    home(100, 1500, later)
    assert app("run").code == EXIT_OK
    home(100, 700, later)  # a second episode, and below $10 again
    assert app("run").code == EXIT_OK
    assert said()[2:] == [
        "[home] Factory extra usage is being spent: $7.00 left",
        "[home] Factory extra-usage balance low: $7.00 (below $10)",
    ]
    assert not any(t.startswith("[work]") for t in said())  # work's balance never moved
    state = json.loads((app.state_path.parent / "state-home.json").read_text())
    assert state["extra_usage"]["balance_cents"] == 700


def test_extra_usage_memory_round_trips_through_the_state_file(tmp_path):
    from alerter.state import ExtraUsage, State, dump, load, load_state, save_state

    state = State(extra_usage=ExtraUsage(1234.0, 1_770_000_000.0, None))
    path = tmp_path / "state.json"
    save_state(path, state)
    assert load_state(path).extra_usage == state.extra_usage
    assert load(dump(State()))[0].extra_usage == ExtraUsage()
    broken = {**dump(state), "extra_usage": {"balance_cents": "lots", "spending_since": -5}}
    loaded, dropped = load(broken)
    assert loaded.extra_usage == ExtraUsage() and any("extra_usage" in d for d in dropped)


def test_no_spending_notice_when_extra_usage_is_not_allowed():
    from alerter.config import Config
    from alerter.meters import Meter, Reading
    from alerter.money import assess
    from alerter.state import ExtraUsage, State

    used_up = (Meter("standard.5h", 1.0, window_end=2e9, active=True),)
    reading = Reading("limits", used_up, extra_usage_cents=100, extra_usage_allowed=False)
    alerts, state = assess(reading, State(extra_usage=ExtraUsage(balance_cents=200.0)), Config(), 1e9)
    assert alerts == [] and state.extra_usage.spending_since is None
    allowed = Reading("limits", used_up, extra_usage_cents=100, extra_usage_allowed=True)
    alerts, state = assess(allowed, State(extra_usage=ExtraUsage(balance_cents=200.0)), Config(), 1e9)
    assert [a.kind for a in alerts] == ["extra_spending"] and state.extra_usage.spending_since == 1e9


def test_accounts_are_read_at_the_same_time(app, receiver):
    """Each answer waits until both accounts' requests have arrived: read one after the
    other, the first would give up waiting and the run would fail."""
    import threading

    served = two_accounts(app, receiver)
    both = threading.Barrier(2, timeout=10)
    end = time.time() + 3 * HOUR

    def together(rec: Recorded) -> Reply:
        try:
            both.wait()
        except threading.BrokenBarrierError:
            return Reply(500, {"error": "alone"})
        return served._answer(rec)

    served.replies[KEYS["home"]] = limits_at(10, end)
    served.replies[KEYS["work"]] = limits_at(10, end)
    app.factory.route("GET", LIMITS_PATH, together)
    result = app("run")
    assert result.code == EXIT_OK, result.err
    assert not both.broken


def test_a_dry_run_of_several_accounts_shows_each_and_saves_nothing(app, receiver):
    served = two_accounts(app, receiver)
    end = time.time() + 3 * HOUR
    served.replies[KEYS["home"]] = limits_at(55, end)
    served.replies[KEYS["work"]] = limits_at(85, end)
    result = app("run", "--dry-run")
    assert result.code == EXIT_OK, result.err
    assert (
        "[home] Factory standard.5h at 55%" in result.out
        and "[work] Factory standard.5h at 85%" in result.out
    )
    assert receiver.messages() == []
    assert list(app.state_path.parent.glob("state*.json")) == []


# --- found by review: moving to accounts, secrets, test-notify, droid homes -----------------------


def single_login_then_accounts(app, receiver, first: str) -> tuple[Accounts, float]:
    """One login (home's key) alerts at 85 %; then the config lists two accounts, ``first``
    first, and home's key is the one the job used so far."""
    end = time.time() + 3 * HOUR
    app.env["FACTORY_API_KEY"] = KEYS["home"]
    app.write_config({"factory": {"endpoint": "limits"}, "notify": {"urls": [receiver.apprise_url]}})
    app.factory.route("GET", LIMITS_PATH, limits_at(85, end))
    assert app("run").code == EXIT_OK
    assert titles(receiver) == ["Factory standard.5h at 85% (past 80%)"]
    served = two_accounts(app, receiver)
    config = yaml.safe_load(app.config_path.read_text())
    config["accounts"].sort(key=lambda a: a["name"] != first)
    app.config_path.write_text(yaml.safe_dump(config))
    return served, end


@pytest.mark.parametrize("first", ["home", "work"])
def test_moving_to_accounts_repeats_no_alert_the_account_of_that_login_takes_over_the_state(
    app, receiver, first
):
    served, end = single_login_then_accounts(app, receiver, first)
    served.replies[KEYS["home"]] = limits_at(85, end)
    served.replies[KEYS["work"]] = limits_at(85, end)
    result = app("run")
    assert result.code == EXIT_OK, result.err
    # home's 85 % was said by the single login: not again; work's is work's own, said once.
    assert titles(receiver)[1:] == ["[work] Factory standard.5h at 85% (past 80%)"]
    assert "account home: took over the alerts already sent from" in result.out + result.err
    assert "account work: took over" not in result.out + result.err
    served.replies[KEYS["home"]] = limits_at(97, end)
    result = app("run")
    assert result.code == EXIT_OK and "took over" not in result.out + result.err
    assert titles(receiver)[2:] == ["[home] Factory standard.5h at 97% (past 95%)"]


def test_a_state_that_records_no_login_is_taken_over_by_no_account_and_that_is_said_once(app, receiver):
    served, end = single_login_then_accounts(app, receiver, "home")
    state = json.loads(app.state_path.read_text())
    del state["credentials"]  # as an earlier release wrote it: no record of the key
    app.state_path.write_text(json.dumps(state))
    served.replies[KEYS["home"]] = limits_at(85, end)
    served.replies[KEYS["work"]] = limits_at(85, end)
    result = app("run")
    assert result.code == EXIT_OK, result.err
    said = [line for line in (result.out + result.err).splitlines() if "does not record which login" in line]
    assert len(said) == 1 and "no account takes it over" in said[0], result.out + result.err
    assert sorted(titles(receiver)[1:]) == [
        "[home] Factory standard.5h at 85% (past 80%)",
        "[work] Factory standard.5h at 85% (past 80%)",
    ]
    result = app("run")
    assert result.code == EXIT_OK and "does not record" not in result.out + result.err
    assert len(titles(receiver)) == 3


def test_check_config_masks_an_account_s_base_url_and_warns_of_its_channel_credentials(app, receiver):
    app.env.update({"HOME_KEY": KEYS["home"]})
    secret_url = "http://user:pw123SECRET@127.0.0.1:9"
    app.write_config(
        {
            "accounts": [
                {
                    "name": "home",
                    "api_key_env": "HOME_KEY",
                    "factory": {"base_url": secret_url},
                    "notify": {"urls": ["json://user:hunter2SECRET@127.0.0.1:9/x"]},
                }
            ]
        }
    )
    app.config_path.chmod(0o644)
    result = app("check-config")
    assert "SECRET" not in result.out + result.err
    assert "Factory API: http://***@127.0.0.1:9" in result.out
    assert "is readable by other users and holds credentials in json://***" in result.err


def test_test_notify_reaches_the_channels_of_every_account(app, receiver):
    app.env.update({"HOME_KEY": KEYS["home"]})
    app.write_config(
        {
            "accounts": [
                {"name": "home", "api_key_env": "HOME_KEY", "notify": {"urls": [receiver.apprise_url]}}
            ]
        }
    )
    result = app("test-notify")
    assert result.code == EXIT_OK, result.err
    assert len(receiver.messages()) == 1 and "stdout" not in result.out


def test_a_droid_home_account_without_a_login_is_told_how_to_log_in_there(app, tmp_path):
    app.write_config({"accounts": [{"name": "lab", "factory_home": str(tmp_path / "lab")}]})
    result = app("run")
    assert result.code == EXIT_AUTH
    assert f"FACTORY_HOME_OVERRIDE={tmp_path / 'lab'} droid" in result.err
    assert "FACTORY_API_KEY" not in result.err
    # check-config says so too, and that the directory is not there (a typo, often).
    shown = app("check-config")
    assert shown.code == EXIT_OK, shown.err
    assert (
        f"lab: droid's login in {tmp_path / 'lab' / '.factory'} (no such directory; "
        f"log in there with `FACTORY_HOME_OVERRIDE={tmp_path / 'lab'} droid`)"
    ) in shown.out
    (tmp_path / "lab" / ".factory").mkdir(parents=True)
    assert "(no login found there; log in there with" in app("check-config").out


SETPRIV = shutil.which("setpriv")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    SETPRIV is None or os.geteuid() != 0,
    reason="needs root and setpriv (util-linux) to run the job without reading through file modes",
)
def test_a_droid_home_that_cannot_be_looked_into_is_said_so_not_a_crash(tmp_path):
    # Another user's droid home: the job runs as root without the capabilities that read
    # through file modes, so the directory's mode 000 denies it as it would deny anyone.
    locked = tmp_path / "other-user" / ".factory"
    locked.mkdir(parents=True)
    locked.chmod(0)
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": python_path(str(ROOT)),
        "FACTORY_HOME_OVERRIDE": str(locked.parent),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        **same_clock(),
    }

    def job(*args: str) -> subprocess.CompletedProcess:
        caps = "--bounding-set=-dac_override,-dac_read_search"
        argv = [SETPRIV, caps, sys.executable, "-m", "alerter", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    shown = job("check-config")
    assert shown.returncode == EXIT_OK, shown.stderr
    assert f"login: droid's login in {locked} (cannot be looked into: Permission denied)" in shown.stdout
    ran = job("run")
    assert ran.returncode == EXIT_AUTH, ran.stderr
    assert f"cannot look into droid's store {locked} (Permission denied)" in ran.stderr
    assert "Traceback" not in ran.stderr and "internal error" not in ran.stderr


def test_a_droid_home_that_is_a_file_is_said_so(app, tmp_path):
    app.env.pop("FACTORY_API_KEY")
    app.env["FACTORY_HOME_OVERRIDE"] = str(tmp_path)
    (tmp_path / ".factory").write_text("")
    assert f"login: droid's login in {tmp_path / '.factory'} (not a directory)" in app("check-config").out


def test_check_config_says_which_login_a_run_would_use(app, tmp_path):
    from tests.credentials.helpers import login_data, write_keyfile_store

    key = app.env["FACTORY_API_KEY"]
    shown = app("check-config").out
    assert f"login: API key from $FACTORY_API_KEY (fk-…{key[-4:]})" in shown and key not in shown
    app.env.pop("FACTORY_API_KEY")
    app.env["FACTORY_HOME_OVERRIDE"] = str(tmp_path / "me")
    assert (
        f"login: droid's login in {tmp_path / 'me' / '.factory'} (no such directory; "
        "run `droid` to log in, or set $FACTORY_API_KEY)"
    ) in app("check-config").out
    write_keyfile_store(tmp_path / "me" / ".factory", login_data())
    assert f"login: droid's login in {tmp_path / 'me' / '.factory'} (found " in app("check-config").out


def test_every_log_line_of_an_account_is_named_also_from_the_threads_it_starts():
    import logging
    import types

    from alerter import http
    from alerter.accounts import each_account

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("alerter")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:

        def work(account) -> str:
            logging.getLogger("alerter.job").info("in the run of %s", account.name)
            # A worker thread, as each request to a peer runs in one.
            log = logging.getLogger("alerter.http")
            http.call_within(time.monotonic() + 10, "a peer", lambda: log.info("worker of %s", account.name))
            return account.name

        accounts = tuple(types.SimpleNamespace(name=name) for name in ("home", "work"))
        assert each_account(accounts, work) == ["home", "work"]
        assert each_account(accounts[:1], work) == ["home"]  # one account: run in this thread
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sorted(lines) == sorted(
        [f"[{n}] in the run of {n}" for n in ("home", "work", "home")]
        + [f"[{n}] worker of {n}" for n in ("home", "work", "home")]
    )


def test_backtest_replays_each_account_of_an_exported_history_with_its_own_settings(app, receiver, tmp_path):
    served = two_accounts(app, receiver, thresholds={"default": [30]})
    start = time.time()
    end = start + 4.5 * HOUR
    for hour, (home, work) in enumerate([(10, 10), (40, 25), (55, 35), (85, 55)]):
        app.now = start + hour * 3600
        served.replies[KEYS["home"]] = limits_at(home, end)
        served.replies[KEYS["work"]] = limits_at(work, end)
        assert app("run", "-q").code == EXIT_OK
    arrived = titles(receiver)
    assert "[work] Factory standard.5h at 35% (past 30%)" in arrived  # work's own threshold
    app.now = None
    trace = tmp_path / "both.jsonl"
    trace.write_text(app("history", "--jsonl").out)
    result = app("backtest", str(trace), "--json")
    assert result.code == EXIT_OK, result.err
    replayed = json.loads(result.out)["notifications"]
    assert [n["at"] for n in replayed] == sorted(n["at"] for n in replayed)  # one story, in time order
    assert {n["account"] for n in replayed} == {"home", "work"}
    for name in ("home", "work"):
        own = [n["title"] for n in replayed if n["account"] == name]
        assert own == [t for t in arrived if t.startswith(f"[{name}] ")] and own, (name, own, arrived)
    # An account the config does not have is replayed with the top-level settings, and said so.
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    renamed = [line | {"account": "gone"} if line["account"] == "work" else line for line in lines]
    trace.write_text("".join(json.dumps(line) + "\n" for line in renamed))
    result = app("backtest", str(trace), "--json")
    assert result.code == EXIT_OK and "no account 'gone' in the config" in result.err, result.err
    notes = json.loads(result.out)["notifications"]
    home = [t for t in arrived if t.startswith("[home] ")]
    assert [n["title"] for n in notes if n["account"] == "home"] == home
    gone = [n["title"] for n in notes if n["account"] == "gone" and n["kind"] == "threshold"]
    assert gone == ["[gone] Factory standard.5h at 55% (past 50%)"], gone  # not work's own 30 %
    # Lines that name no account, with a config of accounts: the top-level settings, said so.
    home_lines = [line for line in lines if line["account"] == "home"]
    unnamed = [{k: v for k, v in line.items() if k != "account"} for line in home_lines]
    trace.write_text("".join(json.dumps(line) + "\n" for line in unnamed))
    result = app("backtest", str(trace), "--json")
    assert result.code == EXIT_OK and "observations name no account" in result.err, result.err


@pytest.mark.parametrize(
    ("earlier", "now", "same"),
    [
        ({"key": "k1"}, {"key": "k1"}, True),
        ({"key": "k1"}, {"key": "k2"}, False),
        ({"key": "k1"}, {"token": "t", "claims": {"sub": "user_1"}}, False),
        (
            {"token": "t", "claims": {"sub": "user_1", "org": "org_1"}},
            {"token": "t2", "claims": {"sub": "user_1"}},
            True,
        ),
        (
            {"token": "t", "claims": {"sub": "user_1", "org": "org_1"}},
            {"token": "t2", "claims": {"sub": "user_1", "org": "org_2"}},
            False,
        ),
        ({"token": "t", "claims": {"sub": "user_1"}}, {"token": "t2", "claims": {"sub": "user_2"}}, False),
        ({"token": "t", "claims": {"sub": "user_1"}}, {"key": "k1"}, False),
        ({"token": "t", "claims": {}}, {"token": "t", "claims": {"sub": "user_1"}}, True),  # the same token
        (
            {"token": "t", "claims": {"email": "a***@example.com"}},
            {"token": "t2", "claims": {"email": "a***@example.com"}},
            None,
        ),
        ({}, {"key": "k1"}, None),
    ],
)
def test_which_login_a_state_belongs_to(earlier, now, same):
    from alerter.credentials.identity import LoginMemory, same_login

    assert same_login(LoginMemory.load(earlier), LoginMemory.load(now)) is same


def test_a_run_remembers_the_api_key_it_used_by_fingerprint_only(app):
    app.serve_usage(Reply(200, {"usage": None}))
    app("run")
    text = app.state_path.read_text()
    from alerter.credentials.identity import fingerprint
    from tests.conftest import API_KEY

    assert json.loads(text)["credentials"]["key"] == fingerprint(API_KEY) and API_KEY not in text


def test_an_account_whose_lock_was_busy_still_gets_its_whole_deadline(app, receiver):
    # Each account has its own state lock, and its deadline starts when it holds it: the
    # work account waits 3 s of a 4 s deadline for another run, then reads in its own 4 s
    # (before: "Factory API timed out" for work, exit 4, a failed read counted).
    from tests.test_state_file import lock_held_by_another_process

    served = two_accounts(app, receiver)
    app.write_config(
        {
            "factory": {"endpoint": "limits", "deadline_seconds": 4},
            "notify": {"urls": [receiver.apprise_url]},
            "accounts": [
                {"name": "home", "api_key_env": "HOME_KEY"},
                {"name": "work", "api_key_env": "WORK_KEY"},
            ],
        }
    )
    end = time.time() + 3 * HOUR
    for key in KEYS.values():
        served.replies[key] = Reply(200, limits_body(window(85, end)), delay=2.0)  # 2 s to answer
    states = app.state_path.parent
    states.mkdir(mode=0o700)
    with lock_held_by_another_process(states / "state-work.json") as holder:
        release = threading.Timer(3.0, holder.stdin.close)
        release.start()
        result = app("run")
        release.join()
    assert result.code == EXIT_OK, result.err
    assert sorted(titles(receiver)) == [
        "[home] Factory standard.5h at 85% (past 80%)",
        "[work] Factory standard.5h at 85% (past 80%)",
    ]
    work = json.loads((states / "state-work.json").read_text())
    assert work["health"]["failures"] == 0
