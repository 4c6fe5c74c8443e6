"""The deployment paths of the README, in a real systemd: a fresh Debian 12 booted in a
container (tests/nspawn.py), a new user following the README's commands verbatim.

The commands are read from the README's blocks, so the README and this test cannot drift.
One container serves the module; the steps build on each other, in the order a user
takes them: the quick start, a run by hand, the user timer, the system timer (hardened,
renewing droid's login), a failing run. Factory, WorkOS and the notification receiver
are stand-ins on the host's 127.0.0.1, which the container shares.

Skipped, with the reason, where a container cannot be booted: not root, no
systemd-nspawn, no cached root file system and no debootstrap or mirror, a faked clock.
Cold (debootstrap, wheels) it takes a few minutes; later runs reuse .cache/nspawn/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from alerter.credentials.store import decrypt_envelope
from tests import nspawn
from tests.conftest import USAGE_PATH, usage_body
from tests.credentials.helpers import SOON, login_data, start_workos, write_keyfile_store
from tests.standins import JsonReceiver, Reply, StandIn

README = nspawn.ROOT / "README.md"
USER = "alice"
CHECKOUT = "factory-usage-alert"  # the user's copy of this directory, in her home
STATE = Path(".local/state/factory-usage-alert/state.json")  # under the home
SERVICE = f"factory-usage-alert@{USER}.service"


def readme_block(heading: str) -> str:
    """Return the first ```sh block after the README's line ``heading``."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    assert match, f"no sh block under {heading!r} in the README"
    return match.group(1)


def exit_name_in_readme(code: int) -> str:
    """Return the name the README's exit-code table says systemd shows for ``code``."""
    match = re.search(rf"^\| {code} \| `({code}/[A-Z]+)` \|", README.read_text(), re.M)
    assert match, f"exit code {code} is not in the README's table"
    return match.group(1)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A booted Debian 12 with user alice: her home is a host directory, her config points
    at stand-ins on 127.0.0.1, her droid login is in droid's file store."""
    reason = nspawn.why_not_here()
    if reason:
        pytest.skip(reason)
    try:
        root = nspawn.rootfs()
        wheels = nspawn.wheelhouse()
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))
    where = tmp_path_factory.mktemp("nspawn")
    homes = where / "home"
    homes.mkdir()
    binds = {homes: "/home"}
    if wheels is not None:
        binds[wheels] = "/wheels"
    factory = StandIn().start()
    receiver = JsonReceiver().start()
    workos, stop_workos = start_workos()
    try:
        with nspawn.Machine(root, binds, where / "console.log") as machine:
            yield _set_up(machine, homes / USER, factory, receiver, workos, wheels is not None)
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))
    finally:
        stop_workos()
        receiver.stop()
        factory.stop()
        shutil.rmtree(homes, ignore_errors=True)  # the users' virtualenvs; console.log stays


def _set_up(machine, home: Path, factory, receiver, workos, offline_wheels: bool) -> SimpleNamespace:
    machine.sh(
        f"useradd --create-home --shell /bin/bash {USER}"
        f" && echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER}"
        # The README suggests it for a timer that runs while the user is logged out.
        f" && loginctl enable-linger {USER}",
        check=True,
    )
    if offline_wheels:  # pip in the container installs from the host's wheels, offline
        pip_conf = "[global]\nno-index = true\nfind-links = /wheels\n"
        machine.run(["sh", "-c", "cat > /etc/pip.conf"], input=pip_conf, check=True)
    uid = int(machine.sh(f"id -u {USER}", check=True).stdout)
    nspawn.checkout_copy(home / CHECKOUT)
    config = home / ".config" / "factory-usage-alert" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": factory.url, "workos_url": workos.url, "endpoint": "allowance"},
                "notify": {"urls": [receiver.apprise_url]},
            }
        )
    )
    config.chmod(0o600)
    factory.route("GET", USAGE_PATH, Reply(200, usage_body(17_000_000)))  # 85 %
    key = write_keyfile_store(home / ".factory", login_data(SOON))
    for path in [home, *home.rglob("*")]:
        os.lchown(path, uid, uid)
    return SimpleNamespace(
        machine=machine, home=home, uid=uid, key=key, factory=factory, receiver=receiver, workos=workos
    )


def as_user(box, script: str, **kwargs):
    """Run ``script`` as alice in a login session, in her checkout (as she would type it)."""
    return box.machine.sh(f"cd ~/{CHECKOUT} && set -e\n{script}", user=USER, **kwargs)


def unit_journal(box, **match: str) -> list[dict]:
    """Return the journal entries matching ``match`` (field=value), as journald keeps them."""
    fields = [f"{name}={value}" for name, value in match.items()]
    done = box.machine.run(["journalctl", "--no-pager", "-o", "json", *fields])
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def scheduled(listing: str, timer: str) -> bool:
    """Whether `systemctl list-timers` shows ``timer`` with a next run (a date, not n/a)."""
    return re.search(rf"^\w{{3}} \d{{4}}-\d\d-\d\d .*{re.escape(timer)}", listing, re.M) is not None


def titles(box) -> list[str]:
    return [m["title"] for m in box.receiver.messages()]


def test_the_quick_start_works_verbatim_for_a_new_user(box):
    """Debian 12 with only python3 and python3-venv: no pipx, ~/.local/bin not on PATH."""
    on_path = 'echo ":$PATH:" | grep -F ":$HOME/.local/bin:"'
    premise = as_user(box, f"command -v pipx || command -v pip || {on_path}")
    assert premise.returncode != 0, premise.stdout  # none of these: the README must not need them
    done = as_user(box, readme_block("## Quick start"), timeout=900)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert "[dry-run] would send (warning)" in done.stdout and "standard at 85%" in done.stdout
    assert (box.home / ".local/bin/factory-usage-alert").is_symlink()
    assert box.receiver.messages() == []  # a dry run sends nothing


def test_the_user_timer_and_runs_by_hand_share_one_state(box):
    done = as_user(box, "~/.local/bin/factory-usage-alert run")  # by hand, first
    assert done.returncode == 0, done.stderr
    assert len(titles(box)) == 1 and "80%" in titles(box)[0]
    assert (box.home / STATE).exists()

    done = as_user(box, readme_block("### Every 15 minutes with systemd (user timer)"))
    assert done.returncode == 0, done.stderr
    timers = as_user(box, "systemctl --user list-timers --all --no-pager factory-usage-alert.timer")
    assert scheduled(timers.stdout, "factory-usage-alert.timer"), timers.stdout

    done = as_user(box, "systemctl --user start factory-usage-alert.service")
    assert done.returncode == 0, done.stderr
    assert len(titles(box)) == 1, "the user timer's run sent the 80 % alert again"
    assert not (box.home / ".config/factory-usage-alert/state.json").exists()  # systemd 252's place
    lines = unit_journal(box, _SYSTEMD_USER_UNIT="factory-usage-alert.service", _UID=str(box.uid))
    assert not [e for e in lines if e["MESSAGE"].startswith("INFO: ")], lines  # a quiet run says nothing


def test_the_hardened_system_timer_runs_as_the_user_renews_droids_login_and_shares_the_state(box):
    box.factory.route("GET", USAGE_PATH, Reply(200, usage_body(19_200_000)))  # 96 %
    store = box.home / ".factory" / "auth.v2.file"
    write_keyfile_store(store.parent, login_data(SOON), box.key)  # about to expire: renewed
    os.lchown(store, box.uid, box.uid)
    renewals = len(box.workos.requests)

    done = as_user(box, readme_block("### As a system service (hardened)"), timeout=900)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    shipped = (nspawn.ROOT / "systemd/system/factory-usage-alert@.service").read_text()
    installed = box.machine.run(["cat", "/etc/systemd/system/factory-usage-alert@.service"]).stdout
    assert installed == shipped
    timer = f"factory-usage-alert@{USER}.timer"
    timers = box.machine.run(["systemctl", "list-timers", "--all", "--no-pager", timer])
    assert scheduled(timers.stdout, timer), timers.stdout

    done = box.machine.run(["systemctl", "start", SERVICE])
    status = box.machine.run(["systemctl", "status", "--no-pager", "--lines=20", SERVICE]).stdout
    assert done.returncode == 0, status
    # apprise delivered through the sandbox, and only what the shared state had not sent.
    assert len(titles(box)) == 2 and "95%" in titles(box)[1], titles(box)
    # droid's login was renewed (cryptography decrypted and wrote the store) and saved.
    assert len(box.workos.requests) == renewals + 1
    saved = json.loads(decrypt_envelope(store.read_text(), box.key))
    assert saved["access_token"] == box.workos.issued[-1]["access_token"]
    assert store.stat().st_uid == box.uid
    lines = unit_journal(box, _SYSTEMD_UNIT=SERVICE)
    job_lines = [e for e in lines if e.get("SYSLOG_IDENTIFIER") == "factory-usage-alert"]
    assert job_lines and {e["_UID"] for e in job_lines} == {str(box.uid)}, lines  # runs as alice
    state = box.home / STATE
    assert state.stat().st_uid == box.uid and state.stat().st_mode & 0o777 == 0o600
    assert box.machine.run(["test", "-e", "/var/lib/factory-usage-alert"]).returncode != 0

    # By hand, alice sees what the timer remembers: nothing is due.
    done = as_user(box, "factory-usage-alert run --dry-run && factory-usage-alert history")
    assert done.returncode == 0, done.stderr
    assert "[dry-run] would send" not in done.stdout
    assert f"in /home/{USER}/{STATE}\n" in done.stdout


def test_warnings_and_errors_reach_the_journal_at_their_priority(box):
    box.factory.route("GET", USAGE_PATH, Reply(404, {"error": "not found"}))  # not retried: exits 4
    done = box.machine.run(["systemctl", "start", SERVICE])
    assert done.returncode != 0
    status = box.machine.run(["systemctl", "status", "--no-pager", SERVICE]).stdout
    assert f"status={exit_name_in_readme(4)}" in status, status
    invocation = box.machine.run(["systemctl", "show", "-P", "InvocationID", SERVICE]).stdout.strip()
    problems = box.machine.run(
        ["journalctl", "--no-pager", "-o", "cat", "-p", "warning", f"_SYSTEMD_INVOCATION_ID={invocation}"]
    ).stdout.splitlines()
    assert "WARNING: could not read usage (1 failed run in a row)" in problems, problems
    assert any(line.startswith("factory-usage-alert: error: ") for line in problems), problems
    assert not [line for line in problems if line.startswith("INFO")]
    everything = unit_journal(box, _SYSTEMD_INVOCATION_ID=invocation)
    by_text = {e["MESSAGE"]: e["PRIORITY"] for e in everything if "MESSAGE" in e}
    assert by_text["WARNING: could not read usage (1 failed run in a row)"] == "4"
    assert {p for m, p in by_text.items() if m.startswith("factory-usage-alert: error: ")} == {"3"}
    box.factory.route("GET", USAGE_PATH, Reply(200, usage_body(19_200_000)))


def test_the_system_timer_alone_makes_the_state_directory_and_takes_over_the_old_state(box):
    """bob never ran the job by hand, and an earlier release's system unit kept his state in
    /var/lib/factory-usage-alert/bob. The unit makes ~/.local/state/factory-usage-alert
    (owned by bob, as are the directories above it) before the sandbox makes the home
    read-only, and the job carries the old state over: nothing it had sent is sent again."""
    box.machine.sh("useradd --create-home --shell /bin/bash bob", check=True)
    uid = int(box.machine.sh("id -u bob", check=True).stdout)
    home = box.home.parent / "bob"
    config = home / ".config" / "factory-usage-alert" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text((box.home / ".config" / "factory-usage-alert" / "config.yaml").read_text())
    write_keyfile_store(home / ".factory", login_data())
    for path in [home, *home.rglob("*")]:
        os.lchown(path, uid, uid)
    assert not (home / ".local").exists()
    # The old unit's StateDirectory=factory-usage-alert/bob, holding the 80 and 95 % alerts
    # as sent (alice's state: same channel, same billing period).
    old = "/var/lib/factory-usage-alert/bob/state.json"
    box.machine.sh(
        "install -d -m 0755 /var/lib/factory-usage-alert"
        " && install -d -m 0700 -o bob /var/lib/factory-usage-alert/bob"
        f" && install -m 0600 -o bob /home/{USER}/{STATE} {old}",
        check=True,
    )
    delivered = len(titles(box))

    done = box.machine.run(["systemctl", "start", "factory-usage-alert@bob.service"])
    status = box.machine.run(["systemctl", "status", "--no-pager", "factory-usage-alert@bob.service"]).stdout
    assert done.returncode == 0, status
    assert len(titles(box)) == delivered, "an alert the old unit had sent was sent again"
    for path in (home / ".local", home / ".local/state", home / STATE.parent, home / STATE):
        assert path.stat().st_uid == uid, path
    assert (home / STATE.parent).stat().st_mode & 0o777 == 0o700
    journal = box.machine.run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", "factory-usage-alert@bob.service"]
    )
    assert f"carried the state over from {old} to /home/bob/{STATE}" in journal.stdout, journal.stdout
