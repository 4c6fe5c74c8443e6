"""Several accounts in one run (``accounts:``): each account is the one-account job.

Every account has its own :class:`~alerter.config.Config` (built by ``config._accounts``:
its state file ``state-<name>.json``, thresholds, forecast, channels, base URL and login),
and is run by :func:`alerter.job.run` exactly as a single account is: its own lock, state,
ledger, dedup, re-arming, forecasts and "not working" notices. This module only runs them
side by side and gathers what they did:

- accounts are read concurrently (threads: the work is waiting on Factory and the
  channels, each request bounded in :mod:`alerter.http` by the account's deadline, which
  starts when that account holds its own state lock: an account whose lock another run
  holds does not eat into the others' time, nor they into its);
- one account failing never stops the others; the run then raises
  :class:`~alerter.errors.AccountsFailed` carrying the worst exit code;
- the Prometheus textfile is written once, each series labelled with its account;
- the healthcheck is pinged once for the whole run.
"""

from __future__ import annotations

import contextvars
import logging
import shlex
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alerter import healthcheck, job
from alerter.config import Account, Config
from alerter.decide import Decision, Observation
from alerter.errors import AccountsFailed, AlerterError, reason_of, worst_exit_code
from alerter.meters import Reading
from alerter.state import State
from alerter.stopping import leave_signals_to_the_main_thread

log = logging.getLogger(__name__)

# Threads, not processes: an account's run waits on the network almost all the time.
MAX_WORKERS = 32

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What one account's part of a run came to: its decision, or the error it ended with."""

    account: str
    decision: Decision | None = None
    error: BaseException | None = None


# The account being run, in this thread's context (a worker thread the job starts for
# it copies the context, so its log lines are named too: see ``http.call_within``).
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("account", default=None)


class _NameTheAccount(logging.Filter):
    """Starts each log line written while an account is being run with ``[name]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = _current.get()
        if name is not None and not getattr(record, "_account_named", False):
            record.msg = f"[{name}] {record.msg}"
            record._account_named = True
        return True


def each_account(accounts: tuple[Account, ...], work: Callable[[Account], T]) -> list[T | BaseException]:
    """Given the accounts and the work for one, return each one's result (or the exception
    it raised), in the accounts' order; the work runs concurrently, its log lines named."""
    naming = _NameTheAccount()
    handlers = [*logging.getLogger("alerter").handlers, *logging.getLogger().handlers]
    for handler in handlers:
        handler.addFilter(naming)

    def one(account: Account) -> T | BaseException:
        named = _current.set(account.name)
        try:
            return work(account)
        except BaseException as exc:  # reported with the others; never stops them
            return exc
        finally:
            _current.reset(named)

    try:
        if len(accounts) == 1:
            return [one(accounts[0])]
        workers = min(MAX_WORKERS, len(accounts))
        with ThreadPoolExecutor(workers, initializer=leave_signals_to_the_main_thread) as pool:
            return list(pool.map(one, accounts))
    finally:
        for handler in handlers:
            handler.removeFilter(naming)


def run_all(
    config: Config,
    env: Mapping[str, str],
    clock: Callable[[], float],
    deadline: float,
    *,
    dry_run: bool = False,
    textfile: Path | None = None,
) -> list[Outcome]:
    """Run the job for every account of ``config.accounts``; ``deadline`` (monotonic)
    bounds the run's healthcheck pings, each account has its own deadline from when it
    holds its own state lock (:class:`alerter.job.Deadline`).

    Return each account's Outcome. Raise AccountsFailed (after the others ran, the
    textfile was written and the healthcheck pinged) when any account failed.
    """
    from alerter import metrics

    parts: dict[str, metrics.AccountMetrics] = {}
    lock = threading.Lock()

    def collect(name: str) -> Callable[[Observation, Decision, State], None]:
        def keep(observation: Observation, decision: Decision, state: State) -> None:
            reading = observation if isinstance(observation, Reading) else None
            projections = {m: metrics.projection(f, decision.now) for m, f in decision.forecasts.items()}
            with lock:
                parts[name] = metrics.AccountMetrics(name, reading, state.health, decision.now, projections)

        return keep

    def work(account: Account) -> Decision:
        own = account.config
        # Each account waits for its own state lock; its deadline starts once it holds it.
        own_deadline = job.Deadline(own.deadline_seconds)
        shell = job.Shell(
            fetch=job.fetch_from_factory(own, env, own_deadline, may_renew=not dry_run),
            send=job.send_within(own_deadline),
            check_channels=job.check_channels,
            write_metrics=collect(account.name) if textfile else None,
            deadline=own_deadline,
        )
        return job.run(own, shell, clock, dry_run=dry_run)

    if not dry_run:
        healthcheck.ping(config.healthcheck_url, "start", deadline)
    results = each_account(config.accounts, work)
    outcomes = [
        Outcome(a.name, error=r) if isinstance(r, BaseException) else Outcome(a.name, decision=r)
        for a, r in zip(config.accounts, results, strict=True)
    ]
    if textfile is not None and parts:
        try:
            ordered = [parts[a.name] for a in config.accounts if a.name in parts]
            metrics.write_textfile(textfile, metrics.render_accounts(ordered))
        except (OSError, AlerterError) as exc:
            log.warning("could not write the Prometheus textfile %s (%s)", textfile, exc)
    failed = {o.account: o.error for o in outcomes if o.error is not None}
    if not dry_run:
        healthcheck.ping(config.healthcheck_url, "fail" if failed else "success", deadline)
    if failed:
        raise_worst(failed, len(outcomes))
    return outcomes


def raise_worst(failed: Mapping[str, BaseException], total: int) -> None:
    """Given the errors of the accounts that failed, raise AccountsFailed with the worst
    exit code and one line naming each account and its error. A KeyboardInterrupt is
    raised as it is."""
    for error in failed.values():
        if isinstance(error, KeyboardInterrupt):
            raise error
    codes = [e.exit_code if isinstance(e, AlerterError) else 1 for e in failed.values()]
    reasons = "; ".join(f"{name}: {reason_of(e)}" for name, e in failed.items())
    count = f"{len(failed)} of {total} accounts" if total > 1 else "the account"
    raise AccountsFailed(
        f"{count} failed ({reasons})", exit_code=worst_exit_code(codes), failures=dict(failed)
    )


# --- status, history and check-config for every account -------------------------------------


@dataclass(frozen=True)
class Shown:
    """One account's part of ``status``: its lines and its JSON entry, and its error if any."""

    account: str
    lines: list[str]
    entry: dict
    error: BaseException | None = None


def status_all(config: Config, env: Mapping[str, str], now: float, deadline: float) -> list[Shown]:
    """Given the config with accounts, read every account's usage concurrently; return what
    each shows (its health first; its usage, or the error that kept it from being read).
    Nothing is sent or saved."""
    from alerter.credentials import LoginMemory
    from alerter.decide import decide
    from alerter.factory import connect, fetch_reading
    from alerter.state import load_state
    from alerter.statefile import state_to_read
    from alerter.status import job_health, job_json, job_lines, render_status, status_json

    def show(account: Account) -> Shown:
        own = account.config
        read = state_to_read(own.state_file, own.earlier_state_files)
        state = load_state(read, keep_aside=False, aliases=own.channel_aliases())
        health = job_health(state, read, own)
        head = f"account {account.name}"
        try:
            client = connect(own, env, deadline, memory=LoginMemory.load(state.credentials))
            reading, _ = fetch_reading(client, own.endpoint, state.endpoint, now)
        except Exception as exc:  # shown with the others; the run's outcome is the worst
            why = reason_of(exc)
            lines = [head, *job_lines(health, now)[1:], f"error: {why}"]
            return Shown(
                account.name, lines, {"account": account.name, "error": why, "job": job_json(health)}, exc
            )
        forecasts = decide(state, reading, own, now).forecasts
        entry = {
            "account": account.name,
            **status_json(reading, client.login.identity, now, forecasts),
            "job": job_json(health),
        }
        lines = [head, render_status(reading, client.login.identity, now, forecasts), *job_lines(health, now)]
        return Shown(account.name, lines, entry)

    return [
        r if isinstance(r, Shown) else _crashed(a, r)
        for a, r in zip(config.accounts, each_account(config.accounts, show), strict=True)
    ]


def _crashed(account: Account, error: BaseException) -> Shown:
    why = reason_of(error)
    return Shown(
        account.name,
        [f"account {account.name}", f"error: {why}"],
        {"account": account.name, "error": why},
        error,
    )


def history_all(config: Config) -> list[tuple[str, Path, list[dict]]]:
    """Given the config with accounts, return (account, state file read, its history lines)
    for each account, each line naming its account."""
    from alerter.backtest import export_history
    from alerter.state import load_state
    from alerter.statefile import state_to_read

    result = []
    for account in config.accounts:
        own = account.config
        read = state_to_read(own.state_file, own.earlier_state_files)
        lines = [
            {"account": account.name, **line} for line in export_history(load_state(read, keep_aside=False))
        ]
        result.append((account.name, read, lines))
    return result


def describe_login(account: Account, env: Mapping[str, str]) -> str:
    """Given an account and the environment, return which login it would use, masked:
    ``API key from $WORK_KEY (fk-…abcd)`` or ``droid's login in /home/x/.factory (...)``."""
    if account.api_key_env is not None:
        key = env.get(account.api_key_env, "").strip()
        shown = mask_key(key) if key else "not set"
        return f"API key from ${account.api_key_env} ({shown})"
    home = account.config.home
    log_in = f"log in there with `FACTORY_HOME_OVERRIDE={shlex.quote(str(home.parent))} droid`"
    return describe_droid_home(home, log_in)


def describe_droid_home(home: Path, how_to_log_in: str) -> str:
    """Given a droid home, return what login the job would find there (file names only)."""
    from alerter.credentials import store

    files = (
        store.KEYRING_FILE,
        store.LOGIN_KEYCHAIN_FILE,
        store.KEYFILE_FILE,
        store.LEGACY_FILE,
        store.PLAIN_FILE,
    )
    try:
        if not home.exists():
            return f"droid's login in {home} (no such directory; {how_to_log_in})"
        if not home.is_dir():
            return f"droid's login in {home} (not a directory)"
        found = [name for name in files if (home / name).exists()]
    except OSError as exc:
        return f"droid's login in {home} (cannot be looked into: {store.describe(exc)})"
    what = f"found {', '.join(found)}" if found else f"no login found there; {how_to_log_in}"
    return f"droid's login in {home} ({what})"


def mask_key(key: str) -> str:
    """Given an API key, return only what tells it apart from another: its prefix and last 4."""
    if len(key) < 12:
        return "set, too short to be a key"
    prefix = "fk-" if key.startswith("fk-") else ""
    return f"{prefix}…{key[-4:]}"
