"""Renew a stored droid login with WorkOS without ever logging droid out.

WorkOS refresh tokens are single-use: the moment WorkOS receives a renewal request, the
old refresh token is dead, and the pair it answers with is the only live login. So:

- droid's write lock is never held while waiting on the network (droid waits only 12 s
  for it and would then lose its own save): WorkOS is asked outside the lock, and the lock
  is taken only to compare and write, as droid does;
- before the token is spent, room for the new store is reserved beside it and the lock's
  own directory is prepared: a read-only or full disk stops the renewal while the old
  token still works;
- the run's deadline may keep a renewal from starting (one is started only when enough
  of the deadline is left for a slow answer), never cut one short: once the refresh token
  was sent, the answer is awaited, and installed, up to ``ANSWER_CAP_SECONDS`` past the
  deadline; a stop signal (SIGTERM, SIGINT, SIGHUP), in whatever thread the renewal
  runs, waits until the new pair is installed;
- the answer is staged on disk at once, then installed only if the store still holds the
  spent token (else droid renewed meanwhile, and droid's pair stays); a run killed
  between the two leaves the staged pair for the next run (see ``writeback``);
- a WorkOS rejection is proof that the login ended only when no renewal may be in flight
  elsewhere: droid renews outside its lock and saves only once WorkOS answered it, so
  while droid's (or another run's) lock directories are in use, droid's store changed
  since it was read, or the stored access token is still valid, a rejection is a
  transient failure (the next run reads droid's new pair), never "log in again".
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from alerter import http
from alerter.credentials import lock, writeback
from alerter.credentials.identity import CredentialSettings, LoginMemory, fingerprint, token_expiry
from alerter.credentials.store import StoredLogin, describe, encode, read_store
from alerter.errors import AuthError, UpstreamError
from alerter.redact import redact
from alerter.stopping import stop_deferred

log = logging.getLogger(__name__)

# droid's production WorkOS client id (droid 0.225.2).
CLIENT_ID = "client_01HNM792M5G5G1A2THWPXKFMXB"
REFRESH_BUDGET_SECONDS = 30.0  # when the run gives no deadline
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# droid retries its renewal 3 times 500 ms apart, then waits up to 12 s for its lock.
DROID_SAVE_WAIT_SECONDS = 5.0
DROID_SAVE_POLL_SECONDS = 0.1
MAX_ANSWER_BYTES = 64 * 1024  # a token pair and a user record: a few KB
# The hard cap on a renewal in flight, past the run's deadline. WorkOS spends the refresh
# token when the request arrives, so its answer is the only live login: abandoning it
# logs droid out, which is worse than a late run. WorkOS answers in well under a second,
# a slow network in seconds; 2 minutes is far beyond any answer a user will meet, and
# still ends a hung exchange. The systemd units leave room for it (TimeoutStartSec and
# TimeoutStopSec, see systemd/): a timer's stop never SIGKILLs an exchange before this.
ANSWER_CAP_SECONDS = 120.0
_SAFE_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class TokenPair:
    """A renewed access token and the refresh token that replaces the one just spent."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


class TransientRefreshError(Exception):
    """WorkOS could not be reached or asked us to come back later; worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RefreshRejected(Exception):
    """WorkOS rejected the refresh token (a 4xx other than 429)."""


def request_new_tokens(
    workos_url: str,
    refresh_token: str,
    deadline: float,
    ca_bundle: str | None = None,
    keep: Callable[[TokenPair], None] | None = None,
    answer_by: float | None = None,
) -> TokenPair:
    """Given a refresh token, return the pair WorkOS issues for it (one attempt).

    ``keep(pair)`` runs the moment the pair is read, before this returns: WorkOS has
    spent the old token, so the caller saves the pair there rather than after.

    WorkOS must be reached by ``deadline`` (monotonic); once the request may have been
    sent, the answer is awaited until ``answer_by`` (default: ``ANSWER_CAP_SECONDS`` past
    ``deadline``), however slowly it comes: giving up on it earlier would lose the pair
    WorkOS has already rotated to. Send exactly what droid sends. Raise RefreshRejected
    (4xx other than 429), TransientRefreshError on network trouble, 5xx, 429, a missing
    answer or an unusable one.
    """
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID}
    url = workos_url.rstrip("/") + "/authenticate"
    try:
        # The secret travels in the form body only, never in the URL that errors may quote.
        # Never follow a redirect: it would re-send the refresh token somewhere else.
        answer = http.request(
            "POST",
            url,
            peer="WorkOS",
            deadline=deadline,
            answer_by=deadline + ANSWER_CAP_SECONDS if answer_by is None else answer_by,
            data=form,
            headers={"Accept": "application/json"},
            verify=ca_bundle or True,
            max_bytes=MAX_ANSWER_BYTES,
        )
    except http.PeerTimeout:
        raise TransientRefreshError("WorkOS did not answer in time") from None
    except http.AnswerTooLarge as exc:
        raise TransientRefreshError(f"WorkOS gave an unusable answer ({exc})") from None
    except http.PeerError as exc:
        raise TransientRefreshError(f"cannot reach WorkOS ({exc})") from None
    status = answer.status
    if status == 429 or status >= 500:
        raise TransientRefreshError(f"WorkOS answered HTTP {status}", http.retry_after(answer))
    if 400 <= status < 500:
        raise RefreshRejected(f"WorkOS rejected the refresh token (HTTP {status}{_error_code(answer)})")
    if status != 200:
        raise TransientRefreshError(f"WorkOS answered HTTP {status}")
    try:
        body = answer.json()
    except ValueError:
        body = None
    access = body.get("access_token") if isinstance(body, dict) else None
    refresh = body.get("refresh_token") if isinstance(body, dict) else None
    if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
        raise TransientRefreshError("WorkOS answered without a token pair")
    pair = TokenPair(access, refresh)
    if keep is not None:
        keep(pair)
    return pair


def renew(stored: StoredLogin, settings: CredentialSettings, *, token_refused: bool = False) -> StoredLogin:
    """Given a login read from droid's store, return the renewed login now stored there.

    When droid rotated the tokens since ``stored`` was read, return droid's login without
    calling WorkOS. ``token_refused``: Factory refused the stored access token, so it is
    no sign that the login lives. Raise AuthError (``permanent`` when only a new droid
    login helps; ``dead_refresh`` then names the rejected token) or UpstreamError when
    droid's store cannot be replaced (nothing was spent), WorkOS stayed unreachable or
    rejected a token another renewal may have spent (see :func:`_renewal_elsewhere`),
    or too little of the deadline was left to ask it safely.
    """
    deadline = settings.deadline
    if deadline is None:
        deadline = time.monotonic() + REFRESH_BUDGET_SECONDS
    spent = stored.refresh_token
    if not spent:
        raise AuthError(
            f"Factory login expired: {stored.path} holds no refresh token; run `droid` to log in again",
            permanent=True,
        )
    refuse_known_dead(stored, settings.memory)
    try:
        reservation = writeback.reserve(stored)
    except writeback.StoreNotWritable as exc:
        raise UpstreamError(f"cannot renew the Factory login: {exc.strerror}") from None
    try:
        ticket = lock.prepare(stored.path.parent)
    except OSError as exc:
        reservation.release()
        raise UpstreamError(
            f"cannot renew the Factory login: cannot write in {stored.path.parent}: {describe(exc)}"
        ) from None
    try:
        return _renew_prepared(stored, settings, deadline, reservation, ticket, token_refused)
    finally:
        reservation.release()
        lock.discard(ticket)


def _renew_prepared(
    stored: StoredLogin,
    settings: CredentialSettings,
    deadline: float,
    reservation: writeback.Reservation,
    ticket: lock.Ticket,
    token_refused: bool,
) -> StoredLogin:
    # The deadline keeps a renewal from starting; one whose request was sent is seen
    # through to an installed pair until this hard cap.
    cap = deadline + ANSWER_CAP_SECONDS
    attempts = 0
    while True:
        if deadline - time.monotonic() < settings.renew_reserve_seconds:
            raise UpstreamError(
                "cannot renew the Factory login: too little of the run's deadline is left to wait "
                "for WorkOS safely; will try again next run"
            )
        seen = _signature(stored)
        current = read_store(stored.path, stored.codec)
        if current.refresh_token != stored.refresh_token:
            log.info("droid renewed its login meanwhile; using droid's tokens from %s", current.path)
            return current
        attempts += 1
        staged: list[Path | None] = []
        with stop_deferred("the renewal"):
            try:
                pair = request_new_tokens(
                    settings.workos_url,
                    stored.refresh_token,
                    deadline,
                    settings.ca_bundle,
                    # Bound now: the pair is staged before request_new_tokens returns.
                    keep=lambda pair, staged=staged, current=current: staged.append(
                        _stage(stored, current, pair, reservation)
                    ),
                    answer_by=cap,
                )
            except TransientRefreshError as exc:
                problem, retry_after = str(exc), exc.retry_after
            except RefreshRejected as exc:
                droids = _await_droid_save(stored, deadline)
                if droids is not None:
                    log.info("droid renewed its login meanwhile; using droid's tokens from %s", droids.path)
                    return droids
                elsewhere = _renewal_elsewhere(stored, current, seen, token_refused)
                if elsewhere is not None:
                    raise UpstreamError(
                        f"cannot renew the Factory login yet: {exc}, but {elsewhere}, so it may be "
                        "droid's renewal in flight; will try again next run"
                    ) from None
                raise _login_ended(stored, str(exc)) from None
            else:
                return _install(stored, current, pair, staged[0] if staged else None, cap, ticket)
        delay = max(BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1], retry_after or 0)
        log.debug("renewing the Factory login failed (%s); attempt %d", problem, attempts)
        if time.monotonic() + delay + settings.renew_reserve_seconds >= deadline:
            raise UpstreamError(
                f"cannot renew the Factory login: {problem} "
                f"({attempts} attempt{'s' if attempts > 1 else ''}); will try again next run"
            )
        time.sleep(delay)


def _stage(
    stored: StoredLogin, current: StoredLogin, pair: TokenPair, reservation: writeback.Reservation
) -> Path | None:
    """Write the new pair into the reserved room and make it durable; return where it is.

    None when not even the reserved room took it: the pair then lives only in this run.
    """
    data = {**current.data, "access_token": pair.access_token, "refresh_token": pair.refresh_token}
    try:
        return writeback.stage(reservation, encode(current.codec, data), current.refresh_token or "")
    except OSError as exc:
        log.error(
            "cannot save the renewed login beside %s (%s); using it for this run", stored.path, describe(exc)
        )
        return None


def _install(
    stored: StoredLogin,
    current: StoredLogin,
    pair: TokenPair,
    staged: Path | None,
    deadline: float,
    ticket: lock.Ticket,
) -> StoredLogin:
    """Put the staged pair into droid's store under droid's lock (compare-and-swap)."""
    spent = current.refresh_token or ""
    data = {**current.data, "access_token": pair.access_token, "refresh_token": pair.refresh_token}
    renewed = StoredLogin(current.source, current.path, current.codec, data)
    if staged is None:
        return renewed
    try:
        installed = writeback.install(stored, staged, spent, deadline, ticket)
    except (lock.LockTimeout, OSError, AuthError) as exc:
        log.warning(
            "renewed the Factory login, but cannot put it into %s yet (%s); the next run will",
            stored.path,
            describe(exc),
        )
        return renewed
    if installed.refresh_token == pair.refresh_token:
        log.info(
            "renewed the Factory login in %s; the new token is valid until %s",
            installed.path,
            _format_time(token_expiry(installed.access_token)),
        )
    return installed


def _await_droid_save(stored: StoredLogin, deadline: float) -> StoredLogin | None:
    """After WorkOS rejected our token: return droid's newer login if droid saves one soon."""
    give_up = min(time.monotonic() + DROID_SAVE_WAIT_SECONDS, deadline - 1.0)
    # Look at the store at once: droid's save may already have landed while WorkOS's
    # rejection of our request was on its way (droid's request reached WorkOS first).
    seen = None
    while True:
        now_seen = _signature(stored)
        if now_seen != seen:
            seen = now_seen
            with contextlib.suppress(AuthError):
                current = read_store(stored.path, stored.codec)
                if current.refresh_token and current.refresh_token != stored.refresh_token:
                    return current
        if time.monotonic() >= give_up:
            return None
        time.sleep(DROID_SAVE_POLL_SECONDS)


def _renewal_elsewhere(
    stored: StoredLogin, current: StoredLogin, seen: tuple | None, token_refused: bool
) -> str | None:
    """After WorkOS rejected the token read as ``current``: say why droid (or another run)
    may be renewing this login right now, or None when nothing suggests it.

    A rejection is proof that the login ended only when none of these holds: droid asks
    WorkOS outside its lock and saves when the answer comes, which may be long after our
    rejection; until then the only traces are its usual ones.
    """
    if _signature(stored) != seen:
        return "droid's store changed since it was read"
    if lock.writer_at_work(stored.path.parent):
        return "droid (or another run) is writing droid's store"
    expires = token_expiry(current.access_token)
    if not token_refused and expires is not None and expires > time.time():
        return f"its access token is still valid until {_format_time(expires)}"
    return None


def _signature(stored: StoredLogin) -> tuple | None:
    """droid's own change test: device, inode, mtime and size of the store file."""
    try:
        st = os.stat(stored.path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def refuse_known_dead(stored: StoredLogin, memory: LoginMemory | None) -> None:
    """Raise the permanent AuthError when ``memory`` says WorkOS already rejected the
    stored refresh token: the login ended, whether or not this run may renew."""
    if memory is not None and stored.refresh_token and memory.dead == fingerprint(stored.refresh_token):
        raise _login_ended(stored, "WorkOS rejected its refresh token on an earlier run")


def _login_ended(stored: StoredLogin, why: str) -> AuthError:
    return AuthError(
        f"Factory login expired: {why}; run `droid` to log in again",
        permanent=True,
        dead_refresh=fingerprint(stored.refresh_token or ""),
    )


def _error_code(answer: http.Answer) -> str:
    """Return ", <error code>" from an OAuth error body, only when it looks like a code."""
    try:
        body = answer.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    if not isinstance(code, str) or not _SAFE_ERROR_CODE.fullmatch(code):
        return ""
    # A code's shape is no proof: a WorkOS (or a proxy) that echoes the refresh token in
    # ``error`` would put it in stderr and the state file. The one redaction hides it.
    return f", {redact(code, 64)}"


def _format_time(unix: float | None) -> str:
    if unix is None:
        return "an unknown time"
    return datetime.fromtimestamp(unix, tz=timezone.utc).isoformat(timespec="seconds")
