"""Every file the job trusts outside droid's store (the state, its lock, the parsed-config
cache, the "said once" markers, the Prometheus textfile) is opened by one opener: private
whatever the umask, regular files only, no symlink followed, never blocking.

The runs that might hang are real subprocesses bounded by a timeout, so a hang fails the
test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerter import __version__
from alerter.config import exposure_mark_file, parsed_cache_file
from alerter.statefile import lock_path
from tests.conftest import python_path, same_clock, usage_body
from tests.standins import StandIn

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
# Far above a run's own deadline (5 s below): only a run that blocks reaches it.
HANG = 60


def run_job(app, *argv: str, umask: int | None = None) -> subprocess.CompletedProcess:
    """Run the job as the installed command would, in a child process; fail on a hang."""
    env = {**app.env, **same_clock(), "PYTHONPATH": python_path(str(ROOT))}
    command = [sys.executable, "-m", "alerter", *argv, "--config", str(app.config_path)]
    try:
        return subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG,
            check=False,
            umask=-1 if umask is None else umask,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(argv)}` hung (still running after {HANG} s, its deadline 5 s)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def job(app, receiver):
    """A config readable by others that names a channel with a password (so the exposure
    marker is read and written), a textfile, a run deadline of 5 s."""
    url = receiver.apprise_url.replace("json://", "json://user:secret@")
    app.write_config(
        {
            "factory": {"deadline_seconds": 5},
            "notify": {"urls": [url]},
            "prometheus_textfile": str(app.home / "metrics" / "usage.prom"),
        }
    )
    (app.home / "metrics").mkdir()
    app.config_path.chmod(0o644)
    app.serve_usage(usage_body(M))
    return app


def test_under_umask_000_every_directory_and_file_the_job_creates_is_private(job):
    job.env.pop("XDG_CACHE_HOME", None)
    result = run_job(job, "run", umask=0)
    assert result.returncode == 0, result.stderr
    cache = parsed_cache_file(job.env, job.config_path)
    assert cache.is_file()
    for directory in (job.home / ".cache", cache.parent, job.state_path.parent):
        assert mode(directory) == 0o700, directory
    for file in (
        cache,
        exposure_mark_file(job.env, job.config_path),
        job.state_path,
        lock_path(job.state_path),
    ):
        assert mode(file) == 0o600, file


def test_init_under_umask_000_makes_the_config_directories_private(app):
    app.env["XDG_CONFIG_HOME"] = str(app.home / "conf")
    env = {**app.env, **same_clock(), "PYTHONPATH": python_path(str(ROOT))}
    result = subprocess.run(
        [sys.executable, "-m", "alerter", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
        umask=0,
    )
    assert result.returncode == 0, result.stderr
    written = next((app.home / "conf").rglob("*.yaml"))
    assert mode(app.home / "conf") == 0o700 and mode(written.parent) == 0o700
    assert mode(written) == 0o600


def _paths(app) -> dict[str, Path]:
    return {
        "state": app.state_path,
        "lock": lock_path(app.state_path),
        "cache": parsed_cache_file(app.env, app.config_path),
        "marker": exposure_mark_file(app.env, app.config_path),
        "textfile": app.home / "metrics" / "usage.prom",
    }


# What a run does when something odd is at the path: the state and its lock are refused
# with an error naming them (exit 6); the cache and the marker are ignored (the run goes
# on, parsing again); the textfile is replaced.
REFUSED = {"state", "lock"}


@pytest.mark.parametrize("where", ["state", "lock", "cache", "marker", "textfile"])
def test_a_fifo_at_any_path_the_job_opens_never_blocks_a_run(job, where):
    assert run_job(job, "run").returncode == 0  # every path exists once
    path = _paths(job)[where]
    path.unlink()
    os.mkfifo(path, 0o600)
    result = run_job(job, "run")
    if where in REFUSED:
        assert result.returncode != 0 and "FIFO" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("where", ["state", "lock", "cache", "marker", "textfile"])
def test_a_symlink_at_any_path_the_job_opens_is_not_followed(job, where):
    assert run_job(job, "run").returncode == 0
    path = _paths(job)[where]
    target = job.home / f"elsewhere-{where}"
    target.write_bytes(path.read_bytes())
    target.chmod(0o600)
    path.unlink()
    path.symlink_to(target)
    before = target.read_bytes()
    result = run_job(job, "run")
    if where in REFUSED:
        assert result.returncode != 0 and "symbolic link" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
    assert target.read_bytes() == before  # never written through the link


def _plant(cache: Path, config: dict, *, text: str, version: str | None = __version__) -> None:
    """Write a cache entry that claims to be the parsed form of ``text``."""
    import hashlib

    entry = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "config": config}
    if version is not None:
        entry["version"] = version
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(entry))


@pytest.fixture
def elsewhere():
    server = StandIn().start()
    yield server
    server.stop()


@pytest.mark.parametrize("how", ["symlink", "cache file open to others", "cache directory open to others"])
def test_a_planted_cache_entry_is_ignored(job, elsewhere, how):
    """Another user who can write where the cache lives must not redirect the token."""
    text = job.config_path.read_text()
    cache = parsed_cache_file(job.env, job.config_path)
    planted = yaml.safe_load(text)
    planted["factory"] = {**planted["factory"], "base_url": elsewhere.url}
    if how == "symlink":
        decoy = job.home / "decoy.json"
        _plant(decoy, planted, text=text)
        decoy.chmod(0o600)
        cache.parent.mkdir(parents=True, mode=0o700)
        cache.symlink_to(decoy)
    else:
        _plant(cache, planted, text=text)
        cache.chmod(0o644 if how == "cache file open to others" else 0o600)
        cache.parent.chmod(0o777 if how == "cache directory open to others" else 0o700)
    result = run_job(job, "run")
    assert result.returncode == 0, result.stderr
    assert elsewhere.calls() == [], "the planted config was used"
    assert job.factory.calls(), "the job's own config was not used"


def test_a_cache_entry_written_by_an_earlier_release_is_parsed_again(job):
    """A check added since (here: a duplicated key) must not be skipped by an old cache."""
    text = job.config_path.read_text()
    data = yaml.safe_load(text)
    duplicated = text + f"state_file: {job.state_path}\n"
    job.config_path.write_text(duplicated)
    _plant(parsed_cache_file(job.env, job.config_path), data, text=duplicated, version=None)
    result = run_job(job, "run")
    assert result.returncode == 2 and "state_file" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another uid")
def test_a_cache_directory_another_user_made_in_a_shared_cache_home_is_not_used(job, elsewhere):
    """A shared $XDG_CACHE_HOME: another user made factory-usage-alert/ there first, 0700."""
    shared = job.home / "shared-cache"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    job.env["XDG_CACHE_HOME"] = str(shared)
    text = job.config_path.read_text()
    planted = yaml.safe_load(text)
    planted["factory"] = {**planted["factory"], "base_url": elsewhere.url}
    cache = parsed_cache_file(job.env, job.config_path)
    _plant(cache, planted, text=text)
    cache.chmod(0o600)
    cache.parent.chmod(0o700)
    os.chown(cache, 65534, 65534)
    os.chown(cache.parent, 65534, 65534)
    result = run_job(job, "run")
    assert result.returncode == 0, result.stderr
    assert elsewhere.calls() == [], "another user's cache was used"
    assert job.factory.calls()
