"""Renew a stored droid login with WorkOS and write it back without logging droid out.

WorkOS refresh tokens are single-use: the moment WorkOS answers, the old refresh token is
dead, so a renewed pair that does not reach droid's store logs droid out. Hence:

- everything happens under droid's write lock, and the store is re-read under it: when
  droid rotated the tokens meanwhile (the refresh token changed), droid's pair is used and
  WorkOS is not called;
- the new pair is written into the same file, same key, every other field kept;
- a WorkOS 4xx (other than 429) is permanent: only ``droid`` can log in again;
- network trouble, 5xx and 429 are retried with back-off until the run's deadline, and the
  lock is released between attempts so droid is never kept waiting long (droid gives up
  on the lock after 12 s and would then lose *its* refreshed tokens).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

from alerter.credentials.identity import CredentialSettings, token_expiry
from alerter.credentials.lock import LOCK_NAME, LockTimeout, write_lock
from alerter.credentials.store import StoredLogin, read_store, write_store
from alerter.errors import AuthError, UpstreamError
from alerter.http import retry_after

log = logging.getLogger(__name__)

# droid's production WorkOS client id (droid 0.225.2).
CLIENT_ID = "client_01HNM792M5G5G1A2THWPXKFMXB"
REFRESH_BUDGET_SECONDS = 30.0  # when the run gives no deadline
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Keep each locked section well under droid's 12 s lock wait.
MAX_REQUEST_SECONDS_UNDER_LOCK = 8.0
_SAFE_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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


def request_new_tokens(
    workos_url: str,
    refresh_token: str,
    organization_id: str | None,
    timeout: float,
    ca_bundle: str | None = None,
) -> TokenPair:
    """Given a refresh token, return the pair WorkOS issues for it (one attempt).

    Raise AuthError(permanent=True) when WorkOS rejects the token (4xx other than 429),
    TransientRefreshError on network trouble, 5xx, 429 or an unusable answer.
    """
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID}
    if organization_id:
        form["organization_id"] = organization_id
    url = workos_url.rstrip("/") + "/authenticate"
    try:
        # The secret travels in the form body only, never in the URL that errors may quote.
        response = requests.post(
            url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=(timeout, timeout),
            verify=ca_bundle or True,
            allow_redirects=False,
        )
    except requests.Timeout:
        raise TransientRefreshError(f"WorkOS did not answer within {timeout:.1f} s") from None
    except requests.RequestException as exc:
        raise TransientRefreshError(f"cannot reach WorkOS ({type(exc).__name__})") from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientRefreshError(f"WorkOS answered HTTP {status}", retry_after(response))
    if 400 <= status < 500:
        code = _error_code(response)
        raise AuthError(
            f"Factory login expired: WorkOS rejected the refresh token (HTTP {status}{code}); "
            "run `droid` to log in again",
            permanent=True,
        )
    if status != 200:
        raise TransientRefreshError(f"WorkOS answered HTTP {status}")
    try:
        body = response.json()
    except ValueError:
        body = None
    access = body.get("access_token") if isinstance(body, dict) else None
    refresh = body.get("refresh_token") if isinstance(body, dict) else None
    if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
        raise TransientRefreshError("WorkOS answered without a token pair")
    return TokenPair(access, refresh)


def renew(stored: StoredLogin, settings: CredentialSettings) -> StoredLogin:
    """Given a login read from droid's store, return the renewed login now stored there.

    When droid rotated the tokens since ``stored`` was read, return droid's login without
    calling WorkOS. Raise AuthError (permanent when only a new droid login helps) or
    UpstreamError when WorkOS stayed unreachable until the deadline.
    """
    deadline = settings.deadline
    if deadline is None:
        deadline = time.monotonic() + REFRESH_BUDGET_SECONDS
    attempts = 0
    while True:
        attempts += 1
        retry_after = None
        try:
            # The lock lives beside the store it guards (settings.home, normally).
            with write_lock(stored.path.parent, deadline):
                return _renew_locked(stored, settings, deadline)
        except TransientRefreshError as exc:
            problem, retry_after = str(exc), exc.retry_after
        except LockTimeout:
            problem = f"droid's write lock {stored.path.parent / LOCK_NAME} stayed held"
        # Back off outside the lock, so droid can take it meanwhile.
        delay = max(BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1], retry_after or 0)
        log.debug("renewing the Factory login failed (%s); attempt %d", problem, attempts)
        if time.monotonic() + delay >= deadline:
            raise UpstreamError(
                f"cannot renew the Factory login: {problem} "
                f"({attempts} attempt{'s' if attempts > 1 else ''}); will try again next run"
            )
        time.sleep(delay)


def _renew_locked(stored: StoredLogin, settings: CredentialSettings, deadline: float) -> StoredLogin:
    """Under droid's lock: re-read, compare-and-swap, ask WorkOS, write back."""
    current = read_store(stored.path, stored.codec)
    if current.refresh_token != stored.refresh_token:
        log.info("droid renewed its login meanwhile; using droid's tokens from %s", current.path)
        return current
    if not current.refresh_token:
        raise AuthError(
            f"Factory login expired: {current.path} holds no refresh token; run `droid` to log in again",
            permanent=True,
        )
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TransientRefreshError("no time left in this run")
    timeout = min(settings.timeout_seconds, MAX_REQUEST_SECONDS_UNDER_LOCK, remaining)
    pair = request_new_tokens(
        settings.workos_url,
        current.refresh_token,
        current.organization_id,
        timeout,
        settings.ca_bundle,
    )
    data = {**current.data, "access_token": pair.access_token, "refresh_token": pair.refresh_token}
    try:
        renewed = write_store(current, data)
    except AuthError as exc:
        # WorkOS has already spent the stored refresh token: droid's login is gone.
        raise AuthError(
            f"{exc}; the stored refresh token is spent, run `droid` to log in again",
            permanent=True,
        ) from None
    log.info(
        "renewed the Factory login in %s; the new token is valid until %s",
        renewed.path,
        _format_time(token_expiry(renewed.access_token)),
    )
    return renewed


def _error_code(response: requests.Response) -> str:
    """Return ", <error code>" from an OAuth error body, only when it looks like a code."""
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return f", {code}" if isinstance(code, str) and _SAFE_ERROR_CODE.match(code) else ""


def _format_time(unix: float | None) -> str:
    if unix is None:
        return "an unknown time"
    return datetime.fromtimestamp(unix, tz=timezone.utc).isoformat(timespec="seconds")
