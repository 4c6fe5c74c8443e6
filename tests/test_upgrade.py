"""Upgrading from the release of 2026-11-25 (commit fbc5bf8) repeats nothing.

That release's README said: `pipx install .`, `factory-usage-alert init`, a run by hand,
then the user timer. Its user unit set `StateDirectory=`, which systemd 252 (Debian 12)
maps to ``~/.config``, while a run by hand kept the state in ``~/.local/state``: two state
files, each with its own ledger. This test takes that release's code from git, runs it
that way (a hand run, then a run as its user timer started it), upgrades to this
checkout's installed command and checks that no alert is sent again, and that a
deprecation warning about the config that release's ``init`` wrote is said once.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import API_KEY, USAGE_PATH, python_path, same_clock, usage_body
from tests.standins import Reply

ROOT = Path(__file__).resolve().parent.parent
OLD_RELEASE = "fbc5bf8"
COMMAND = Path(sys.executable).parent / "factory-usage-alert"


def _old_release(into: Path) -> Path:
    """Unpack the old release's package from git into ``into``; skip when git lacks it."""
    have = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"], capture_output=True
    )
    if have.returncode != 0:
        pytest.skip(f"this clone does not hold the old release's commit {OLD_RELEASE} (a shallow clone?)")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", OLD_RELEASE, "alerter"],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


class Machine:
    """One user's home, where the old release and then this one run as separate processes."""

    def __init__(self, tmp_path: Path, factory, receiver) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.elsewhere = tmp_path / "cwd"  # no checkout on the module path
        self.elsewhere.mkdir()
        self.old = _old_release(tmp_path / "old")
        self.factory = factory
        self.receiver = receiver
        self.env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", ""),
            "FACTORY_API_KEY": API_KEY,
            **same_clock(),
        }

    def old_release(self, *args: str, timer: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "PYTHONPATH": python_path(str(self.old))}
        if timer:  # what systemd 252 gives a user unit with StateDirectory=factory-usage-alert
            env["STATE_DIRECTORY"] = str(self.home / ".config" / "factory-usage-alert")
            env["INVOCATION_ID"] = "0123456789abcdef"
        return self._run([sys.executable, "-m", "alerter", *args], env)

    def new_release(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not COMMAND.exists():
            pytest.skip(f"the command is not installed at {COMMAND}")
        env = {**self.env, "INVOCATION_ID": "fedcba9876543210"}  # the new user timer: no StateDirectory=
        return self._run([str(COMMAND), *args], env)

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.elsewhere, env=env, capture_output=True, text=True, timeout=120)

    def serve(self, used: int) -> None:
        self.factory.route("GET", USAGE_PATH, Reply(200, usage_body(used)))

    def sent(self) -> list[str]:
        return [m["title"] for m in self.receiver.messages()]


@pytest.fixture
def machine(tmp_path, factory, receiver) -> Machine:
    return Machine(tmp_path, factory, receiver)


def test_an_upgrade_from_the_release_of_2026_11_25_repeats_no_alert_and_no_warning(machine):
    # The old README: init, then point the config at the channel (and here, the stand-in).
    result = machine.old_release("init")
    assert result.returncode == 0, result.stderr
    config_path = machine.home / ".config" / "factory-usage-alert" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["factory"]["base_url"] = machine.factory.url
    config["notify"]["urls"] = [machine.receiver.apprise_url]
    config_path.write_text(yaml.safe_dump(config))

    machine.serve(12_000_000)  # 60 %: the 50 % alert, from the run by hand
    result = machine.old_release("run")
    assert result.returncode == 0, result.stderr
    assert len(machine.sent()) == 1
    machine.serve(17_000_000)  # 85 %: the user timer's run has a state file of its own
    result = machine.old_release("run", timer=True)
    assert result.returncode == 0, result.stderr
    before = machine.sent()
    state_files = sorted(str(p.relative_to(machine.home)) for p in machine.home.rglob("state.json"))
    assert state_files == [
        ".config/factory-usage-alert/state.json",  # the user timer's (systemd 252)
        ".local/state/factory-usage-alert/state.json",  # the run by hand's
    ]

    # Upgrade: the new command, run by the new user timer, at the same usage.
    first = machine.new_release("run")
    assert first.returncode == 0, first.stderr
    assert machine.sent() == before, f"an alert the old release sent was sent again: {first.stderr}"
    second = machine.new_release("run")
    assert second.returncode == 0, second.stderr
    assert machine.sent() == before
    assert "deprecated" not in (second.stdout + second.stderr).lower()
    assert "no longer used" not in second.stderr and "rename it" not in second.stderr, second.stderr

    # And the job goes on from the merged ledger: the next threshold comes once.
    machine.serve(19_400_000)  # 97 %
    assert machine.new_release("run").returncode == 0
    assert len(machine.sent()) == len(before) + 1
    assert machine.new_release("run").returncode == 0
    assert len(machine.sent()) == len(before) + 1


def test_the_version_is_1_0_0():
    result = subprocess.run([str(COMMAND), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == "factory-usage-alert 1.0.0"
