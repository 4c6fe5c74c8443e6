"""The files the job trusts, its secrets and its output, measured on a source tree.

Runs the job of ``--tree`` (default: this checkout) in child processes against stand-ins
on 127.0.0.1 and reports, per fault, one figure:

- the mode of each directory a run (and `init`) creates under umask 000;
- the seconds a run with a 5 s deadline stays blocked by a FIFO at the config cache and
  at the "said once" marker (bounded by a 20 s timeout: 20 means "still blocked");
- whether a planted cache entry (a symlink, a file open to others, one from an earlier
  release with a duplicated key) is used;
- how many copies of the refresh token reach stderr and state.json when WorkOS echoes it
  in its ``error`` field, and how many of a short secret a config error shows;
- how many lines of `status --json` stdout are not JSON when a request is retried;
- how many runs of three warn about the deprecated keys of fbc5bf8's starter config.

    .venv/bin/python bench/file_faults.py [--tree /path/to/checkout]

Loopback only; about a minute on the new code (the FIFO trials of the old code run
into their timeout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import API_KEY, usage_body  # noqa: E402
from tests.credentials.helpers import HOUR, login_data, start_workos, write_keyfile_store  # noqa: E402
from tests.standins import Reply, StandIn  # noqa: E402

USAGE = "/api/organization/subscription/usage"
TIMEOUT = 20.0
HOMES: list[Path] = []  # removed at the end
EARLIER_STARTER = ROOT / "tests" / "data" / "starter-config-fbc5bf8.yaml"


class Job:
    """One private HOME, a config pointing at the stand-in, the job of ``tree``."""

    def __init__(self, tree: Path, factory: StandIn, extra: str = "") -> None:
        self.tree = tree
        self.home = Path(tempfile.mkdtemp(prefix="file-faults-"))
        HOMES.append(self.home)
        self.config = self.home / "config.yaml"
        self.state = self.home / "state" / "state.json"
        self.config.write_text(
            f"factory:\n  base_url: {factory.url}\n  deadline_seconds: 5\nstate_file: {self.state}\n{extra}"
        )
        self.config.chmod(0o600)
        self.env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(tree),
            "FACTORY_API_KEY": API_KEY,
        }

    def run(
        self, *argv: str, umask: int = -1, config: bool = True
    ) -> tuple[float, subprocess.CompletedProcess | None]:
        """Return (seconds, the finished process), or (TIMEOUT, None) when it is still blocked."""
        command = [sys.executable, "-m", "alerter", *argv] + (
            ["--config", str(self.config)] if config else []
        )
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=self.tree,  # -m puts the working directory first on the path
                env=self.env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                umask=umask,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return TIMEOUT, None
        return time.monotonic() - started, done

    def cache(self) -> Path:
        name = hashlib.sha256(str(self.config.resolve()).encode()).hexdigest()[:16]
        return self.home / ".cache" / "factory-usage-alert" / f"config-{name}.json"


def mode(path: Path) -> str:
    try:
        return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"
    except OSError:
        return "missing"


def umask_modes(tree: Path, factory: StandIn) -> dict:
    job = Job(tree, factory)
    job.run("run", umask=0)
    init = Job(tree, factory)
    init.env["XDG_CONFIG_HOME"] = str(init.home / "conf")
    init.run("init", umask=0, config=False)
    return {
        "~/.cache": mode(job.home / ".cache"),
        "~/.cache/factory-usage-alert": mode(job.cache().parent),
        "cache file": mode(job.cache()),
        "init's config dir": mode(init.home / "conf"),
    }


def fifo_seconds(tree: Path, factory: StandIn, where: str) -> float:
    job = Job(tree, factory, "notify:\n  urls: ['json://u:pw@127.0.0.1:9/x']\n")
    job.config.chmod(0o644)  # so that the exposure marker is read
    job.run("run")
    path = job.cache() if where == "cache" else job.cache().with_suffix(".exposure")
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    seconds, _ = job.run("run")
    return round(seconds, 1)


def planted_cache_used(tree: Path, factory: StandIn, how: str) -> bool:
    elsewhere = StandIn().start()
    elsewhere.route("GET", USAGE, Reply(200, usage_body(1)))
    try:
        job = Job(tree, factory)
        text = job.config.read_text()
        if how == "earlier release":
            text += f"state_file: {job.state}\n"  # a duplicated key the checks refuse
            job.config.write_text(text)
        entry = {
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "config": {"factory": {"base_url": elsewhere.url}, "state_file": str(job.state)},
        }
        if how != "earlier release":
            entry["version"] = _version(tree)
        cache = job.cache()
        cache.parent.mkdir(parents=True, mode=0o700)
        if how == "symlink":
            decoy = job.home / "decoy.json"
            decoy.write_text(json.dumps(entry))
            decoy.chmod(0o600)
            cache.symlink_to(decoy)
        else:
            cache.write_text(json.dumps(entry))
            cache.chmod(0o644 if how == "open to others" else 0o600)
        _, done = job.run("run")
        return bool(elsewhere.calls()) or (
            how == "earlier release" and done is not None and done.returncode == 0
        )
    finally:
        elsewhere.stop()


def _version(tree: Path) -> str:
    text = (tree / "alerter" / "__init__.py").read_text()
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


def workos_echo_leaks(tree: Path, factory: StandIn) -> int:
    workos, stop = start_workos()
    try:
        job = Job(tree, factory)
        del job.env["FACTORY_API_KEY"]
        text = job.config.read_text().replace("factory:\n", f"factory:\n  workos_url: {workos.url}\n", 1)
        job.config.write_text(text)
        token = "Zq9sh0rtToken"
        write_keyfile_store(job.home / ".factory", login_data(-HOUR, refresh_token=token))
        workos.script = [(400, {"error": token, "error_description": f"bad {token}"})]
        _, done = job.run("run")
        seen = (done.stderr + done.stdout) if done else ""
        if job.state.exists():
            seen += job.state.read_text()
        if not workos.requests:
            raise SystemExit("the run never asked WorkOS: the measurement measured nothing")
        return seen.count(token)
    finally:
        stop()


def config_error_leaks(tree: Path, factory: StandIn) -> int:
    job = Job(tree, factory, "healthcheck_url: https:/hc-ping.com/k3yShort\n")
    _, done = job.run("check-config")
    return (done.stderr + done.stdout).count("k3yShort") if done else 0


def status_json_stray_lines(tree: Path) -> int:
    factory = StandIn().start()
    answers = iter([Reply(503, {"error": "busy"}, headers={"Retry-After": "0"}), Reply(200, usage_body(5))])
    factory.route("GET", USAGE, lambda rec: next(answers))
    try:
        job = Job(tree, factory)
        _, done = job.run("status", "--json")
        out = done.stdout if done else ""
        try:
            json.loads(out)
            return 0
        except ValueError:
            return sum(1 for line in out.splitlines() if not line.startswith((" ", "{", "}")))
    finally:
        factory.stop()


def deprecation_warnings(tree: Path, factory: StandIn) -> int:
    job = Job(tree, factory)
    text = EARLIER_STARTER.read_text().replace("factory:\n", f"factory:\n  base_url: {factory.url}\n", 1)
    job.config.write_text(text + f"\nstate_file: {job.state}\n")
    job.config.chmod(0o600)
    runs = 0
    for _ in range(3):
        _, done = job.run("run")
        runs += bool(done and "min_elapsed_share" in done.stderr)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose job is measured")
    tree = parser.parse_args().tree.resolve()
    factory = StandIn().start()
    factory.route("GET", USAGE, Reply(200, usage_body(5)))
    try:
        report = {
            "tree": str(tree),
            "modes under umask 000": umask_modes(tree, factory),
            "seconds a run takes with a FIFO there (deadline 5, cut at 20)": {
                where: fifo_seconds(tree, factory, where) for where in ("cache", "marker")
            },
            "planted cache entry used": {
                how: planted_cache_used(tree, factory, how)
                for how in ("symlink", "open to others", "earlier release")
            },
            "refresh token copies leaked (WorkOS echoes it)": workos_echo_leaks(tree, factory),
            "short secret copies in a config error": config_error_leaks(tree, factory),
            "non-JSON lines on status --json stdout (one retry)": status_json_stray_lines(tree),
            "runs of 3 warning about deprecated keys": deprecation_warnings(tree, factory),
        }
    finally:
        factory.stop()
        for home in HOMES:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
