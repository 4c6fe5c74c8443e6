"""Logging: info to stdout, warnings and errors to stderr, one line per event, no
timestamps under systemd (journald adds its own), -q and -v."""

from __future__ import annotations

import logging
import re

from alerter.cli import setup_logging
from tests.conftest import usage_body
from tests.standins import free_port

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def emit() -> None:
    log = logging.getLogger("alerter.test")
    log.debug("a detail")
    log.info("an event")
    log.warning("a warning")
    log.error("an error")


def test_info_goes_to_stdout_warnings_and_errors_to_stderr(capsys):
    setup_logging(0, False, {})
    emit()
    out, err = capsys.readouterr()
    assert [STAMP.sub("", line) for line in out.splitlines()] == ["INFO: an event"]
    assert [STAMP.sub("", line) for line in err.splitlines()] == ["WARNING: a warning", "ERROR: an error"]
    assert all(STAMP.match(line) for line in (out + err).splitlines())  # cron/terminal: timestamps


def test_under_systemd_lines_carry_no_timestamp(capsys):
    for env in ({"INVOCATION_ID": "abc"}, {"JOURNAL_STREAM": "8:1234"}):
        setup_logging(0, False, env)
        emit()
        out, err = capsys.readouterr()
        assert out == "INFO: an event\n"
        assert err == "WARNING: a warning\nERROR: an error\n"


def test_quiet_keeps_only_warnings_and_verbose_adds_detail(capsys):
    setup_logging(0, True, {"INVOCATION_ID": "abc"})
    emit()
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 2
    setup_logging(1, False, {"INVOCATION_ID": "abc"})
    emit()
    out, _ = capsys.readouterr()
    assert out == "DEBUG: a detail\nINFO: an event\n"


def test_a_quiet_run_prints_nothing_and_a_failed_one_only_to_stderr(app):
    app.env["INVOCATION_ID"] = "abc"
    app.serve_usage(usage_body(1_000_000))
    result = app("run", "-q")
    assert (result.code, result.out, result.err) == (0, "", "")
    result = app("run")  # nothing to say: nothing said, with or without -q
    assert (result.code, result.out, result.err) == (0, "", "")
    result = app("run", "-v")
    assert "DEBUG: usage from subscription/usage: standard 5.0%" in result.out.splitlines()
    app.write_config({"factory": {"base_url": f"http://127.0.0.1:{free_port()}", "deadline_seconds": 1}})
    result = app("run", "-q")
    assert result.code == 4 and result.out == ""
    lines = result.err.splitlines()
    assert lines[0] == "WARNING: could not read usage (1 failed run in a row)"
    assert lines[-1].startswith("factory-usage-alert: error: Factory API unreachable")
    assert len(lines) == 2  # one line per event
