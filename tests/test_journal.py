"""Under journald every line carries its priority, so `journalctl -p warning` shows problems.

systemd connects a service's stdout and stderr to one journal stream and names it in
JOURNAL_STREAM (<device>:<inode>). These tests give the command a real file as that
stream, with JOURNAL_STREAM naming it, and read what it wrote: what journald would have
parsed. The real journal is read in tests/test_real_systemd.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from alerter.journal import is_journal, priority_of, with_priority
from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply, free_port

ROOT = Path(__file__).resolve().parent.parent


def run_with_output_to(
    stream: Path, config: Path, home: Path, *, journal_stream: str | None, more: tuple[str, ...] = ()
) -> int:
    """Run `factory-usage-alert run` as systemd would: stdout and stderr the same file."""
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "FACTORY_API_KEY": API_KEY,
        "FACTORY_HOME_OVERRIDE": str(home),
        "INVOCATION_ID": "0123456789abcdef",
        "PYTHONPATH": python_path(str(ROOT)),
        **same_clock(),
    }
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with open(stream, "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "alerter", "run", "--config", str(config), *more],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=120,
        )
    return done.returncode


def device_inode(path: Path) -> str:
    info = os.stat(path)
    return f"{info.st_dev}:{info.st_ino}"


def write_config(home: Path, base_url: str) -> Path:
    config = home / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": base_url, "endpoint": "allowance", "deadline_seconds": 2},
                "state_file": str(home / "state" / "state.json"),
            }
        )
    )
    config.chmod(0o600)
    return config


def test_every_line_carries_its_priority_on_the_journal_stream(tmp_path, factory):
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(1_000_000)))
    config = write_config(tmp_path, factory.url)
    stream = tmp_path / "journal-stream"
    stream.touch()

    assert run_with_output_to(stream, config, tmp_path, journal_stream=device_inode(stream)) == 0
    assert stream.read_text() == ""  # a run with nothing to say says nothing
    more = ("-v",)
    assert run_with_output_to(stream, config, tmp_path, journal_stream=device_inode(stream), more=more) == 0
    assert "<7>DEBUG: usage from subscription/usage: standard 5.0%" in stream.read_text().splitlines()

    # Factory is not listening: a warning for the failed read, then the error that ends the run.
    stream.write_text("")
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert run_with_output_to(stream, config, tmp_path, journal_stream=device_inode(stream)) == 4
    lines = stream.read_text().splitlines()
    assert "<4>WARNING: could not read usage (1 failed run in a row)" in lines
    assert lines[-1].startswith("<3>factory-usage-alert: error: Factory API unreachable")
    retries = [line for line in lines if "retrying in" in line]
    assert retries and all(line.startswith("<6>INFO: ") for line in retries)
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines


def test_output_that_is_not_the_journal_stays_plain(tmp_path):
    """JOURNAL_STREAM inherited by a command whose output goes elsewhere (redirected to a
    file from a service, say): that file gets the plain lines."""
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.touch()
    journal = tmp_path / "journal-stream"
    journal.touch()
    assert run_with_output_to(elsewhere, config, tmp_path, journal_stream=device_inode(journal)) == 4
    lines = elsewhere.read_text().splitlines()
    assert "WARNING: could not read usage (1 failed run in a row)" in lines
    assert not [line for line in lines if line.startswith("<")]
    assert lines[-1].startswith("factory-usage-alert: error: Factory API unreachable")


def test_is_journal_compares_device_and_inode(tmp_path):
    path = tmp_path / "stream"
    path.touch()
    with open(path, "w") as stream:
        assert is_journal(stream, {"JOURNAL_STREAM": device_inode(path)})
        for wrong in ("", "8", "x:y", f"{os.stat(path).st_dev}:{os.stat(path).st_ino + 1}"):
            assert not is_journal(stream, {"JOURNAL_STREAM": wrong}), wrong
    assert not is_journal(stream, {"JOURNAL_STREAM": device_inode(path)})  # closed


def test_priorities_are_sd_daemons():
    import logging

    assert [priority_of(level) for level in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
    assert priority_of(logging.INFO + 5) == 4  # between info and warning: the more severe
    assert with_priority("Traceback:\n  line", logging.ERROR) == "<3>Traceback:\n<3>  line"
