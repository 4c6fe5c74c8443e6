"""The documented crontab line, run as cron runs it: what would be mailed.

cron runs a job's command with ``/bin/sh -c``, in a bare environment (HOME, SHELL=/bin/sh,
PATH=/usr/bin:/bin, LOGNAME, plus the crontab's own variables), with no terminal and
stdin from /dev/null, and mails whatever the command prints on stdout or stderr. The
line is read from systemd/crontab.example, so the file and this test cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply

ROOT = Path(__file__).resolve().parent.parent
CRONTAB = ROOT / "systemd" / "crontab.example"
HANG_SECONDS = 60  # a generous hang detector, not a measure of speed
M = 1_000_000


def crontab_command() -> str:
    """Return the command of the one job line in crontab.example (after its five time fields)."""
    jobs = [
        line
        for line in CRONTAB.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^\w+=", line)
    ]
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(None, 5)
    assert len(fields) == 6, jobs[0]
    return fields[5]


@pytest.fixture
def cron_home(tmp_path, factory):
    """A HOME where the command is installed where pipx puts it, and a config at the default place."""
    home = tmp_path / "home"
    bin_dir = home / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    # The installed command: this checkout's code, with this interpreter.
    command = bin_dir / "factory-usage-alert"
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m alerter "$@"\n')
    command.chmod(0o755)
    config = home / ".config" / "factory-usage-alert" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        yaml.safe_dump({"factory": {"base_url": factory.url, "timeout_seconds": 5, "deadline_seconds": 3}})
    )
    config.chmod(0o600)
    return home


def run_as_cron(home: Path) -> tuple[int, str]:
    """Run the crontab line as cron would; return its exit code and what cron would mail."""
    env = {
        "HOME": str(home),
        "LOGNAME": "someone",
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        # What the crontab itself sets: cron gives the job no keyring, so an API key.
        "FACTORY_API_KEY": API_KEY,
        # Not cron's: this checkout's code, and the (maybe faked) clock of the suite.
        "PYTHONPATH": python_path(str(ROOT)),
        **same_clock(),
    }
    proc = subprocess.run(
        ["/bin/sh", "-c", crontab_command()],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # cron mails both, in one message
        timeout=HANG_SECONDS,
        start_new_session=True,  # no controlling terminal
    )
    return proc.returncode, proc.stdout.decode()


def state_of(home: Path) -> dict:
    return json.loads((home / ".local" / "state" / "factory-usage-alert" / "state.json").read_text())


def test_the_documented_line_needs_no_redirection():
    command = crontab_command()
    assert ">" not in command and "|" not in command, command
    assert command.startswith("$HOME/.local/bin/factory-usage-alert run")


def test_a_quiet_run_mails_nothing(cron_home, factory):
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(1 * M)))
    code, mailed = run_as_cron(cron_home)
    assert code == 0 and mailed == ""
    assert state_of(cron_home)["meters"]  # it did run


def test_an_alert_with_no_channel_is_mailed_once(cron_home, factory):
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(16 * M)))
    code, mailed = run_as_cron(cron_home)
    assert code == 0, mailed
    lines = mailed.splitlines()
    assert lines[0] == "Factory standard at 80% (past 80%)", mailed
    assert "16M of 20M tokens" in mailed
    assert not [line for line in lines if "INFO" in line or "WARNING" in line or "ERROR" in line]
    code, mailed = run_as_cron(cron_home)  # delivered: not repeated
    assert code == 0 and mailed == ""


def test_a_failing_run_mails_its_error(cron_home, factory):
    factory.route("GET", USAGE_PATH, Reply(503, {"error": "down"}))
    factory.route("GET", "/api/billing/limits", Reply(503, {"error": "down"}))
    code, mailed = run_as_cron(cron_home)
    assert code == 4, mailed
    lines = mailed.splitlines()
    assert lines[-1].startswith("factory-usage-alert: error: Factory API answered HTTP 503"), mailed
    assert "will retry next run" in lines[-1]
    # Nothing but the problem: the warning that counts failed runs, and the error.
    assert [line for line in lines[:-1] if "WARNING: could not read usage" not in line] == []
    assert API_KEY not in mailed


def run_redirected(cron_home: Path, target: str) -> subprocess.CompletedProcess:
    """Run the job through /bin/sh in cron's bare environment with stdout sent to ``target``."""
    env = {
        "HOME": str(cron_home),
        "PATH": "/usr/bin:/bin",
        "FACTORY_API_KEY": API_KEY,
        "PYTHONPATH": python_path(str(ROOT)),
        **same_clock(),
    }
    command = f"{cron_home / '.local' / 'bin' / 'factory-usage-alert'} run >{target}"
    argv = ["/bin/sh", "-c", command]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=HANG_SECONDS)


def test_an_alert_printed_to_dev_null_is_not_delivered(cron_home, factory):
    """The old advice, `run >/dev/null`, with no channel: the alert is lost, so it is not
    recorded as delivered, and the run says why on stderr (which cron still mails)."""
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(16 * M)))
    proc = run_redirected(cron_home, "/dev/null")
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert "channel stdout: not delivered: standard output is /dev/null" in err
    assert '"stdout"' not in json.dumps(state_of(cron_home))  # not recorded as delivered
    code, mailed = run_as_cron(cron_home)  # the next run, as documented, prints it
    assert code == 0 and mailed.startswith("Factory standard at 80% (past 80%)"), mailed
    assert '"stdout"' in json.dumps(state_of(cron_home))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_an_alert_that_cannot_be_written_is_not_delivered(cron_home, factory):
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(16 * M)))
    proc = run_redirected(cron_home, "/dev/full")
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert "channel stdout: not delivered: cannot write to standard output" in err
