"""Where the job's bearer token comes from.

The rest of the job sees only :func:`open_login` and the :class:`Login` it returns:
``bearer()`` for the Authorization header, ``refresh_after_rejection()`` once after a
401/403, and ``identity`` for ``status``. Which store the token came from, how it is
decrypted, refreshed and written back stays inside this package:

- ``store``: droid's store formats and the order they are tried in;
- ``keyring_source``: the OS keyring that holds the key of ``auth.v2.keyring``;
- ``lock``: droid's write lock, taken droid's way;
- ``refresh``: WorkOS renewal and the write-back under the lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from alerter.credentials.identity import (
    CredentialSettings,
    Identity,
    default_home,
    identity_from_token,
    mask_email,
    token_claims,
    token_expiry,
)
from alerter.errors import AuthError

if TYPE_CHECKING:
    from alerter.credentials.store import KeyLookup, StoredLogin

__all__ = [
    "API_KEY_ENV",
    "DISABLE_KEYRING_ENV",
    "CredentialSettings",
    "Identity",
    "Login",
    "default_home",
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
    """A bearer token and the means to renew it once when the API rejects it."""

    def __init__(
        self,
        token: str,
        identity: Identity,
        renew: Callable[[], tuple[str, Identity]] | None = None,
    ) -> None:
        self._token = token
        self.identity = identity
        self._renew = renew

    def bearer(self) -> str:
        """Return the token to send as ``Authorization: Bearer``."""
        return self._token

    def refresh_after_rejection(self) -> bool:
        """Try to obtain a new token after a 401/403; return True when one is ready.

        Only the first call per run can renew (an API key never does). Raise AuthError
        (``permanent`` when WorkOS rejected the login) or UpstreamError (WorkOS unreachable
        until the deadline).
        """
        renew_now, self._renew = self._renew, None
        if renew_now is None:
            return False
        token, identity = renew_now()
        changed = token != self._token
        self._token, self.identity = token, identity
        return changed

    def __repr__(self) -> str:  # never show the token
        return f"Login(source={self.identity.source!r})"


def open_login(
    settings: CredentialSettings,
    env: Mapping[str, str] = os.environ,
    *,
    key_lookup: KeyLookup | None = None,
) -> Login:
    """Given the settings, return the first usable login, renewed when it expires soon.

    Sources in order: ``$FACTORY_API_KEY``; droid's store in ``settings.home``
    (``auth.v2.keyring``, on macOS ``auth.v2.loginkeychain``, ``auth.v2.file`` +
    ``auth.v2.key``, ``auth.encrypted``, ``auth.json``). A token expiring within
    ``settings.refresh_margin_seconds`` is renewed and written back under droid's lock.
    ``key_lookup(account)`` replaces the OS keyring lookup (tests).

    Raise AuthError (``permanent`` when only ``droid`` logging in again helps) or
    UpstreamError (WorkOS unreachable until ``settings.deadline``).
    """
    api_key = env.get(API_KEY_ENV, "").strip()
    if api_key:
        return Login(api_key, Identity(source=API_KEY_ENV))
    # The store code needs cryptography: loaded only when there is no API key.
    from alerter.credentials.store import find_stored_login

    stored = find_stored_login(settings.home, _keyring_lookup(settings, env, key_lookup))
    if stored is None:
        raise AuthError(
            f"no Factory login found (looked for ${API_KEY_ENV} and droid's store in "
            f"{settings.home}); run `droid` to log in, or set {API_KEY_ENV}"
        )
    log.debug("Factory login read from %s", stored.path)
    if _expires_soon(stored, settings.refresh_margin_seconds):
        stored = _renew_before_use(stored, settings)
    return _login_from_store(stored, settings)


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


def _expires_soon(stored: StoredLogin, margin_seconds: float) -> bool:
    """True when the token's exp is within the margin; a token without exp is left alone."""
    expires_at = token_expiry(stored.access_token)
    return expires_at is not None and expires_at - time.time() <= margin_seconds


def _renew_before_use(stored: StoredLogin, settings: CredentialSettings) -> StoredLogin:
    """Renew a soon-expiring login; a store without refresh token is used while it lasts."""
    if stored.refresh_token is None:
        expires_at = token_expiry(stored.access_token) or 0.0
        if expires_at <= time.time():
            raise AuthError(
                f"Factory login expired and {stored.path} holds no refresh token; "
                "run `droid` to log in again",
                permanent=True,
            )
        log.warning("%s holds no refresh token; using its token until it expires", stored.path)
        return stored
    from alerter.credentials.refresh import renew

    return renew(stored, settings)


def _login_from_store(stored: StoredLogin, settings: CredentialSettings) -> Login:
    """Wrap a stored login so that a 401/403 can renew it once through the same store."""

    def renew_after_rejection() -> tuple[str, Identity]:
        from alerter.credentials.refresh import renew

        renewed = renew(stored, settings)
        return renewed.access_token, _identity(renewed)

    return Login(
        stored.access_token,
        _identity(stored),
        renew_after_rejection if stored.refresh_token else None,
    )


def _identity(stored: StoredLogin) -> Identity:
    return identity_from_token(stored.access_token, stored.source, stored.region)
