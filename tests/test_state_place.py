"""One state file per account, whatever starts the job.

A run by hand, cron, the user timer and the system timer all use
``$XDG_STATE_HOME/factory-usage-alert/state.json``. Earlier releases' units kept it
elsewhere (the user unit's StateDirectory= is ~/.config on systemd 252, the system unit's
/var/lib/factory-usage-alert/<user>): a user upgrading gets that state carried over once,
so no alert is repeated. The real units are run in tests/test_real_systemd.py.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import usage_body

ME = pwd.getpwuid(os.geteuid()).pw_name
DATA = Path(__file__).parent / "data"


@pytest.fixture
def home_app(app, receiver, tmp_path, monkeypatch):
    """The app with a config that names no state_file (the default path is used), one
    channel, and /var/lib/factory-usage-alert moved under the test's directory."""
    monkeypatch.setattr("alerter.config.SYSTEM_STATE_ROOT", tmp_path / "var-lib-fua")
    app.config_path.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": app.factory.url, "endpoint": "allowance"},
                "notify": {"urls": [receiver.apprise_url]},
            }
        )
    )
    app.default_state = app.home / ".local" / "state" / "factory-usage-alert" / "state.json"
    app.receiver = receiver
    return app


def run_as_old_unit(app, state_directory):
    """A run as an earlier release's unit started it: systemd set $STATE_DIRECTORY."""
    app.env["STATE_DIRECTORY"] = str(state_directory)
    app.env["INVOCATION_ID"] = "0123"
    try:
        result = app("run")
        assert result.code == 0, result.err
        return result
    finally:
        del app.env["STATE_DIRECTORY"], app.env["INVOCATION_ID"]


@pytest.mark.parametrize("old_place", ["user unit on systemd 252", "system unit"])
def test_an_upgrade_carries_the_earlier_state_over_and_repeats_no_alert(home_app, old_place):
    app = home_app
    old_dir = (
        app.home / ".config" / "factory-usage-alert"
        if old_place == "user unit on systemd 252"
        else app.home / "var-lib-fua" / ME
    )
    app.serve_usage(usage_body(17_000_000))  # 85 %
    run_as_old_unit(app, old_dir)
    assert len(app.receiver.messages()) == 1
    old = old_dir / "state.json"
    remembered = old.read_bytes()
    assert not app.default_state.exists()

    result = app("run")  # the new units set no StateDirectory=, as a run by hand
    assert result.code == 0
    assert len(app.receiver.messages()) == 1, "the 80 % alert was sent again"
    assert f"carried the state over from {old} to {app.default_state}" in result.out
    assert app.default_state.exists() and oct(app.default_state.stat().st_mode & 0o777) == "0o600"
    assert old.read_bytes() == remembered  # left for a unit that may still use it

    app.serve_usage(usage_body(19_400_000))  # 97 %: the next alert comes from the one state
    result = app("run")
    assert "carried" not in result.out
    assert [m["title"].split(" at ")[-1][:3] for m in app.receiver.messages()] == ["85%", "97%"]
    assert old.read_bytes() == remembered


@pytest.mark.parametrize("old_place", ["user unit on systemd 252", "system unit"])
def test_a_unit_not_copied_again_after_the_upgrade_repeats_no_alert_and_says_so(home_app, old_place):
    # The package is upgraded, the units are not copied again: the old unit runs the new
    # command with its StateDirectory=, and the user also runs the job by hand.
    app = home_app
    old_dir = (
        app.home / ".config" / "factory-usage-alert"
        if old_place == "user unit on systemd 252"
        else app.home / "var-lib-fua" / ME
    )
    app.serve_usage(usage_body(8_000_000))  # 40 %: nothing to say
    run_as_old_unit(app, old_dir)
    app.serve_usage(usage_body(12_000_000))  # 60 %: the run by hand sends the 50 % alert
    assert app("run").code == 0
    assert len(app.receiver.messages()) == 1

    result = run_as_old_unit(app, old_dir)
    assert len(app.receiver.messages()) == 1, "the old unit sent the 50 % alert again"
    assert "started by a unit from a release before 1.0" in result.err
    assert "copy the units again" in result.err
    assert (
        f"merged the alerts already sent from {app.default_state} into {old_dir / 'state.json'}\n"
        in result.out
    )

    app.serve_usage(usage_body(17_000_000))  # 85 %: the old unit sends the 80 % alert ...
    run_as_old_unit(app, old_dir)
    assert app("run").code == 0  # ... and the run by hand does not send it again
    assert [m["title"].split("(past ")[-1] for m in app.receiver.messages()] == ["50%)", "80%)"]

    result = app("run")  # by hand, or under the new units: nothing about old units
    assert "started by a unit" not in result.err


def test_commands_by_hand_read_the_earlier_state_until_a_run_carries_it_over(home_app):
    app = home_app
    app.serve_usage(usage_body(17_000_000))
    old_dir = app.home / ".config" / "factory-usage-alert"
    run_as_old_unit(app, old_dir)
    app.serve_usage(usage_body(17_200_000))
    run_as_old_unit(app, old_dir)

    result = app("history")
    assert result.code == 0
    assert re.match(r"\d+ observations? from ", result.out), result.out
    assert f"in {old_dir / 'state.json'}\n" in result.out
    result = app("run", "--dry-run")
    assert result.code == 0 and "[dry-run]" not in result.out  # the 80 % alert is known: nothing due
    assert not app.default_state.exists()  # commands that change nothing copy nothing


def test_the_newest_earlier_state_wins(home_app):
    app = home_app
    app.serve_usage(usage_body(11_000_000))  # 55 %: the 50 % alert
    older = app.home / "var-lib-fua" / ME
    run_as_old_unit(app, older)
    app.serve_usage(usage_body(17_000_000))  # 85 %: the 80 % alert, remembered only in the newer
    newer = app.home / ".config" / "factory-usage-alert"
    run_as_old_unit(app, newer)
    os.utime(older / "state.json", (1_000_000_000, 1_000_000_000))
    assert len(app.receiver.messages()) == 2

    result = app("run")
    assert f"carried the state over from {newer / 'state.json'}" in result.out
    assert len(app.receiver.messages()) == 2


def test_a_state_file_named_in_the_config_takes_nothing_over(home_app):
    app = home_app
    app.serve_usage(usage_body(17_000_000))
    run_as_old_unit(app, app.home / ".config" / "factory-usage-alert")
    config = yaml.safe_load(app.config_path.read_text())
    config["state_file"] = str(app.home / "mine" / "state.json")
    app.config_path.write_text(yaml.safe_dump(config))
    result = app("run")
    assert result.code == 0 and "carried" not in result.out
    assert len(app.receiver.messages()) == 2  # a new, empty state: the user chose it
    assert json.loads((app.home / "mine" / "state.json").read_text())["version"] == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_an_earlier_state_of_another_user_is_not_taken(home_app):
    app = home_app
    app.serve_usage(usage_body(17_000_000))
    old_dir = app.home / "var-lib-fua" / ME
    run_as_old_unit(app, old_dir)
    os.chown(old_dir / "state.json", 4242, 4242)
    result = app("run")
    assert result.code == 0 and "carried" not in result.out
    assert len(app.receiver.messages()) == 2


# --- an upgrade from the release of 2026-11-25 (fbc5bf8): its README's order left two states ---
# tests/data/fbc5bf8-*.json were written by fbc5bf8's own code (bench/upgrade_fbc5bf8.py
# --fixtures): a run by hand at 85 % (the 80 % alert, in ~/.local/state), then the user timer
# on systemd 252 (its StateDirectory= is ~/.config) at 85 % and 97 % (80 % and 95 %).
FBC5BF8_CHANNEL = "ch-bea3ecb6af16"
FBC5BF8_START = 1795820851.558


def place_fbc5bf8_states(app) -> tuple:
    """Put the two state files fbc5bf8 wrote where it wrote them, its stand-in channel
    renamed to this test's receiver."""
    from alerter.config import channel_id

    ours = channel_id(app.receiver.apprise_url)
    hand = app.default_state
    timer = app.home / ".config" / "factory-usage-alert" / "state.json"
    for name, path in (("hand", hand), ("timer", timer)):
        text = (DATA / f"fbc5bf8-{name}.json").read_text().replace(FBC5BF8_CHANNEL, ours)
        path.parent.mkdir(parents=True, mode=0o700)
        path.write_text(text)
        path.chmod(0o600)
    app.now = json.loads(timer.read_text())["health"]["last_success"] + 900
    return hand, timer


def test_an_upgrade_from_fbc5bf8_merges_both_of_its_states_and_repeats_no_alert(home_app):
    app = home_app
    hand, timer = place_fbc5bf8_states(app)
    remembered = timer.read_bytes()
    app.serve_usage(usage_body(19_400_000, start=FBC5BF8_START))  # still 97 %

    result = app("run")
    assert result.code == 0, result.err
    assert app.receiver.messages() == [], "an alert fbc5bf8's timer had sent was sent again"
    assert f"merged the alerts already sent from {timer} into {hand}" in result.out
    assert timer.read_bytes() == remembered  # left for a unit that may still use it

    result = app("run")  # merged once: the next run has nothing to merge
    assert result.code == 0 and "merged" not in result.out and app.receiver.messages() == []

    app.serve_usage(usage_body(20_000_000, start=FBC5BF8_START))  # 100 %: the next alert, once
    assert app("run").code == 0
    assert [m["title"].split(" at ")[-1][:4] for m in app.receiver.messages()] == ["100%"]


def test_an_earlier_state_that_changed_since_it_was_merged_is_merged_again(home_app):
    app = home_app
    hand, timer = place_fbc5bf8_states(app)
    app.serve_usage(usage_body(19_400_000, start=FBC5BF8_START))
    assert app("run").code == 0 and app.receiver.messages() == []
    # An old unit still running sends the 100 % alert and records it in its own state.
    data = json.loads(timer.read_text())
    data["meters"]["standard"]["sent"] = {k: 100.0 for k in data["meters"]["standard"]["sent"]}
    timer.write_text(json.dumps(data))

    app.serve_usage(usage_body(20_000_000, start=FBC5BF8_START))
    result = app("run")
    assert result.code == 0 and f"merged the alerts already sent from {timer}" in result.out
    assert app.receiver.messages() == [], "the 100 % alert the old unit had sent was sent again"


def test_an_earlier_place_that_is_the_state_itself_is_not_merged_into_it(tmp_path, caplog):
    """XDG_CONFIG_HOME set to XDG_STATE_HOME makes the user unit's old place the state's own."""
    from alerter.state import State, carry_over, load_state, save_state

    path = tmp_path / "state" / "state.json"
    save_state(path, State())
    link = tmp_path / "same"
    link.symlink_to(path.parent)
    before = path.read_bytes()
    with caplog.at_level("INFO"):
        carry_over(path, (path, link / "state.json"))
    assert path.read_bytes() == before and "merged" not in caplog.text
    assert load_state(path).merged == ()


def test_a_dry_run_before_the_upgrade_s_first_run_knows_what_both_fbc5bf8_states_say(home_app):
    app = home_app
    place_fbc5bf8_states(app)
    app.serve_usage(usage_body(19_400_000, start=FBC5BF8_START))
    before = {p: p.read_bytes() for p in app.home.rglob("state.json")}
    result = app("run", "--dry-run")
    assert result.code == 0 and "[dry-run]" not in result.out, result.out  # the 95 % alert is known
    assert {p: p.read_bytes() for p in app.home.rglob("state.json")} == before
