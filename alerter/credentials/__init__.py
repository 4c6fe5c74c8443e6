"""Where the job's bearer token comes from.

The rest of the job sees only :func:`open_login` and the :class:`Login` it returns:
``bearer()`` for the Authorization header, ``refresh_after_rejection()`` once after a
401/403, and ``identity`` for ``status``. Which store the token came from, how it is
decrypted, refreshed and written back stays inside this package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alerter.errors import AuthError

API_KEY_ENV = "FACTORY_API_KEY"


@dataclass(frozen=True)
class CredentialSettings:
    """What the credential code needs from the config."""

    home: Path
    workos_url: str = "https://api.workos.com/user_management"
    refresh_margin_seconds: float = 24 * 3600
    timeout_seconds: float = 10.0
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Identity:
    """Who the token belongs to, safe to show: nothing in here is a secret."""

    source: str
    email_masked: str | None = None
    org_id: str | None = None
    user_id: str | None = None
    expires_at: float | None = None
    region: str | None = None


class Login:
    """A bearer token and the means to renew it once when the API rejects it."""

    def __init__(self, token: str, identity: Identity) -> None:
        self._token = token
        self.identity = identity

    def bearer(self) -> str:
        """Return the token to send as ``Authorization: Bearer``."""
        return self._token

    def refresh_after_rejection(self) -> bool:
        """Try to obtain a new token after a 401/403; return True when one is ready."""
        return False

    def __repr__(self) -> str:  # never show the token
        return f"Login(source={self.identity.source!r})"


def mask_email(email: str | None) -> str | None:
    """Given an email address, return it with the local part hidden: ``a***@example.com``."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def token_claims(token: str) -> dict:
    """Given a JWT, return its claims without verifying the signature ({} if not a JWT)."""
    import jwt  # pyjwt pulls in cryptography's x509: import it only when a JWT is decoded

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def identity_from_token(token: str, source: str, region: str | None = None) -> Identity:
    """Given an access token, return the :class:`Identity` its claims describe."""
    claims = token_claims(token)
    exp = claims.get("exp")
    org = claims.get("org_id") or claims.get("external_org_id")
    sub = claims.get("sub")
    return Identity(
        source=source,
        email_masked=mask_email(claims.get("email") if isinstance(claims.get("email"), str) else None),
        org_id=org if isinstance(org, str) else None,
        user_id=sub if isinstance(sub, str) else None,
        expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        region=region,
    )


def open_login(settings: CredentialSettings, env: Mapping[str, str] = os.environ) -> Login:
    """Given the settings, return the first usable login. Raise AuthError when there is none."""
    key = env.get(API_KEY_ENV, "").strip()
    if key:
        return Login(key, Identity(source=API_KEY_ENV))
    plain = settings.home / "auth.json"
    if plain.is_file():
        try:
            data = json.loads(plain.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuthError(
                f"cannot read {plain}: {type(exc).__name__}; run `droid` to log in again"
            ) from None
        token = data.get("access_token") if isinstance(data, dict) else None
        if isinstance(token, str) and token:
            return Login(token, identity_from_token(token, "auth.json"))
    raise AuthError(
        f"no Factory login found (looked for ${API_KEY_ENV} and droid's store in {settings.home}); "
        "run `droid` to log in, or set FACTORY_API_KEY"
    )
