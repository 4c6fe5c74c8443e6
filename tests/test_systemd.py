"""The shipped systemd units: what they promise, and systemd-analyze's verdict where it exists.

``systemd-analyze verify`` checks that ExecStart's binary exists. The units point at
where pipx installs the command (/usr/local/bin for the system unit, ~/.local/bin for the
user unit), which is not where a test machine has it, so the checks run on a temporary
copy whose ExecStart is /bin/true; nothing else in the unit changes.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerter.config import default_state_file
from tests.conftest import python_path, same_clock, usage_body

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
needs_analyze = pytest.mark.skipif(not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="no systemd-analyze here")
MAX_EXPOSURE = 2.0


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path)
    return parser


def runnable_copy(src: Path, dest: Path) -> None:
    """Copy the units of ``src`` to ``dest`` with ExecStart pointing at /bin/true."""
    dest.mkdir()
    for file in src.iterdir():
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", file.read_text(), flags=re.M)
        (dest / file.name).write_text(text)


def analyze(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "service, timer",
    [
        ("system/factory-usage-alert@.service", "system/factory-usage-alert@.timer"),
        ("user/factory-usage-alert.service", "user/factory-usage-alert.timer"),
    ],
)
def test_units_are_oneshot_every_15_minutes_persistent_with_jitter(service, timer):
    svc = unit(UNITS / service)["Service"]
    assert svc["Type"] == "oneshot"
    # No StateDirectory=: the state is the user's own, where a run by hand finds it.
    assert "StateDirectory" not in svc
    assert svc["ExecStart"].endswith("/factory-usage-alert run")
    tmr = unit(UNITS / timer)
    assert tmr["Timer"]["OnCalendar"] == "*:0/15"
    assert tmr["Timer"]["Persistent"] == "true"
    assert tmr["Timer"]["RandomizedDelaySec"]
    assert tmr["Install"]["WantedBy"] == "timers.target"


def minutes(value: str) -> float:
    """Given a systemd time span of minutes and seconds ("5min", "3min 30s"), return seconds."""
    spans = re.findall(r"(\d+)\s*(min|s)\b", value)
    assert spans and "".join(n + u for n, u in spans) == value.replace(" ", ""), value
    return sum(int(n) * (60 if u == "min" else 1) for n, u in spans)


@pytest.mark.parametrize(
    "service", ["system/factory-usage-alert@.service", "user/factory-usage-alert.service"]
)
def test_a_timer_never_hangs_and_its_stop_never_cuts_a_renewal_workos_received(service):
    # A stop signal waits for a renewal in flight, which may last the run's deadline plus
    # the cap on WorkOS's answer (and droid's lock wait): neither timeout may cut it.
    from alerter.config import Config
    from alerter.credentials.lock import WAIT_SECONDS
    from alerter.credentials.refresh import ANSWER_CAP_SECONDS

    svc = unit(UNITS / service)["Service"]
    longest = Config.deadline_seconds + ANSWER_CAP_SECONDS + WAIT_SECONDS
    assert minutes(svc["TimeoutStartSec"]) > longest
    assert minutes(svc["TimeoutStopSec"]) > longest  # systemd's default (90 s) is not


def test_system_service_runs_as_the_instance_user_and_is_hardened():
    svc = unit(UNITS / "system/factory-usage-alert@.service")["Service"]
    assert svc["User"] == "%i"
    assert svc["ExecStart"] == "/usr/local/bin/factory-usage-alert run"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
    }.items():
        assert svc[key] == value, key
    assert (
        "@system-service" in svc["SystemCallFilter"]
        or "@system-service" in (UNITS / "system/factory-usage-alert@.service").read_text()
    )


def test_the_system_unit_lets_the_job_write_exactly_the_default_state_directory():
    text = (UNITS / "system/factory-usage-alert@.service").read_text()
    writable = re.findall(r"^ReadWritePaths=-?(\S+)$", text, flags=re.M)
    expected = default_state_file({"HOME": "/home/%i"}).parent
    assert str(expected) in writable
    # ReadWritePaths= needs the directory to exist: made before the sandbox, as the user.
    pre = re.search(r"^ExecStartPre=\+(.*)$", text, flags=re.M)
    assert pre and pre.group(1) == f"runuser -u %i -- mkdir -p -m 0700 {expected}"


def test_a_unit_from_an_earlier_release_keeps_its_state_directory(app):
    """A unit copied from an earlier release still sets StateDirectory=; the job keeps using
    it, as it did, rather than a home the old system unit made read-only."""
    app.config_path.write_text(
        yaml.safe_dump({"factory": {"base_url": app.factory.url, "endpoint": "allowance"}})
    )
    state_dir = app.home / "var-lib"
    state_dir.mkdir()
    app.env["STATE_DIRECTORY"] = str(state_dir)
    app.env["INVOCATION_ID"] = "0123"
    app.serve_usage(usage_body(1_000_000))
    assert app("run").code == 0
    assert (state_dir / "state.json").exists()


@needs_analyze
def test_systemd_analyze_verify_reports_nothing(tmp_path):
    runnable_copy(UNITS / "system", tmp_path / "system")
    done = analyze(
        "verify",
        str(tmp_path / "system" / "factory-usage-alert@alice.service"),
        str(tmp_path / "system" / "factory-usage-alert@alice.timer"),
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")

    runnable_copy(UNITS / "user", tmp_path / "user")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = analyze(
        "--user",
        "verify",
        str(tmp_path / "user" / "factory-usage-alert.service"),
        str(tmp_path / "user" / "factory-usage-alert.timer"),
        env={"XDG_RUNTIME_DIR": str(runtime)},
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_systemd_analyze_security_rates_the_system_service_ok(tmp_path):
    runnable_copy(UNITS / "system", tmp_path / "system")
    done = analyze(
        "security", "--offline=true", str(tmp_path / "system" / "factory-usage-alert@alice.service")
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout[-500:]
    assert float(match.group(1)) <= MAX_EXPOSURE and match.group(2) == "OK", match.group(0)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) for read-only bind mounts")
def test_the_system_unit_lets_a_warning_about_the_config_be_said_once(app):
    """The system unit makes the home read-only but for its ReadWritePaths=: the cache that
    notes a warning was said was not among them, so a config from the earlier `init` warned
    of its three retired keys on every run of the timer. Here the home is made read-only as
    the unit makes it (its ExecStartPre= directories made first, its writable paths kept
    writable), and the job runs three times."""
    text = (UNITS / "system/factory-usage-alert@.service").read_text().replace("/home/%i", str(app.home))
    for made in re.findall(r"^ExecStartPre=\+runuser -u %i -- mkdir -p -m 0700 (\S+)$", text, flags=re.M):
        Path(made).mkdir(mode=0o700, parents=True, exist_ok=True)
    writable = [p for p in re.findall(r"^ReadWritePaths=-?(\S+)$", text, flags=re.M) if Path(p).exists()]
    app.state_path = app.home / ".local/state/factory-usage-alert/state.json"
    starter = (Path(__file__).parent / "data" / "starter-config-fbc5bf8.yaml").read_text()
    ours = f"factory:\n  base_url: {app.factory.url}\n"
    app.config_path.write_text(starter.replace("factory:\n", ours, 1))
    app.config_path.chmod(0o600)
    app.serve_usage(usage_body(1_000_000))
    # Each writable path bound onto itself first, then the home (with them) made read-only.
    script = 'home="$1"; shift; n="$1"; shift; i=0; while [ "$i" -lt "$n" ]; do '
    script += 'mount --bind "$1" "$1" || exit 99; shift; i=$((i+1)); done; '
    script += 'mount --rbind "$home" "$home" && mount -o remount,bind,ro "$home" "$home" && exec "$@"'
    argv = ["unshare", "-m", "sh", "-c", script, "sh", str(app.home), str(len(writable)), *writable]
    argv += [sys.executable, "-m", "alerter", "run", "--config", str(app.config_path)]
    env = {**app.env, "TZ": "UTC", **same_clock(), "PYTHONPATH": python_path(str(UNITS.parent))}
    warned = []
    for _ in range(3):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        warned.append("refresh_margin_hours" in done.stderr)
    assert app.state_path.exists()  # the sandbox let the job keep its state
    assert warned == [True, False, False]
