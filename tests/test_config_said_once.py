"""Warnings about the config file itself are said once per change of the file (cron mails
every line a run prints, every 15 minutes), always by `check-config`, each with its fix:
keys of an earlier release, and a file that someone else may change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import usage_body

M = 1_000_000
# What `factory-usage-alert init` wrote at fbc5bf8 (`git show fbc5bf8:alerter/starter_config.yaml`).
EARLIER_STARTER = Path(__file__).parent / "data" / "starter-config-fbc5bf8.yaml"
FIXES = (
    "delete the line `refresh_margin_hours: 24`",
    "replace `source: auto` with `endpoint: auto`",
    "replace `min_elapsed_share: 0.1` with `min_elapsed_percent: 10`",
)


def earlier_init_config(app) -> None:
    """The earlier release's starter config, pointed at the stand-ins (two lines added)."""
    text = EARLIER_STARTER.read_text()
    ours = f"factory:\n  base_url: {app.factory.url}\n"
    text = text.replace("factory:\n", ours, 1) + f"\nstate_file: {app.state_path}\n"
    app.config_path.write_text(text)
    app.config_path.chmod(0o600)


def test_a_config_written_by_an_earlier_init_warns_on_the_first_run_only_with_the_fix(app):
    earlier_init_config(app)
    app.serve_usage(usage_body(M))
    first = app("run")
    assert first.code == 0, first.err
    for fix in FIXES:
        assert fix in first.err, (fix, first.err)
    second = app("run")
    assert second.code == 0, second.err
    assert second.err == ""
    assert all(fix in app("check-config").err for fix in FIXES)  # check-config always says it
    assert app("run").err == ""
    # An edit is a change of the file: said again, once.
    app.config_path.write_text(app.config_path.read_text() + "# edited\n")
    assert FIXES[0] in app("run").err
    assert app("run").err == ""


@pytest.mark.parametrize("mode", [0o660, 0o606], ids=["group", "others"])
def test_a_config_file_writable_by_others_is_said_once_per_change(app, mode):
    app.serve_usage(usage_body(M))
    app.config_path.chmod(mode)
    first = app("run")
    assert first.code == 0, first.err
    assert "writable by" in first.err and f"chmod go-w {app.config_path}" in first.err
    assert app("run").err == ""
    assert "writable by" in app("check-config").err
    app.config_path.chmod(0o600)
    assert app("run").err == ""


def test_a_config_directory_writable_by_others_is_said(app):
    app.serve_usage(usage_body(M))
    os.chmod(app.config_path.parent, 0o777)
    result = app("run")
    assert result.code == 0, result.err
    assert f"its directory {app.config_path.parent} is writable by its group and others" in result.err
    assert app("run").err == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another uid")
def test_a_config_file_owned_by_another_user_is_said(app):
    app.serve_usage(usage_body(M))
    os.chown(app.config_path, 65534, 65534)
    result = app("run")
    assert result.code == 0, result.err
    assert "belongs to" in result.err and "chown" in result.err


@pytest.mark.parametrize("cache", ["open to others", "someone else's"])
def test_a_warning_that_cannot_be_noted_as_said_says_why_and_the_fix(app, cache):
    """The "said once" mark lives in the job's cache. A cache directory the job refuses (one
    open to others, another user's in a shared XDG_CACHE_HOME) repeated the deprecation
    warnings on every run, "said once per change of the file" and all, without a word of
    why; each repeat now says why and the fix. (A read-only one: see test_systemd.)"""
    if cache == "someone else's" and os.geteuid() != 0:
        pytest.skip("only root can give a directory to another uid")
    earlier_init_config(app)
    app.serve_usage(usage_body(M))
    directory = app.home / ".cache" / "factory-usage-alert"
    directory.mkdir(parents=True)
    if cache == "open to others":
        directory.chmod(0o755)
        fix = f"{directory} is open to others (mode 0755): run `chmod 700 {directory}`"
    else:
        directory.chmod(0o700)
        os.chown(directory, 65534, 65534)
        fix = f"{directory} belongs to uid 65534: set XDG_CACHE_HOME to a directory of your own"
    for _ in range(2):
        result = app("run")
        assert result.code == 0, result.err
        assert FIXES[0] in result.err, result.err
        assert "will be said on every run" in result.err and fix in result.err, result.err
