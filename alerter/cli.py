"""The command line: parse arguments, run a command, turn typed errors into exit codes.

This is the only place that knows about exit codes and the only place that prints an
error; everything else raises a typed error with a one-line message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from alerter import __version__
from alerter.config import EU_BASE_URL, Config, load_config
from alerter.credentials import CredentialSettings, Login, open_login
from alerter.errors import EXIT_OK, AlerterError, AuthError, DeliveryError
from alerter.factory import FactoryClient, fetch_reading
from alerter.meters import Reading
from alerter.notify import channels_digest, send, validate_channels
from alerter.rules import Alert, evaluate, login_expired_alert, record_delivery
from alerter.state import StateBusy, load_state, locked, save_state
from alerter.status import render_status, status_json

PROG = "factory-usage-alert"
log = logging.getLogger("alerter")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $FACTORY_USAGE_ALERT_CONFIG, "
        "else ~/.config/factory-usage-alert/config.yaml)",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="more detail (never secrets)")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Alert before Factory (droid) usage limits or token allowances run out.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", parents=[common], help="fetch usage, notify about crossed thresholds")
    run.add_argument("--dry-run", action="store_true", help="print what would be sent; send and save nothing")

    status = sub.add_parser("status", parents=[common], help="show the current usage; send nothing")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run the command line and return the exit code; ``clock`` gives the wall time."""
    env = os.environ if env is None else env
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own one-line usage error
        return int(exc.code or 0) if exc.code in (0, None) else 2
    setup_logging(args.verbose, args.quiet, env)
    args.clock = clock
    try:
        if args.command == "run":
            return cmd_run(args, env)
        if args.command == "status":
            return cmd_status(args, env)
        raise AssertionError(args.command)
    except StateBusy as exc:
        log.warning("%s", exc)
        return EXIT_OK
    except AlerterError as exc:
        if args.verbose >= 2:
            log.exception("details")
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if args.verbose:
            log.exception("unexpected error")
        print(f"{PROG}: internal error: {type(exc).__name__}; run with -v for details", file=sys.stderr)
        return 1


class _MaxLevel(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(verbose: int, quiet: bool, env: Mapping[str, str]) -> None:
    """Info and below to stdout, warnings and errors to stderr, one line per event."""
    under_systemd = bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))
    fmt = "%(levelname)s: %(message)s" if under_systemd else "%(asctime)s %(levelname)s: %(message)s"
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_MaxLevel(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("alerter")
    root.handlers[:] = [out, err]
    root.setLevel(level)
    root.propagate = False
    # apprise and urllib3 log URLs that may carry credentials: keep them to errors.
    for noisy in ("apprise", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


# --- shared steps -------------------------------------------------------------------------


def connect(config: Config, env: Mapping[str, str], deadline: float) -> FactoryClient:
    """Given the config, return a Factory client with the login that was found."""
    login: Login = open_login(
        CredentialSettings(
            home=config.home,
            workos_url=config.workos_url,
            refresh_margin_seconds=config.refresh_margin_hours * 3600,
            timeout_seconds=config.timeout_seconds,
            ca_bundle=config.ca_bundle,
            deadline=deadline,
        ),
        env,
    )
    base_url = config.base_url
    if not config.base_url_configured and login.identity.region == "eu":
        base_url = EU_BASE_URL
    log.debug("login from %s; asking %s", login.identity.source, base_url)
    return FactoryClient(
        base_url, login, timeout=config.timeout_seconds, deadline=deadline, ca_bundle=config.ca_bundle
    )


# --- run -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Fetch usage, send the alerts that are due, remember what was delivered."""
    config = load_config(args.config, env)
    started = time.monotonic()
    deadline = started + config.deadline_seconds
    if args.dry_run:
        state = load_state(config.state_file, keep_aside=False)
        return _run_once(config, state, env, deadline, args.clock(), dry_run=True)[0]
    with locked(config.state_file, timeout=config.deadline_seconds):
        state = load_state(config.state_file)
        code, new_state = _run_once(config, state, env, deadline, args.clock(), dry_run=False)
        if new_state != state:
            save_state(config.state_file, new_state)
    return code


def _run_once(
    config: Config, state: dict, env: Mapping[str, str], deadline: float, now: float, dry_run: bool
) -> tuple[int, dict]:
    try:
        client = connect(config, env, deadline)
        reading, memory = fetch_reading(client, config.source, state.get("source", {}), now)
    except AuthError as exc:
        if exc.permanent:
            alert, state = login_expired_alert(state, config)
            if alert is not None:
                state, _ = _deliver([alert], state, config, dry_run)
            if not dry_run:
                save_state(config.state_file, state)
        raise
    state = dict(state, source=memory)
    log.info(
        "usage from %s: %s",
        "billing/limits" if reading.source == "limits" else "subscription/usage",
        ", ".join(f"{m.id} {m.percent:.1f}%" for m in reading.meters if m.active) or "no meters",
    )
    _check_channels(config, state, dry_run)
    alerts, state = evaluate(reading, state, config, now)
    state, failed = _deliver(alerts, state, config, dry_run)
    if failed:
        labels = ", ".join(sorted(failed))
        if not dry_run:
            save_state(config.state_file, state)
        raise DeliveryError(
            f"could not deliver to {labels}; it will be retried on the next run "
            "(try the channel with `test-notify`)"
        )
    return EXIT_OK, state


def _check_channels(config: Config, state: dict, dry_run: bool) -> None:
    """Parse the apprise URLs once per config change (apprise is slow to import)."""
    digest = channels_digest(config.channels)
    if not config.channels or (state.get("channels_checked") == digest and not dry_run):
        return
    validate_channels(config.channels)
    state["channels_checked"] = digest


def _deliver(alerts: list[Alert], state: dict, config: Config, dry_run: bool) -> tuple[dict, set[str]]:
    channels = {ch.id: ch for ch in config.delivery_channels()}
    failed: set[str] = set()
    for alert in alerts:
        if dry_run:
            names = ", ".join(channels[c].label for c in alert.channels if c in channels)
            print(f"[dry-run] would send ({alert.severity}) to {names}:\n{alert.title}\n{alert.body}\n")
            continue
        for channel_id in alert.channels:
            channel = channels.get(channel_id)
            if channel is None:
                continue
            if send(channel, alert.title, alert.body, alert.severity):
                state = record_delivery(state, alert, channel_id)
                log.info("sent %s alert for %s to %s", alert.kind, alert.meter_id, channel.label)
            else:
                failed.add(channel.label)
    return state, failed


# --- status ----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Fetch and show the usage; send nothing, save nothing."""
    config = load_config(args.config, env)
    deadline = time.monotonic() + config.deadline_seconds
    state = load_state(config.state_file, keep_aside=False)
    now = args.clock()
    client = connect(config, env, deadline)
    reading: Reading
    reading, _ = fetch_reading(client, config.source, state.get("source", {}), now)
    if args.json:
        import json

        print(json.dumps(status_json(reading, client.login.identity, now), indent=2))
    else:
        print(render_status(reading, client.login.identity, now))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
