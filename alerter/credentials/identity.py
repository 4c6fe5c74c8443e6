"""What the job may show about a login: the settings it needs and who the token belongs to.

Nothing in this module holds or prints a secret: tokens are decoded here only to read
their claims (expiry, user, organization), never to verify or display them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_OVERRIDE_ENV = "FACTORY_HOME_OVERRIDE"


@dataclass(frozen=True)
class CredentialSettings:
    """What the credential code needs from the config.

    ``deadline`` is a :func:`time.monotonic` value bounding the whole run: lock waits,
    WorkOS requests and retry back-offs all stop there. ``None`` means "use the built-in
    budgets" (about 12 s for the lock, 30 s for a refresh).
    """

    home: Path
    workos_url: str = "https://api.workos.com/user_management"
    refresh_margin_seconds: float = 24 * 3600
    timeout_seconds: float = 10.0
    ca_bundle: str | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class Identity:
    """Who the token belongs to, safe to show: nothing in here is a secret.

    ``source`` names where the token came from (``FACTORY_API_KEY``, ``auth.v2.keyring``,
    ``auth.v2.loginkeychain``, ``auth.v2.file``, ``auth.encrypted`` or ``auth.json``).
    ``expires_at`` is unix seconds. ``region`` is droid's residency region (``"eu"`` for
    accounts served by api.eu.factory.ai), when the store knows it.
    """

    source: str
    email_masked: str | None = None
    org_id: str | None = None
    user_id: str | None = None
    expires_at: float | None = None
    region: str | None = None


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    """Given the environment, return droid's store directory when the config names none.

    ``$FACTORY_HOME_OVERRIDE`` wins (droid honours it too), else ``~/.factory`` under the
    environment's ``HOME``.
    """
    override = env.get(HOME_OVERRIDE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    home = env.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".factory"


def mask_email(email: str | None) -> str | None:
    """Given an email address, return it with the local part hidden: ``a***@example.com``."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def token_claims(token: str) -> dict:
    """Given a JWT, return its claims without verifying the signature ({} if not a JWT)."""
    import jwt  # pyjwt pulls in cryptography's x509 (~40 ms): only when a JWT is decoded

    try:
        # The token is the server's, not ours to verify: we only read when it expires.
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def token_expiry(token: str) -> float | None:
    """Given a token, return its ``exp`` claim in unix seconds (None when it has none)."""
    exp = token_claims(token).get("exp")
    # bool is an int subclass; a JWT with "exp": true is not an expiry.
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp)
    return None


def identity_from_token(token: str, source: str, region: str | None = None) -> Identity:
    """Given an access token, return the :class:`Identity` its claims describe."""
    claims = token_claims(token)
    email = claims.get("email")
    org = claims.get("org_id") or claims.get("external_org_id")
    sub = claims.get("sub")
    return Identity(
        source=source,
        email_masked=mask_email(email if isinstance(email, str) else None),
        org_id=org if isinstance(org, str) else None,
        user_id=sub if isinstance(sub, str) else None,
        expires_at=token_expiry(token),
        region=region,
    )
