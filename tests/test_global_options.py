"""--config, -v/-vv and -q mean the same before the command as after it, for every command."""

from __future__ import annotations

import logging

import pytest
import yaml

from tests.conftest import usage_body
from tests.standins import free_port

M = 1_000_000
COMMANDS = {  # each command with the arguments it needs
    "run": [],
    "status": [],
    "check-config": [],
    "init": [],
    "test-notify": [],
    "history": [],
    "backtest": ["trace.jsonl"],
}
LEVELS = {(): logging.INFO, ("-q",): logging.WARNING, ("-v",): logging.DEBUG, ("-vv",): logging.DEBUG}


@pytest.fixture
def default_config(app):
    """A valid config at the default path that points nowhere useful: a command that
    quietly ignored --config would read it, succeed or fail fast, and never hang."""
    path = app.home / ".config" / "factory-usage-alert" / "config.yaml"
    path.parent.mkdir(parents=True)
    closed = f"http://127.0.0.1:{free_port()}"
    path.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": closed, "deadline_seconds": 1},
                "state_file": str(app.home / "default-state" / "state.json"),
            }
        )
    )
    return path


def argv_with(command: str, options: list[str], before: bool) -> list[str]:
    rest = COMMANDS[command]
    return [*options, command, *rest] if before else [command, *rest, *options]


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize("verbosity", list(LEVELS), ids=["plain", "-q", "-v", "-vv"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_global_option_works_on_either_side_of_every_command(
    app, default_config, command, verbosity, before
):
    # A broken config that exists: every command must refuse it by name (init refuses to
    # overwrite it), which shows that this --config, wherever it stands, was the one read.
    bad = app.home / "bad.yaml"
    bad.write_text("thresholds:\n  standard: [1200]\n")
    result = app(*argv_with(command, ["--config", str(bad), *verbosity], before), config=False)
    assert result.code == 2, result
    assert str(bad) in result.err
    assert logging.getLogger("alerter").level == LEVELS[verbosity]
    # -vv adds a traceback to an error; check-config lists problems, which are not errors.
    traceback = verbosity == ("-vv",) and command != "check-config"
    assert ("Traceback" in result.err) == traceback, result.err
    assert not (app.home / "default-state").exists()


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_check_config_reads_the_config_given(app, default_config, before):
    result = app(*argv_with("check-config", ["--config", str(app.config_path)], before), config=False)
    assert result.code == 0, result.err
    assert f"config: {app.config_path}: OK" in result.out
    assert f"state file: {app.state_path}" in result.out


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_init_writes_the_config_given(app, default_config, before):
    target = app.home / "elsewhere" / "config.yaml"
    default_text = default_config.read_text()
    result = app(*argv_with("init", ["--config", str(target)], before), config=False)
    assert result.code == 0, result.err
    assert f"wrote {target}" in result.out and target.exists()
    assert default_config.read_text() == default_text


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_quiet_run_prints_nothing_and_verbose_run_prints_details(app, before):
    app.serve_usage(usage_body(1 * M))  # 5 %: nothing to send
    plain = app("run")
    assert plain.code == 0 and plain.out == "" and plain.err == ""  # cron mails nothing
    quiet = app(*argv_with("run", ["-q", "--config", str(app.config_path)], before), config=False)
    assert quiet.code == 0 and quiet.out == "" and quiet.err == ""
    verbose = app(*argv_with("run", ["-v", "--config", str(app.config_path)], before), config=False)
    assert verbose.code == 0 and "DEBUG" in verbose.out and "login from" in verbose.out
    assert "usage from subscription/usage: standard 5.0%" in verbose.out


def test_options_on_both_sides_add_up_and_the_last_config_wins(app, default_config):
    bad = app.home / "bad.yaml"
    bad.write_text("thresholds:\n  standard: [1200]\n")
    result = app("-v", "--config", str(app.config_path), "run", "-v", "--config", str(bad), config=False)
    assert result.code == 2 and str(bad) in result.err
    assert "Traceback" in result.err  # -v and -v make -vv
    result = app("-q", "check-config", "--config", str(app.config_path), config=False)
    assert result.code == 0 and logging.getLogger("alerter").level == logging.WARNING
