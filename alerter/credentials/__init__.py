"""Where the job's bearer token comes from.

The rest of the job sees only :func:`open_login` and the :class:`Login` it returns:
``bearer()`` for the Authorization header, ``renew_after_refusal()`` once after a 401,
``identity`` for ``status`` and ``memory`` to keep in the state. Which store the token
came from, how it is decrypted, renewed and written back stays inside this package:

- ``store``: droid's store formats and which one droid itself would use;
- ``keyring_source``: the OS keyring that holds the key of ``auth.v2.keyring``;
- ``lock``: droid's write lock, taken droid's way;
- ``refresh``: WorkOS renewal, outside droid's lock;
- ``writeback``: reserve, stage and install a renewed store so nothing loses it.

What the job does to droid's login: it renews it only when the access token expires
within the next few minutes (or Factory refused a token not yet renewed in this run),
as droid itself would, and writes the new pair back into the same store in droid's
format, under droid's lock. A dry run never renews.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from alerter.credentials.identity import (
    RENEW_WITHIN_SECONDS,
    CredentialSettings,
    Identity,
    LoginMemory,
    fingerprint,
    identity_from_token,
    mask_email,
    token_claims,
    token_expiry,
)
from alerter.errors import AuthError, UpstreamError

if TYPE_CHECKING:
    from alerter.credentials.store import KeyLookup, StoredLogin

__all__ = [
    "API_KEY_ENV",
    "DISABLE_KEYRING_ENV",
    "CredentialSettings",
    "Identity",
    "Login",
    "LoginMemory",
    "identity_from_token",
    "mask_email",
    "open_login",
    "token_claims",
    "token_expiry",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "FACTORY_API_KEY"
# droid's own switch for "do not use the OS keyring"; when set, droid ignores
# auth.v2.keyring, so its contents may be stale and we ignore it too.
DISABLE_KEYRING_ENV = "FACTORY_DISABLE_KEYRING"


class Login:
    """A bearer token, who it belongs to, and the means to renew it once after a refusal."""

    def __init__(
        self,
        token: str,
        identity: Identity,
        renew: Callable[[], tuple[str, Identity]] | None = None,
        memory: LoginMemory | None = None,
        renewed: bool = False,
        place: str | None = None,
        api_key: bool = False,
    ) -> None:
        self._token = token
        # An API key from a variable (its name is ``place``), not droid's login.
        self.is_api_key = api_key
        self.identity = identity
        # Where the login was read, for messages: droid's store file, or the variable.
        self.place = place or identity.source
        self._renew = renew
        self._renewed = renewed
        self._memory = memory or LoginMemory()

    def bearer(self) -> str:
        """Return the token to send as ``Authorization: Bearer``."""
        return self._token

    @property
    def memory(self) -> LoginMemory:
        """What the next run should remember about this login (fingerprints and claims only)."""
        if self._renew is None and self.is_api_key:
            return self._memory.with_api_key(self._token)
        return self._memory.with_identity(self._token, self.identity)

    def renew_after_refusal(self) -> bool:
        """After Factory refused the token (401): renew it once; return True when a new one is ready.

        Nothing is renewed for an API key, a dry run, a token already renewed in this run,
        or a token Factory refused on an earlier run right after its renewal. Raise
        AuthError (``permanent`` when WorkOS rejected the login) or UpstreamError.
        """
        renew_now, self._renew = self._renew, None
        if renew_now is None or self._renewed or self._memory.refused == fingerprint(self._token):
            return False
        token, identity = renew_now()
        self._renewed = True
        changed = token != self._token
        self._token, self.identity = token, identity
        return changed

    def refused(self) -> None:
        """Factory refused the token for good in this run: remember it if it was renewed."""
        if self._renewed:
            self._memory = dataclasses.replace(self._memory, refused=fingerprint(self._token))

    def __repr__(self) -> str:  # never show the token
        return f"Login(source={self.identity.source!r})"


def open_login(
    settings: CredentialSettings,
    env: Mapping[str, str] = os.environ,
    *,
    key_lookup: KeyLookup | None = None,
) -> Login:
    """Given the settings, return the login droid itself would use, renewed when it must be.

    Sources in order: ``$FACTORY_API_KEY`` (``settings.api_key_env``); droid's store in ``settings.home``
    (``auth.v2.keyring``, on macOS ``auth.v2.loginkeychain``, ``auth.v2.file`` +
    ``auth.v2.key``, ``auth.encrypted``, ``auth.json``). A token that expires within a few
    minutes is renewed and written back (never in a dry run); when renewing fails for a
    reason that may pass (WorkOS unreachable, a read-only or full store) while the token
    still works, the token is used and a warning says why.
    ``key_lookup(account)`` replaces the OS keyring lookup (tests).

    Raise AuthError (``permanent`` when only ``droid`` logging in again helps) or
    UpstreamError (WorkOS unreachable until ``settings.deadline``).
    """
    variable = settings.api_key_env
    api_key = env.get(variable, "").strip() if variable else ""
    if api_key:
        # What is remembered about droid's tokens stays for when the key is gone again.
        return Login(api_key, Identity(source=variable), memory=settings.memory, api_key=True)
    if not settings.droid_store:
        raise AuthError(f"${variable} is not set (or empty); set it to this account's fk- API key")
    # The store code needs cryptography: loaded only when there is no API key.
    from alerter.credentials import writeback
    from alerter.credentials.store import find_stored_login

    stored = find_stored_login(settings.home, _keyring_lookup(settings, env, key_lookup))
    if stored is None:
        if variable is None:  # an account of its own droid home: no key is looked for
            home = settings.home.parent
            raise AuthError(
                f"no droid login in {settings.home}; log in there with "
                f"`FACTORY_HOME_OVERRIDE={shlex.quote(str(home))} droid`"
            )
        raise AuthError(
            f"no Factory login found (looked for ${API_KEY_ENV} and droid's store in "
            f"{settings.home}); run `droid` to log in, or set {API_KEY_ENV}"
        )
    log.debug("Factory login read from %s", stored.path)
    memory = settings.memory or LoginMemory()
    if settings.may_renew:
        stored = writeback.recover(stored, settings.deadline)
    identity = _identity(stored, memory)
    renewed = False
    if _expires_soon(identity):
        before = stored.refresh_token
        stored = _renew_before_use(stored, identity, settings)
        identity = _identity(stored, memory)
        renewed = stored.refresh_token != before
    return _login_from_store(stored, identity, settings, memory, renewed)


def _keyring_lookup(
    settings: CredentialSettings, env: Mapping[str, str], key_lookup: KeyLookup | None
) -> KeyLookup | None:
    """Return the keyring lookup to use, or None when droid's keyring is switched off."""
    if env.get(DISABLE_KEYRING_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    if key_lookup is not None:
        return key_lookup

    def lookup(account: str) -> str | None:
        from alerter.credentials import keyring_source

        timeout = keyring_source.LOOKUP_TIMEOUT_SECONDS
        if settings.deadline is not None:
            timeout = min(timeout, settings.deadline - time.monotonic())
        return keyring_source.lookup_key(account, timeout)

    return lookup


def _expires_soon(identity: Identity) -> bool:
    """True when the token's exp is within the next few minutes; a token without exp is left alone."""
    expires_at = identity.expires_at
    return expires_at is not None and expires_at - time.time() <= RENEW_WITHIN_SECONDS


def _renew_before_use(stored: StoredLogin, identity: Identity, settings: CredentialSettings) -> StoredLogin:
    """Renew a login about to expire; keep using a still-valid token when renewing cannot be done now."""
    from alerter.credentials.refresh import refuse_known_dead, renew

    # Before the dry run's own refusal: a login known to have ended is the same failure
    # in a dry run as in a real one, so both show the same notices.
    refuse_known_dead(stored, settings.memory)
    still_valid = (identity.expires_at or 0.0) > time.time()
    until = _when(identity.expires_at)
    if stored.refresh_token is None:
        if not still_valid:
            raise AuthError(
                f"Factory login expired and {stored.path} holds no refresh token; "
                "run `droid` to log in again",
                permanent=True,
            )
        log.warning("%s holds no refresh token; using its token until it expires", stored.path)
        return stored
    if not settings.may_renew:
        if still_valid:
            log.info("droid's login needs renewing soon (token valid until %s); a dry run leaves it", until)
            return stored
        raise AuthError(
            f"droid's login in {stored.path} needs renewing (its token expired at {until}); "
            "`run` renews it, a dry run never does"
        )
    try:
        return renew(stored, settings)
    except UpstreamError as exc:
        if not still_valid:
            raise
        log.warning("%s; using the current token, valid until %s", exc, until)
        return stored


def _login_from_store(
    stored: StoredLogin,
    identity: Identity,
    settings: CredentialSettings,
    memory: LoginMemory,
    renewed: bool,
) -> Login:
    """Wrap a stored login so that a 401 can renew it once through the same store."""

    def renew_after_refusal() -> tuple[str, Identity]:
        from alerter.credentials.refresh import renew

        renewed_login = renew(stored, settings, token_refused=True)
        return renewed_login.access_token, _identity(renewed_login, memory)

    may_renew = bool(stored.refresh_token) and settings.may_renew
    renew = renew_after_refusal if may_renew else None
    return Login(stored.access_token, identity, renew, memory, renewed, place=str(stored.path))


def _identity(stored: StoredLogin, memory: LoginMemory) -> Identity:
    return identity_from_token(stored.access_token, stored.source, stored.region, memory)


def _when(unix: float | None) -> str:
    if unix is None:
        return "an unknown time"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix, tz=timezone.utc).isoformat(timespec="seconds")
