"""The command line: parse arguments, run a command, turn typed errors into exit codes.

This is the only place that knows about exit codes and the only place that prints an
error; everything else raises a typed error with a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from alerter import __version__, healthcheck, journal
from alerter.config import (
    CONFIG_ENV,
    Config,
    QuietHours,
    build_config,
    default_config_file,
    load_config,
    mask_url,
    parse_yaml,
)
from alerter.errors import EXIT_OK, EXIT_READER_GONE, AlerterError, ConfigError, DeliveryError, StateError
from alerter.meters import Reading
from alerter.notify import send, validate_channels
from alerter.state import load_state
from alerter.statefile import check_usable, state_to_read

PROG = "factory-usage-alert"
log = logging.getLogger("alerter")


def _global_options(parser: argparse.ArgumentParser, after: str = "") -> None:
    """Add --config, -v and -q; ``after`` prefixes the names of the copies after a command."""
    parser.add_argument(
        "--config",
        dest=f"{after}config",
        metavar="PATH",
        help="config file (default: $FACTORY_USAGE_ALERT_CONFIG, "
        "else ~/.config/factory-usage-alert/config.yaml)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"{after}verbose",
        action="count",
        default=0,
        help="more detail (never secrets)",
    )
    parser.add_argument(
        "-q", "--quiet", dest=f"{after}quiet", action="store_true", help="only warnings and errors"
    )


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--dry-run", action="store_true", help="print what would be sent; send and save nothing")
    run.add_argument(
        "--prometheus-textfile",
        metavar="PATH",
        help="after the run, write the meters to this .prom file for node_exporter "
        "(overrides the prometheus_textfile key)",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _backtest_options(backtest: argparse.ArgumentParser) -> None:
    backtest.add_argument(
        "trace", metavar="TRACE", nargs="?", help="the recorded observations ('-' for stdin)"
    )
    backtest.add_argument(
        "--example",
        action="store_true",
        help="replay the sample month shipped with the package instead of TRACE",
    )
    _json_option(backtest)


def _history_options(history: argparse.ArgumentParser) -> None:
    history.add_argument(
        "--jsonl", action="store_true", help="print it as observations that `backtest` replays"
    )


def _test_notify_options(test: argparse.ArgumentParser) -> None:
    test.add_argument("--tag", help="only the channels with this tag")


# Each command: its one-line help, its options, and (backtest) a longer description.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, str | None]] = {
    "run": ("fetch usage, notify about crossed thresholds", _run_options, None),
    "status": ("show the current usage; send nothing", _json_option, None),
    "backtest": (
        "replay recorded usage (or --example, a sample month) and show the notifications it would have sent",
        _backtest_options,
        'Replay TRACE (JSON Lines: {"at": <unix ms>, "usage": {...}}, {"at": <unix ms>, "limits": {...}} '
        'or {"at": <unix ms>, "error": "..."} per line) through the same decision as `run`, with the '
        "clock at each observation; nothing is sent, no network is used, no state is saved.",
    ),
    "history": ("show the usage history kept in the state", _history_options, None),
    "check-config": (
        "validate the config, list every problem, show the configured channels (masked)",
        None,
        None,
    ),
    "test-notify": ("send a test message to every channel (or those with --tag)", _test_notify_options, None),
    "init": ("write a commented starter config (never overwrites one)", None, None),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser for every command, or for ``only`` that one (see ``parse_args``)."""
    # argparse copies everything a command's parser produced, defaults included, over what
    # was parsed before the command: the copies after it keep names of their own, merged
    # in parse_args, so that `--config X run` and `run --config X` mean the same.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after="after_")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Alert before Factory (droid) usage limits or token allowances run out.",
    )
    _global_options(parser)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (summary, options, description) in COMMANDS.items():
        if only is not None and name != only:
            continue
        command = sub.add_parser(name, parents=[common], help=summary, description=description)
        if options is not None:
            options(command)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """Return the command named in the arguments (skipping --config's value), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif arg in ("-h", "--help"):
            return None  # the overview lists every command
        elif arg in COMMANDS:
            return arg
        elif not arg.startswith("-"):
            return None
    return None


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run the command line and return the exit code; ``clock`` gives the wall time."""
    env = os.environ if env is None else env
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse prints its own one-line usage error
        return int(exc.code or 0) if exc.code in (0, None) else 2
    machine = bool(getattr(args, "json", False) or getattr(args, "jsonl", False))
    setup_logging(args.verbose, args.quiet, env, machine=machine)
    args.clock = clock
    return _reader_gone_or(_dispatch(args, env))


def _dispatch(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the parsed command; return its exit code, each typed error mapped to its own."""
    commands = {
        "run": cmd_run,
        "status": cmd_status,
        "backtest": cmd_backtest,
        "history": cmd_history,
        "check-config": cmd_check_config,
        "test-notify": cmd_test_notify,
        "init": cmd_init,
    }
    try:
        return commands[args.command](args, env)
    except AlerterError as exc:
        if args.verbose >= 2:
            log.exception("details")
        _error(f"{PROG}: error: {exc}", env)
        return exc.exit_code
    except KeyboardInterrupt:
        _error(f"{PROG}: interrupted", env)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            _output_lost.set()
            return EXIT_OK  # the reader's choice (`| head`), not a bug: see _reader_gone_or
        if args.verbose >= 2:
            log.exception("unexpected error")
        _error(f"{PROG}: internal error: {type(exc).__name__}; run with -vv for details", env)
        return 1


# Set when a line or a printed result could not be written (from any thread).
_output_lost = threading.Event()


def _stdout_gone() -> bool:
    """Return True when stdout is a pipe (or socket) whose reader has gone: writing to it fails."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no stdout, or not a file: not a pipe's end
        return False


def _reader_gone_or(code: int) -> int:
    """Given the command's exit code, return it, or 141 when it had nothing else to report
    and stdout's reader stopped reading (`status | head -1`).

    What was left to print is dropped without a word, as by any command that SIGPIPE ends:
    the reader chose to stop, so it is not "an error nobody foresaw" (exit 1) and stderr
    stays free for real problems. A run's work (deliveries, the state) is done by then.
    """
    try:
        sys.stdout.flush()  # what is still buffered is output too
    except (OSError, ValueError):
        _output_lost.set()
    if not (_output_lost.is_set() and _stdout_gone()):
        return code  # nothing was lost (a quiet run), or it was lost for another reason
    # Unwritten output would fail again at the final flush: let it go nowhere.
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return code or EXIT_READER_GONE


def _error(line: str, env: Mapping[str, str]) -> None:
    """Print the run's closing error line to stderr, at error priority under journald."""
    from alerter.redact import hide_sent

    line = hide_sent(line)
    if journal.is_journal(sys.stderr, env):
        line = journal.with_priority(line, journal.ERR)
    print(line, file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Given the arguments, return them with the global options merged from either side of
    the command: the last --config given wins, -v counts add up, -q from either side holds.
    Raise SystemExit (argparse's own usage error) for a bad command line.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # Building the parsers of the other commands would cost a quiet run more than its lock.
    args = build_parser(_command_in(argv)).parse_args(argv)
    args.config = args.after_config or args.config
    args.verbose += args.after_verbose
    args.quiet = args.quiet or args.after_quiet
    del args.after_config, args.after_verbose, args.after_quiet
    return args


class _HideSent(logging.Filter):
    """Every log line leaves through here: no credential this process sent goes with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from alerter.redact import hide_sent

        # A malformed call (arguments that do not fit) is the handler's to report, not a crash.
        with contextlib.suppress(Exception):
            record.msg, record.args = hide_sent(record.getMessage()), None
        return True


class _LineHandler(logging.StreamHandler):
    """A stream handler that drops a line its stream no longer takes (a reader that went
    away, a closed descriptor) instead of printing logging's traceback about it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's naming)
        exc = sys.exc_info()[1]
        closed = isinstance(exc, ValueError) and getattr(self.stream, "closed", False)
        if isinstance(exc, OSError) or closed:  # a bad format string is still a bug to show
            _output_lost.set()
            return  # nowhere left to say it; the command's exit code still tells
        super().handleError(record)


class _MaxLevel(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(verbose: int, quiet: bool, env: Mapping[str, str], *, machine: bool = False) -> None:
    """Info and below to stdout, warnings and errors to stderr, one line per event; on a
    stream connected to journald each line starts with its priority (``<4>`` a warning).

    With ``machine`` (``--json``, ``--jsonl``) every line goes to stderr: stdout is the
    JSON alone, so `status --json | jq` works while requests are retried.
    """
    under_systemd = bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))
    fmt = "%(levelname)s: %(message)s" if under_systemd else "%(asctime)s %(levelname)s: %(message)s"
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    out = _LineHandler(sys.stderr if machine else sys.stdout)
    out.addFilter(_MaxLevel(logging.WARNING))
    err = _LineHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.addFilter(_HideSent())
        # journald files a line at the priority its <N> prefix names, else at info.
        kind = journal.JournalFormatter if journal.is_journal(handler.stream, env) else logging.Formatter
        handler.setFormatter(kind(fmt, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("alerter")
    root.handlers[:] = [out, err]
    root.setLevel(level)
    root.propagate = False
    # apprise and urllib3 log URLs that may carry credentials, dbus-python its calls: keep
    # them to errors (notify reads them to say why a channel failed).
    for noisy in ("apprise", "urllib3", "dbus"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


# --- run -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Fetch usage, send the alerts that are due, remember what was delivered."""
    from alerter import job

    textfile = Path(args.prometheus_textfile).expanduser() if args.prometheus_textfile else None
    if textfile is not None and textfile.suffix != ".prom":
        # node_exporter would skip the file without a word: refuse it before fetching anything
        raise ConfigError(
            f"--prometheus-textfile {textfile}: the name must end in .prom "
            "(node_exporter's textfile collector reads only those)"
        )
    config = load_config(args.config, env, remember_parsed=not args.dry_run)
    if config.old_unit_state:
        log.warning(
            "started by a unit from a release before 1.0: its StateDirectory= keeps the state "
            "in %s, apart from %s; copy the units again and daemon-reload (README: Upgrade)",
            config.state_file.parent,
            config.earlier_state_files[0],
        )
    textfile = textfile or config.prometheus_textfile
    if config.accounts:
        from alerter.accounts import run_all

        deadline = time.monotonic() + config.deadline_seconds  # the run's pings; each account has its own
        run_all(config, env, args.clock, deadline, dry_run=args.dry_run, textfile=textfile)
        return EXIT_OK
    # Starts when the run holds the state lock (job.run): waiting for it is not Factory's time.
    run_deadline = job.Deadline(config.deadline_seconds)
    shell = job.Shell(
        fetch=job.fetch_from_factory(config, env, run_deadline, may_renew=not args.dry_run),
        send=job.send_within(run_deadline),
        check_channels=job.check_channels,
        ping=lambda event: healthcheck.ping(config.healthcheck_url, event, run_deadline.at),
        write_metrics=job.metrics_writer(textfile) if textfile else None,
        deadline=run_deadline,
    )
    job.run(config, shell, args.clock, dry_run=args.dry_run)
    return EXIT_OK


# --- status ----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Fetch and show the usage and the job's own health; send nothing, save nothing.

    When usage cannot be read, the job's health is still shown before the error.
    """
    from alerter.credentials import LoginMemory
    from alerter.decide import decide
    from alerter.factory import connect, fetch_reading
    from alerter.status import job_health, job_json, job_lines, render_status, status_json

    config = load_config(args.config, env)
    deadline = time.monotonic() + config.deadline_seconds
    if config.accounts:
        return _status_accounts(args, config, env, deadline)
    read = state_to_read(config.state_file, config.earlier_state_files)
    state = load_state(read, keep_aside=False, aliases=config.channel_aliases())
    now = args.clock()
    job = job_health(state, read, config)  # the file it read: the timer's, until carried over
    try:
        client = connect(config, env, deadline, memory=LoginMemory.load(state.credentials))
        reading: Reading
        reading, _ = fetch_reading(client, config.endpoint, state.endpoint, now)
    except Exception:
        shown = (
            json.dumps({"job": job_json(job)}, indent=2) if args.json else "\n".join(job_lines(job, now)[1:])
        )
        print(shown)
        raise
    forecasts = decide(state, reading, config, now).forecasts
    if args.json:
        shown = {**status_json(reading, client.login.identity, now, forecasts), "job": job_json(job)}
        print(json.dumps(shown, indent=2))
    else:
        print(render_status(reading, client.login.identity, now, forecasts))
        print("\n".join(job_lines(job, now)))
    return EXIT_OK


def _status_accounts(args: argparse.Namespace, config, env: Mapping[str, str], deadline: float) -> int:
    from alerter.accounts import raise_worst, status_all

    shown = status_all(config, env, args.clock(), deadline)
    if args.json:
        print(json.dumps({"accounts": [s.entry for s in shown]}, indent=2))
    else:
        print("\n\n".join("\n".join(s.lines) for s in shown))
    failed = {s.account: s.error for s in shown if s.error is not None}
    if failed:
        raise_worst(failed, len(shown))
    return EXIT_OK


# --- backtest and history -----------------------------------------------------------------------


SAMPLE_MONTH = "sample-month.jsonl"  # shipped in the package: `backtest --example`


def cmd_backtest(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Replay a trace through the evaluation and print what would have been sent."""
    from alerter.backtest import TraceError, read_trace, render, replay_each

    if args.trace is None and not args.example:
        raise ConfigError("backtest: give a TRACE file ('-' for stdin), or --example for the sample month")
    if args.trace is not None and args.example:
        raise ConfigError("backtest: give a TRACE file ('-' for stdin) or --example, not both")
    config = load_config(args.config, env)
    name = "stdin" if args.trace == "-" else args.trace or SAMPLE_MONTH
    try:
        if args.example:
            from importlib.resources import files

            text = files("alerter").joinpath(SAMPLE_MONTH).read_text(encoding="utf-8")
        elif args.trace == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.trace).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise TraceError(f"{name}: cannot read the trace ({why})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{name}: not a text file (expected JSON Lines)") from None
    observations = read_trace(text.split("\n"), name)
    known = {account.name for account in config.accounts}
    for account in dict.fromkeys(o.account for o in observations):
        if account is None and known:
            unnamed = sum(1 for o in observations if o.account is None)
            log.warning(
                "%s: %d observations name no account; replayed with the top-level settings", name, unnamed
            )
        elif account is not None and account not in known:
            log.warning(
                "%s: no account %r in the config; replayed with the top-level settings", name, account
            )
    result = replay_each(observations, config)
    for reason in result.skipped:
        log.warning("%s: %s", name, reason)
    if args.json:
        print(json.dumps({"notifications": [n.as_json() for n in result.notifications]}, indent=2))
    else:
        print(render(result))
    return EXIT_OK


def cmd_history(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print the usage history kept in the state file."""
    from alerter.backtest import export_history

    config = load_config(args.config, env)
    if config.accounts:
        from alerter.accounts import history_all

        kept = history_all(config)
        if args.jsonl:
            for _, _, lines in kept:
                for line in lines:
                    print(json.dumps(line, separators=(",", ":")))
        else:
            for name, read, lines in kept:
                print(f"account {name}: {_observations(len(lines))} in {read}")
        return EXIT_OK
    read = state_to_read(config.state_file, config.earlier_state_files)
    state = load_state(read, keep_aside=False)
    lines = export_history(state)
    if args.jsonl:
        for line in lines:
            print(json.dumps(line, separators=(",", ":")))
        return EXIT_OK
    if not lines:
        print(f"no history yet in {read}: it grows with each `run`")
        return EXIT_OK
    first, last = (datetime.fromtimestamp(x["at"] / 1000).astimezone() for x in (lines[0], lines[-1]))
    print(
        f"{_observations(len(lines))} from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} "
        f"in {read}\n(older ones are thinned; `history --jsonl` prints them for `backtest`)"
    )
    return EXIT_OK


# --- check-config, test-notify, init ------------------------------------------------------


def _config_file(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    explicit = args.config or env.get(CONFIG_ENV)
    return Path(explicit).expanduser() if explicit else default_config_file(env)


def cmd_check_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Validate the config; print every problem (file, key, what is wrong) or a summary.

    Raise StateError, after the summary, when a run could not use the state file.
    """
    file = _config_file(args, env)
    try:
        config = load_config(args.config, env, always_warn=True)
        validate_channels(config.channels, env)
        for account in config.accounts:  # an account's own notify routing
            if account.config.channels != config.channels:
                validate_channels(account.config.channels, env)
    except ConfigError as exc:
        where = str(exc.file or file)
        for problem in exc.problems:
            line = problem if problem.startswith(where) else f"{where}: {problem}"
            print(line, file=sys.stderr)
        count = len(exc.problems)
        print(f"{PROG}: {count} problem{'s' if count != 1 else ''} in the config", file=sys.stderr)
        return exc.exit_code
    print(f"config: {config.path if config.path else f'{file} (not found: built-in defaults)'}: OK")
    try:
        check_usable(config.state_file)
        unusable = None
    except StateError as exc:
        unusable = exc
    if config.accounts:
        from alerter.accounts import describe_login

        print("accounts:")
        for account in config.accounts:
            own = account.config
            try:
                check_usable(own.state_file)
            except StateError as exc:
                unusable = unusable or exc
            print(f"  {account.name}: {describe_login(account, env)}")
            print(f"    state file: {own.state_file}; Factory API: {mask_url(own.base_url)}")
            if own.channels != config.channels:
                print(f"    channels: {', '.join(ch.label for ch in own.channels) or 'stdout'}")
    else:
        print(f"login: {_describe_login(config, env)}")
        print(f"state file: {config.state_file}{' (cannot be used: see below)' if unusable else ''}")
    if config.channels:
        print("channels:")
        for ch in config.channels:
            details = "all severities" if len(ch.severities) == 3 else ", ".join(sorted(ch.severities))
            if ch.tags:
                details += "; tags: " + ", ".join(ch.tags)
            service = _service(ch.url)
            name = service if ch.label == service else f"{ch.label}: {service}"
            print(f"  {name} ({details})")
    else:
        print("channels: none (alerts are printed to stdout)")
    print(f"healthcheck: {healthcheck.masked(config.healthcheck_url) if config.healthcheck_url else 'off'}")
    m = config.monitor
    hours = (
        f", or after {m.hours_without_success:g} h without a successful read"
        if m.hours_without_success
        else ""
    )
    print(f"not-working notice: after {m.failures_before_alert} failed runs in a row{hours}")
    print(f"reset notice: {'on' if m.reset_notice else 'off'}")
    print(f"reminders: {f'every {m.reminder_hours:g} h while at 100%' if m.reminder_hours else 'off'}")
    q = config.quiet_hours
    print(f"quiet hours: {f'{QuietHours.text(q.start)}-{QuietHours.text(q.end)} local time' if q else 'off'}")
    print(f"prometheus textfile: {config.prometheus_textfile or 'off'}")
    if unusable is not None:
        raise unusable  # the config is fine, the place it names for the state is not
    return EXIT_OK


def _describe_login(config: Config, env: Mapping[str, str]) -> str:
    """Say which login a run would use: the API key's variable (masked) or droid's store."""
    from alerter.accounts import describe_droid_home, mask_key
    from alerter.credentials import API_KEY_ENV

    key = env.get(API_KEY_ENV, "").strip()
    if key:
        return f"API key from ${API_KEY_ENV} ({mask_key(key)})"
    return describe_droid_home(config.home, f"run `droid` to log in, or set ${API_KEY_ENV}")


def _service(url: str | None) -> str:
    return mask_url(url) if url else "stdout"


TEST_TITLE = "factory-usage-alert: test notification"


def cmd_test_notify(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Send a clearly marked test message to every channel (or one tag); exit 5 on any failure."""
    import socket

    config = load_config(args.config, env)
    # With accounts, every channel some account delivers to (each once).
    runs = [account.config for account in config.accounts] or [config]
    channels = tuple({ch.url or ch.id: ch for own in runs for ch in own.delivery_channels()}.values())
    if args.tag:
        channels = tuple(ch for ch in channels if args.tag in ch.tags)
        if not channels:
            raise ConfigError(f"no channel has the tag {args.tag!r}; see `notify.channels[].tags`")
    failed = []
    deadline = time.monotonic() + config.deadline_seconds
    for channel in channels:
        body = (
            f"This is a test from {PROG} on {socket.gethostname()}, sent by `{PROG} test-notify`.\n"
            f"If you can read it, the channel {channel.label} works. No action is needed."
        )
        out = sys.stderr if channel.url is None else None  # keep stdout for the report
        ok = send(channel, TEST_TITLE, body, "info", out=out, deadline=deadline)
        print(f"{'ok' if ok else 'FAILED':<6} {channel.label}")
        if not ok:
            failed.append(channel.label)
    if failed:
        raise DeliveryError(f"the test did not reach {', '.join(failed)}; check the URL and the service")
    return EXIT_OK


def _observations(count: int) -> str:
    return f"{count} observation" if count == 1 else f"{count} observations"


def cmd_init(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Write the commented starter config (mode 0600) at the config path; never overwrite."""
    import shlex
    from importlib.resources import files

    file = _config_file(args, env)
    text = files("alerter").joinpath("starter_config.yaml").read_text(encoding="utf-8")
    build_config(parse_yaml(text, None), None, env)  # never write a config the job would refuse
    from alerter import safefile

    try:
        safefile.make_private_dirs(file.parent)  # 0700 at every level, whatever the umask
        fd = safefile.open_regular(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        raise ConfigError(
            f"{file}: a config file is already there; not overwriting it "
            "(check it with `factory-usage-alert check-config`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot create the config file ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {file}")
    # The next commands must read the file just written: name it unless they find it anyway.
    given = f" --config {shlex.quote(str(file))}" if args.config else ""
    print(
        f"next: add your apprise URLs under notify:, then `{PROG}{given} check-config` "
        f"and `{PROG}{given} test-notify`"
    )
    return EXIT_OK


def entry_point() -> None:
    """Run the command and end the process with its exit code (the installed command).

    The job is done when ``main`` returns: the state is saved and fsynced, notifications
    are sent, the textfile is written. What is left is flushing the output, then Python
    tearing down every module it loaded, which costs a quiet run more than its own work
    and buys a one-shot process nothing; and abandoned workers waiting on a peer that never
    answered have nothing left to do. So the output is flushed and the process ends.

    The stop signals go through one gate from the start (``credentials.stopping``), so a
    step that must not be cut in two is protected in whatever thread it runs.
    """
    from alerter import stopping

    stopping.install()
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            code = code or 1
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry_point()
