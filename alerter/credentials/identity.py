"""What the job may show about a login: the settings it needs and who the token belongs to.

Nothing in this module holds or prints a secret: tokens are decoded here only to read
their claims (expiry, user, organization), never to verify or display them. What a run
learns about a token is remembered (see :class:`LoginMemory`) under the token's
fingerprint, so that the steady path reads the claims from the state instead of decoding
the token again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# droid renews its own token within 60 s of expiry; a run lasts at most its deadline. A
# token that outlives the next few minutes is used as it is: every renewal spends a
# single-use refresh token that droid also holds, so the job renews only when it must.
RENEW_WITHIN_SECONDS = 300.0


@dataclass(frozen=True)
class CredentialSettings:
    """What the credential code needs from the config.

    ``deadline`` is a :func:`time.monotonic` value bounding the whole run: lock waits,
    WorkOS requests and retry back-offs all stop there, except a renewal WorkOS already
    received, seen through up to ``refresh.ANSWER_CAP_SECONDS`` past it. ``None`` means
    "use the built-in budgets" (about 12 s for the lock, 30 s for a refresh). ``may_renew``
    is False for a dry run, which never spends a refresh token nor writes droid's store.
    ``api_key_env`` and ``droid_store`` choose the login of one account of ``accounts:``.
    ``renew_reserve_seconds`` is how much of the deadline must be left to start a renewal,
    so that a slow answer seldom makes the run late.
    """

    home: Path
    workos_url: str = "https://api.workos.com/user_management"
    timeout_seconds: float = 10.0
    ca_bundle: str | None = None
    deadline: float | None = None
    may_renew: bool = True
    renew_reserve_seconds: float = 25.0
    memory: LoginMemory | None = None
    # The variable that may hold an API key (None: none is read), and whether droid's
    # store in ``home`` is used when it holds none (False: that key is the only login).
    api_key_env: str | None = "FACTORY_API_KEY"
    droid_store: bool = True


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


@dataclass(frozen=True)
class LoginMemory:
    """What the job remembers between runs about droid's tokens, by fingerprint only.

    ``token``: the fingerprint of the access token whose claims are in ``claims``
    (``exp``, ``sub``, masked email, org), so the next run need not decode it again.
    ``refused``: the fingerprint of an access token Factory refused even after a renewal;
    a 401 on that token does not renew again. ``dead``: the fingerprint of a refresh token
    WorkOS rejected; it is not sent again. Fingerprints are truncated SHA-256 digests of
    high-entropy tokens: they identify a token without revealing it.
    """

    token: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    refused: str | None = None
    dead: str | None = None
    # The fingerprint of the API key the last run used (None when it used droid's login):
    # which login the state belongs to, for an account taking over a single login's state.
    key: str | None = None

    @classmethod
    def load(cls, data: Any) -> LoginMemory:
        """Given what the state holds (any shape), return the memory; unknown shapes forget."""
        if not isinstance(data, Mapping):
            return cls()

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        claims = data.get("claims")
        return cls(
            text("token"),
            dict(claims) if isinstance(claims, Mapping) else {},
            text("refused"),
            text("dead"),
            text("key"),
        )

    def dump(self) -> dict:
        """Return the JSON the state keeps (only what is set)."""
        out: dict[str, Any] = {}
        if self.token:
            out["token"], out["claims"] = self.token, dict(self.claims)
        if self.refused:
            out["refused"] = self.refused
        if self.dead:
            out["dead"] = self.dead
        if self.key:
            out["key"] = self.key
        return out

    def with_identity(self, token: str, identity: Identity) -> LoginMemory:
        """Return the memory that knows ``token``'s claims as ``identity`` holds them."""
        claims = {
            "exp": identity.expires_at,
            "sub": identity.user_id,
            "email": identity.email_masked,
            "org": identity.org_id,
        }
        return replace(
            self,
            token=fingerprint(token),
            claims={k: v for k, v in claims.items() if v is not None},
            key=None,  # droid's login is the one in use now, not a key
        )

    def with_api_key(self, key: str) -> LoginMemory:
        """Return the memory that knows the run used the API key ``key`` (by fingerprint);
        what it knows of droid's tokens stays for when the key is gone again."""
        return replace(self, key=fingerprint(key))


def same_login(earlier: LoginMemory, now: LoginMemory) -> bool | None:
    """Given what an earlier state remembers of its login and what a run knows of the login
    it just used, return True when they are the same login, False when they differ, and
    None when the earlier state records nothing to tell (an older release kept no key).

    An API key is told by its fingerprint; droid's login by the user (``sub``) and, when
    both know it, the organization; the same access token is the same login either way.
    The masked email is not enough: two people may share its first letter and domain.
    """
    if earlier.token is not None and earlier.token == now.token:
        return True
    if earlier.key is not None:
        return earlier.key == now.key
    user = earlier.claims.get("sub")
    if not user:
        return None
    if now.key is not None or now.claims.get("sub") != user:
        return False
    org, now_org = earlier.claims.get("org"), now.claims.get("org")
    return not org or not now_org or org == now_org


def fingerprint(token: str) -> str:
    """Given a token, return a short digest that names it without revealing it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:24]


def mask_email(email: str | None) -> str | None:
    """Given an email address, return it with the local part hidden: ``a***@example.com``."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def token_claims(token: str) -> dict:
    """Given a JWT, return its claims without verifying the signature ({} if not a JWT)."""
    import jwt  # pyjwt pulls in cryptography's x509 (~40 ms): only for a token not seen before

    try:
        # The token is the server's, not ours to verify: we only read when it expires.
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    # bool is an int subclass; a JWT with "exp": true is not an expiry.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def token_expiry(token: str) -> float | None:
    """Given a token, return its ``exp`` claim in unix seconds (None when it has none)."""
    return _number(token_claims(token).get("exp"))


def identity_from_token(
    token: str, source: str, region: str | None = None, memory: LoginMemory | None = None
) -> Identity:
    """Given an access token, return the :class:`Identity` its claims describe.

    When ``memory`` already knows this token, its remembered claims are used and the token
    is not decoded again.
    """
    if memory is not None and memory.token == fingerprint(token):
        known = memory.claims
        return Identity(
            source=source,
            email_masked=_text(known.get("email")),
            org_id=_text(known.get("org")),
            user_id=_text(known.get("sub")),
            expires_at=_number(known.get("exp")),
            region=region,
        )
    claims = token_claims(token)
    email = claims.get("email")
    return Identity(
        source=source,
        email_masked=mask_email(email if isinstance(email, str) else None),
        org_id=_text(claims.get("org_id")) or _text(claims.get("external_org_id")),
        user_id=_text(claims.get("sub")),
        expires_at=_number(claims.get("exp")),
        region=region,
    )
