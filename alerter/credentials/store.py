"""droid's credential store: find the login, decrypt it, and write a renewed one back.

Files in the store directory (``~/.factory`` by default), tried in droid's order:

- ``auth.v2.keyring``: AES-256-GCM envelope, key in the OS keyring (``Factory CLI`` /
  ``auth-encryption-key``); on macOS also ``auth.v2.loginkeychain`` (account
  ``auth-encryption-key-security-cli``).
- ``auth.v2.file`` + ``auth.v2.key``: the same envelope, key in a file beside it.
- ``auth.encrypted`` (legacy, best effort), then ``auth.json`` (plain JSON).

The envelope is one line ``b64(iv):b64(tag):b64(ciphertext)`` with a 16-byte iv, a 16-byte
tag and no associated data. A store is written back in exactly the format it was read in,
with every field we do not understand kept.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag

from alerter.credentials.keyring_source import KEYRING_ACCOUNT, LOGIN_KEYCHAIN_ACCOUNT
from alerter.errors import AuthError

log = logging.getLogger(__name__)

KEYRING_FILE = "auth.v2.keyring"
LOGIN_KEYCHAIN_FILE = "auth.v2.loginkeychain"
KEYFILE_FILE = "auth.v2.file"
KEY_FILE = "auth.v2.key"
LEGACY_FILE = "auth.encrypted"
PLAIN_FILE = "auth.json"

KEY_BYTES = 32
IV_BYTES = 16
TAG_BYTES = 16
FILE_MODE = 0o600

# Given a keytar account name, return the base64 key stored under it, or None.
KeyLookup = Callable[[str], "str | None"]


class StoreFormatError(ValueError):
    """A store file is not in the expected format. The message never quotes the content."""


@dataclass(frozen=True)
class Envelope:
    """droid's v2 format: AES-256-GCM under a 32-byte key."""

    key: bytes = field(repr=False)


@dataclass(frozen=True)
class PlainJson:
    """Unencrypted JSON (``auth.json``, and some legacy ``auth.encrypted`` files)."""


@dataclass(frozen=True)
class HexJson:
    """JSON encoded as hex text (one variant of legacy ``auth.encrypted``)."""


Codec = Envelope | PlainJson | HexJson


@dataclass(frozen=True)
class StoredLogin:
    """One decrypted store: where it lives, how to re-encode it, and its JSON fields."""

    source: str
    path: Path
    codec: Codec = field(repr=False)
    data: Mapping = field(repr=False)

    @property
    def access_token(self) -> str:
        return self.data["access_token"]

    @property
    def refresh_token(self) -> str | None:
        value = self.data.get("refresh_token")
        return value if isinstance(value, str) and value else None

    @property
    def region(self) -> str | None:
        """droid's residency region: ``whoami.region``, else the older top-level ``region``."""
        whoami = self.data.get("whoami")
        region = whoami.get("region") if isinstance(whoami, dict) else None
        if not isinstance(region, str):
            region = self.data.get("region")
        return region.lower() if isinstance(region, str) and region else None


# -- the envelope -----------------------------------------------------------------------


def aes_gcm() -> type:
    """Return cryptography's AES-GCM class, by the shortest import that reaches it.

    The public module ``cryptography.hazmat.primitives.ciphers.aead`` re-exports the class
    of the compiled binding, after importing every cipher, mode and legacy algorithm: half
    of what the store costs a quiet run. A cryptography release that moved the binding is
    served by the public module (a test holds the two equal).
    """
    try:
        from cryptography.hazmat.bindings._rust import openssl

        return openssl.aead.AESGCM
    except (ImportError, AttributeError):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM


def decrypt_envelope(text: str, key: bytes) -> bytes:
    """Given envelope text and a 32-byte key, return the plaintext.

    Raise StoreFormatError when the text is not an envelope or does not decrypt.
    """
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise StoreFormatError("not an iv:tag:ciphertext envelope")
    try:
        iv, tag, ciphertext = (base64.b64decode(part, validate=True) for part in parts)
    except (binascii.Error, ValueError):
        raise StoreFormatError("envelope is not valid base64") from None
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise StoreFormatError("envelope has the wrong iv or tag length")
    if len(key) != KEY_BYTES:
        raise StoreFormatError("key is not 32 bytes")
    try:
        return aes_gcm()(key).decrypt(iv, ciphertext + tag, None)
    except InvalidTag:
        raise StoreFormatError("does not decrypt (corrupted, truncated, or another key)") from None


def encrypt_envelope(plaintext: bytes, key: bytes) -> str:
    """Given plaintext and a 32-byte key, return droid's envelope with a fresh random iv."""
    import secrets

    iv = secrets.token_bytes(IV_BYTES)
    sealed = aes_gcm()(key).encrypt(iv, plaintext, None)  # ciphertext || tag
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return ":".join(base64.b64encode(part).decode("ascii") for part in (iv, tag, ciphertext))


def parse_key(text: str) -> bytes:
    """Given the text of a key (base64 of 32 bytes), return the key. Raise StoreFormatError."""
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise StoreFormatError("key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise StoreFormatError(f"key is {len(key)} bytes, expected {KEY_BYTES}")
    return key


# -- codecs -----------------------------------------------------------------------------


def decode(codec: Codec, text: str) -> dict:
    """Given a codec and a file's text, return the login JSON. Raise StoreFormatError."""
    if isinstance(codec, Envelope):
        raw = decrypt_envelope(text, codec.key)
    elif isinstance(codec, HexJson):
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError:
            raise StoreFormatError("not hex") from None
    else:
        raw = text.encode("utf-8")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        # `from None`: the JSON error object carries the decrypted document.
        raise StoreFormatError("does not hold JSON") from None
    if not isinstance(data, dict):
        raise StoreFormatError("does not hold a JSON object")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise StoreFormatError("holds no access_token")
    return data


def encode(codec: Codec, data: Mapping) -> str:
    """Given a codec and the login JSON, return the file text droid expects."""
    # Compact JSON like droid's JSON.stringify, so the file looks like droid wrote it.
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if isinstance(codec, Envelope):
        return encrypt_envelope(raw, codec.key)
    if isinstance(codec, HexJson):
        return raw.hex()
    return raw.decode("utf-8")


# -- finding the login ------------------------------------------------------------------


def find_stored_login(
    home: Path, key_lookup: KeyLookup | None, platform: str = sys.platform
) -> StoredLogin | None:
    """Given the store directory, return the store droid itself would use, else None.

    ``key_lookup`` reads a key from the OS keyring (None: droid's keyring is switched off).
    When a keyring-backed store exists but its key cannot be had (a cron job, a system
    unit: no session bus), an older file store beside it is not used: droid stopped
    renewing it when the login moved to the keyring, and it may belong to another login.
    Raise AuthError then, and when ``auth.v2.file`` or ``auth.json`` exists but cannot be
    used: droid's own store being broken is something the user must hear about, and when
    the directory cannot be looked into at all (another user's, say).
    """
    try:
        return _find_stored_login(home, key_lookup, platform)
    except OSError as exc:
        raise AuthError(
            f"cannot look into droid's store {home} ({describe(exc)}); run the job as the user who "
            "runs droid, or set FACTORY_API_KEY"
        ) from None


def _find_stored_login(home: Path, key_lookup: KeyLookup | None, platform: str) -> StoredLogin | None:
    unreachable: list[Path] = []
    if key_lookup is not None:
        keyring_stores = [(KEYRING_FILE, KEYRING_ACCOUNT)]
        if platform == "darwin":
            keyring_stores.append((LOGIN_KEYCHAIN_FILE, LOGIN_KEYCHAIN_ACCOUNT))
        for name, account in keyring_stores:
            stored = _read_keyring_store(home / name, account, key_lookup)
            if stored:
                return stored
            if (home / name).exists():
                unreachable.append(home / name)
    stored = (
        _read_keyfile_store(home)
        or _read_legacy_store(home / LEGACY_FILE, key_lookup, home / KEY_FILE)
        or _read_plain_store(home / PLAIN_FILE)
    )
    if unreachable:
        _check_fallback(unreachable, stored)
    return stored


def _check_fallback(unreachable: list[Path], fallback: StoredLogin | None) -> None:
    """A keyring-backed store could not be read: allow only a newer store as the fallback."""
    keyring_store = max(unreachable, key=_mtime)
    why = (
        f"droid's login is in {keyring_store}, whose key is in the OS keyring, which this run "
        "cannot reach (no D-Bus session, or a locked keyring)"
    )
    if fallback is None:
        raise AuthError(f"{why}; run the job in your desktop session, or set FACTORY_API_KEY")
    if _mtime(fallback.path) < _mtime(keyring_store):
        raise AuthError(
            f"{why}, and {fallback.path} beside it is older (droid no longer renews it); run the job "
            "in your desktop session (a systemd user timer), or set FACTORY_API_KEY, or remove the "
            f"old {fallback.path.name}"
        )
    log.warning("%s; using the newer %s", why, fallback.path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_text(path: Path) -> str | None:
    """Return the file's text, or None when it does not exist. Raise OSError otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise StoreFormatError("is not text") from None


def _read_or_fail(path: Path) -> str | None:
    """Given a store file, return its text (None when absent). Raise AuthError naming it."""
    try:
        return _read_text(path)
    except (OSError, StoreFormatError) as exc:
        raise AuthError(f"cannot read {path}: {describe(exc)}") from None


def _read_keyring_store(path: Path, account: str, key_lookup: KeyLookup) -> StoredLogin | None:
    """Decrypt a keyring-backed store; any trouble means "not this one", at debug level."""
    try:
        text = _read_text(path)
        if text is None:
            return None
        key_text = key_lookup(account)
        if not key_text:
            log.debug("%s exists but its key is not in the OS keyring; trying the next store", path)
            return None
        codec = Envelope(parse_key(key_text))
        return StoredLogin(path.name, path, codec, decode(codec, text))
    except (OSError, StoreFormatError) as exc:
        log.debug("cannot use %s (%s); trying the next store", path, describe(exc))
        return None


def _read_keyfile_store(home: Path) -> StoredLogin | None:
    """Decrypt ``auth.v2.file`` with ``auth.v2.key``. Raise AuthError when it is unusable."""
    path, key_path = home / KEYFILE_FILE, home / KEY_FILE
    text = _read_or_fail(path)
    if text is None:
        return None
    key_text = _read_or_fail(key_path)
    if key_text is None:
        raise AuthError(
            f"{path} exists but its key file {key_path} is missing; run `droid` to log in again",
            permanent=True,
        )
    try:
        codec = Envelope(parse_key(key_text))
    except StoreFormatError as exc:
        raise AuthError(
            f"{key_path} is not a usable key ({exc}); run `droid` to log in again", permanent=True
        ) from None
    return read_store(path, codec)


def _read_legacy_store(path: Path, key_lookup: KeyLookup | None, key_path: Path) -> StoredLogin | None:
    """Best effort on ``auth.encrypted``: plain JSON, hex JSON, or an envelope."""
    try:
        text = _read_text(path)
    except (OSError, StoreFormatError) as exc:
        log.debug("cannot read %s (%s); trying the next store", path, describe(exc))
        return None
    if text is None:
        return None
    candidates: list[Codec] = [PlainJson(), HexJson()]
    # Readers disagree on which key sealed it; try every key we can get without asking.
    accounts = (KEYRING_ACCOUNT, LOGIN_KEYCHAIN_ACCOUNT) if key_lookup else ()
    key_texts = [key_lookup(account) for account in accounts]
    with contextlib.suppress(OSError, StoreFormatError):
        key_texts.append(_read_text(key_path))
    for key_text in key_texts:
        if not key_text:
            continue
        try:
            candidates.append(Envelope(parse_key(key_text)))
        except StoreFormatError:
            continue
    for codec in candidates:
        try:
            return StoredLogin(path.name, path, codec, decode(codec, text))
        except StoreFormatError:
            continue
    log.debug("%s is in no format we know; trying the next store", path)
    return None


def _read_plain_store(path: Path) -> StoredLogin | None:
    """Read ``auth.json``. Raise AuthError when it exists but holds no token."""
    try:
        text = _read_text(path)
        if text is None:
            return None
        return StoredLogin(path.name, path, PlainJson(), decode(PlainJson(), text))
    except (OSError, StoreFormatError) as exc:
        raise AuthError(f"cannot read {path}: {describe(exc)}; run `droid` to log in again") from None


def read_store(path: Path, codec: Codec) -> StoredLogin:
    """Given a store file and its codec, return its login. Raise AuthError naming the file.

    A file that no longer decodes (corrupted, truncated, wrong key) or is gone is
    permanent: droid cannot read it either, only a new login fixes it.
    """
    text = _read_or_fail(path)
    if text is None:
        raise AuthError(
            f"{path} disappeared (did droid log out?); run `droid` to log in again", permanent=True
        )
    try:
        return StoredLogin(path.name, path, codec, decode(codec, text))
    except StoreFormatError as exc:
        raise AuthError(f"cannot use {path}: {exc}; run `droid` to log in again", permanent=True) from None


def describe(exc: BaseException) -> str:
    """Name an error without quoting file contents: OSError's strerror, else our message."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, StoreFormatError):
        return str(exc)
    return type(exc).__name__
