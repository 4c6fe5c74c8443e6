"""droid's store on difficult ground: a full disk, a read-only directory, a symlink.

The full disk and the read-only directory are real: a small tmpfs, or a read-only bind
mount, in a private mount namespace (``unshare -m``; root only) that only the job's
process sees. The WorkOS and Factory stand-ins run in this process, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alerter.credentials import CredentialSettings, open_login
from alerter.credentials.store import decrypt_envelope
from tests.conftest import USAGE_PATH, python_path, same_clock, usage_body
from tests.credentials.helpers import HOUR, SOON, login_data, no_keyring, write_keyfile_store
from tests.standins import Reply, StandIn

REPO = Path(__file__).resolve().parent.parent


def can_unshare() -> str | None:
    """Return why private mounts cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if done.returncode != 0:
        return f"unshare -m is not allowed here ({done.stderr.decode().strip()[:80]})"
    return None


needs_mounts = pytest.mark.skipif(can_unshare() is not None, reason=str(can_unshare()))


@pytest.fixture
def api():
    server = StandIn().start()
    server.route("GET", USAGE_PATH, Reply(200, usage_body(1_000_000)))
    yield server
    server.stop()


class Job:
    """The real command in a subprocess whose ~/.factory is mounted as a test chooses."""

    def __init__(self, root: Path, workos, api) -> None:
        self.root = root
        self.user_home = root / "home"
        self.store = self.user_home / ".factory"
        self.outside = root / "outside"  # where the namespace copies the store back out
        self.workos = workos
        self.config = root / "config.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "factory": {"base_url": api.url, "workos_url": workos.url, "deadline_seconds": 40},
                    "state_file": str(root / "state" / "state.json"),
                }
            )
        )
        self.key = b""

    def login(self, data: dict) -> None:
        """Write droid's file store as it will be inside the mount."""
        self.key = write_keyfile_store(self.outside, data)

    def run(self, mount: str, *argv: str) -> subprocess.CompletedProcess:
        """Mount ``mount`` (a shell snippet using $D) over the store directory, copy the
        store in, run the job, and copy the store back to ``outside``."""
        self.store.mkdir(parents=True, exist_ok=True)
        command = " ".join([sys.executable, "-m", "alerter", *argv, "--config", str(self.config)])
        script = f"""
set -e
D={shlex.quote(str(self.store))}
O={shlex.quote(str(self.outside))}
mount -t tmpfs -o size=1m tmpfs "$D"
cp -a "$O"/. "$D"/
{mount}
set +e
{command}
echo $? > "$O/.rc"
rm -f "$O"/auth.v2.file "$O"/.auth.v2.file.*
cp -a "$D"/. "$O"/ 2>/dev/null
"""
        env = {
            "HOME": str(self.user_home),
            "PATH": os.environ.get("PATH", ""),
            **same_clock(),  # the job judges token expiry by the same (maybe faked) clock
            "PYTHONPATH": python_path(str(REPO)),
        }
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        rc = int((self.outside / ".rc").read_text())
        return subprocess.CompletedProcess(done.args, rc, done.stdout, done.stderr)

    def stored(self) -> dict:
        return json.loads(decrypt_envelope((self.outside / "auth.v2.file").read_text(), self.key))

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.outside.iterdir() if p.name.startswith((".auth", "auth.v2.write")))


FULL = 'dd if=/dev/zero of="$D/filler" bs=4k 2>/dev/null || true'
READ_ONLY = 'mount --bind "$D" "$D" && mount -o remount,ro,bind "$D"'


@needs_mounts
@pytest.mark.parametrize("mount", [FULL, READ_ONLY], ids=["full disk", "read-only"])
def test_a_store_that_cannot_be_written_is_never_spent_and_the_token_is_used_while_valid(
    tmp_path, workos, api, mount
):
    job = Job(tmp_path, workos, api)
    data = login_data(SOON)
    job.login(data)
    before = (job.outside / "auth.v2.file").read_bytes()

    result = job.run(mount, "run")

    assert result.returncode == 0, result.stderr
    assert workos.requests == []  # nothing spent
    assert "cannot renew the Factory login" in result.stderr and "using the current token" in result.stderr
    (call,) = api.calls("GET", USAGE_PATH)
    assert call.headers["authorization"] == f"Bearer {data['access_token']}"
    assert (job.outside / "auth.v2.file").read_bytes() == before
    assert job.leftovers() == []


@needs_mounts
@pytest.mark.parametrize("mount", [FULL, READ_ONLY], ids=["full disk", "read-only"])
def test_an_expired_token_on_a_store_that_cannot_be_written_is_one_clear_line(tmp_path, workos, api, mount):
    job = Job(tmp_path, workos, api)
    job.login(login_data(-HOUR))
    before = (job.outside / "auth.v2.file").read_bytes()

    result = job.run(mount, "run")

    assert result.returncode == 4, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert "cannot renew the Factory login" in line and str(job.store) in line
    assert "No space left on device" in line or "Read-only file system" in line
    assert "login expired" not in result.stderr and "Traceback" not in result.stderr
    assert workos.requests == [] and api.calls() == []
    assert (job.outside / "auth.v2.file").read_bytes() == before


@needs_mounts
def test_a_disk_that_fills_while_workos_answers_still_gets_the_renewed_pair(tmp_path, workos, api):
    job = Job(tmp_path, workos, api)
    job.login(login_data(-HOUR))

    def fill_the_disk():
        # The job's mounts are seen through its /proc/<pid>/root.
        (pid,) = [
            p.pid
            for p in _children()
            if p.cmdline and "alerter" in p.cmdline and p.cmdline.startswith(sys.executable)
        ]
        filler = Path(f"/proc/{pid}/root") / str(job.store).lstrip("/") / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass

    workos.script = [fill_the_disk]
    result = job.run("true", "run")

    assert result.returncode == 0, result.stderr
    assert (job.outside / "filler").stat().st_size > 512 * 1024  # the disk did fill up
    new = workos.issued[0]
    assert job.stored()["refresh_token"] == new["refresh_token"]
    (call,) = api.calls("GET", USAGE_PATH)
    assert call.headers["authorization"] == f"Bearer {new['access_token']}"
    assert job.leftovers() == []


class _Proc:
    def __init__(self, pid: int, cmdline: str) -> None:
        self.pid, self.cmdline = pid, cmdline


def _children() -> list[_Proc]:
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            procs.append(_Proc(int(entry.name), cmdline))
    return procs


# -- a symlinked store is written through the link, as droid does -----------------------


def test_a_symlinked_store_is_written_through_its_link(tmp_path, workos):
    home = tmp_path / ".factory"
    elsewhere = tmp_path / "dotfiles" / "factory"
    key = write_keyfile_store(elsewhere, old := login_data(SOON))
    home.mkdir()
    (home / "auth.v2.file").symlink_to(elsewhere / "auth.v2.file")
    (home / "auth.v2.key").symlink_to(elsewhere / "auth.v2.key")
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 8, renew_reserve_seconds=1
    )

    login = open_login(settings, env={}, key_lookup=no_keyring)

    new = workos.issued[0]
    assert login.bearer() == new["access_token"]
    assert (home / "auth.v2.file").is_symlink()
    assert json.loads(decrypt_envelope((elsewhere / "auth.v2.file").read_text(), key)) == {**old, **new}
    assert sorted(p.name for p in elsewhere.iterdir()) == ["auth.v2.file", "auth.v2.key"]
    assert sorted(p.name for p in home.iterdir()) == ["auth.v2.file", "auth.v2.key"]


@needs_mounts
def test_a_refused_token_on_a_read_only_store_is_one_clear_line(tmp_path, workos, api):
    job = Job(tmp_path, workos, api)
    job.login(login_data(2 * 24 * HOUR))
    api.route("GET", USAGE_PATH, Reply(401, {"error": "unauthorized"}))

    result = job.run(READ_ONLY, "run")

    assert result.returncode == 4, result.stderr
    assert "cannot renew the Factory login" in result.stderr and "Read-only file system" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert workos.requests == []
