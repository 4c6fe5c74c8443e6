"""Typed errors raised at the edges; the CLI turns each into one line and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_UPSTREAM = 4
EXIT_DELIVERY = 5
EXIT_STATE = 6
EXIT_BUSY = 7
# stdout's reader went away (`status | head -1`): what a command that SIGPIPE ended returns.
EXIT_READER_GONE = 141


class AlerterError(Exception):
    """Base class: ``str(err)`` is a one-line message naming the cause and the fix."""

    exit_code = 1


class ConfigError(AlerterError):
    """The config file or the command line is wrong (exit 2)."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, problems: list[str] | None = None, file=None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]
        self.file = file


class AuthError(AlerterError):
    """No usable login, or the login expired (exit 3).

    ``permanent`` is True when only a new ``droid`` login can fix it (for example a
    refresh token that WorkOS rejected); the job then notifies the user once.
    ``dead_refresh`` is the fingerprint of a refresh token WorkOS rejected, so that it is
    not sent again.
    """

    exit_code = EXIT_AUTH

    def __init__(self, message: str, *, permanent: bool = False, dead_refresh: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.dead_refresh = dead_refresh


class UpstreamError(AlerterError):
    """Factory's API (or WorkOS) could not be reached or gave an unusable answer (exit 4)."""

    exit_code = EXIT_UPSTREAM


class DeliveryError(AlerterError):
    """One or more notifications could not be delivered (exit 5)."""

    exit_code = EXIT_DELIVERY


class StateError(AlerterError):
    """The state file, its lock or its directory cannot be used safely or at all (exit 6).

    A symlink or an odd file (FIFO, socket, device, directory) where the state or its lock
    belongs, a directory owned by another user or writable by others, or one the job cannot
    write to. The message names the path and the fix.
    """

    exit_code = EXIT_STATE


class StateBusy(StateError):
    """Another run held the state lock for the whole wait; this run did nothing (exit 7).

    ``holder`` is the process id written in the lock file by the run that holds it, when
    one could be read.
    """

    exit_code = EXIT_BUSY

    def __init__(self, message: str, *, holder: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class AccountsFailed(AlerterError):
    """One or more accounts of ``accounts:`` failed (the others ran as usual).

    ``exit_code`` is the worst of theirs (see :func:`worst_exit_code`); ``failures`` maps
    each failed account's name to its error.
    """

    def __init__(self, message: str, *, exit_code: int, failures: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.failures = dict(failures)


def reason_of(exc: BaseException) -> str:
    """Given what ended a fetch, return the one line kept in the state and told in a
    notification: an AlerterError's own message, else only the kind of the bug; either
    way without any credential this process sent (see :func:`alerter.redact.hide_sent`)."""
    from alerter.redact import hide_sent

    text = str(exc) if isinstance(exc, AlerterError) else f"internal error ({type(exc).__name__})"
    return hide_sent(text)


# Worst first: a state that cannot be kept (alerts may repeat or be lost), a config that
# cannot be used, a login that needs a person, undelivered alerts, an unreachable API,
# another run busy with the state, a bug.
_WORST_FIRST = (EXIT_STATE, EXIT_CONFIG, EXIT_AUTH, EXIT_DELIVERY, EXIT_UPSTREAM, EXIT_BUSY, 1)


def worst_exit_code(codes: list[int]) -> int:
    """Given the exit codes of several accounts' runs, return the worst one (0 when all are 0)."""
    failed = [c for c in codes if c != EXIT_OK]
    if not failed:
        return EXIT_OK
    return min(failed, key=lambda c: _WORST_FIRST.index(c) if c in _WORST_FIRST else len(_WORST_FIRST))
