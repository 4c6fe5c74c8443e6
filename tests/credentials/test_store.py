"""Reading droid's stores: formats, load order, and clear errors for broken files."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerter.config import default_factory_home
from alerter.credentials import (
    API_KEY_ENV,
    CredentialSettings,
    open_login,
)
from alerter.credentials.store import (
    Envelope,
    PlainJson,
    StoreFormatError,
    decode,
    decrypt_envelope,
    encode,
    encrypt_envelope,
    find_stored_login,
)
from alerter.credentials.writeback import install, reserve, stage
from alerter.errors import AuthError

from .helpers import (
    DAY,
    keyring_holding,
    login_data,
    no_keyring,
    write_envelope_store,
    write_keyfile_store,
)

FAR = 30 * DAY  # a token this far from expiry is never renewed


def far_settings(home) -> CredentialSettings:
    return CredentialSettings(home=home, workos_url="http://127.0.0.1:9/unused")


# -- the envelope -----------------------------------------------------------------------


def test_envelope_round_trip_uses_a_fresh_16_byte_iv():
    key = os.urandom(32)
    first, second = encrypt_envelope(b"{}", key), encrypt_envelope(b"{}", key)
    iv, tag, _ = (base64.b64decode(part) for part in first.split(":"))
    assert (len(iv), len(tag)) == (16, 16)
    assert first != second
    assert decrypt_envelope(first, key) == decrypt_envelope(second, key) == b"{}"


@given(st.text())
def test_envelope_parser_rejects_any_text_with_one_error_type(text):
    # Anything but StoreFormatError (or a crash) fails the test.
    with contextlib.suppress(StoreFormatError):
        decrypt_envelope(text, b"k" * 32)


@given(st.text())
def test_json_decoder_rejects_any_text_with_one_error_type(text):
    try:
        data = decode(PlainJson(), text)
    except StoreFormatError:
        return
    assert isinstance(data["access_token"], str)


# -- where the login comes from ---------------------------------------------------------


def test_keyfile_store_gives_the_identity_status_shows(home):
    write_keyfile_store(home, login_data(FAR))
    login = open_login(far_settings(home), env={}, key_lookup=no_keyring)
    identity = login.identity
    assert identity.source == "auth.v2.file"
    assert identity.email_masked == "a***@example.com"
    assert identity.org_id == "org_A"
    assert identity.user_id == "user_01ALICE"
    assert identity.expires_at and identity.expires_at > 0
    assert identity.region is None


@pytest.mark.parametrize(
    "extra",
    [{"whoami": {"region": "eu", "isOnPrem": False}}, {"region": "eu"}],
    ids=["whoami.region", "old top-level region"],
)
def test_eu_accounts_are_recognised(home, extra):
    write_keyfile_store(home, login_data(FAR, **extra))
    login = open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert login.identity.region == "eu"


def test_api_key_wins_and_is_never_refreshed(home):
    write_keyfile_store(home, login_data(FAR))
    login = open_login(far_settings(home), env={API_KEY_ENV: " fk-abc \n"})
    assert login.bearer() == "fk-abc"
    assert login.identity.source == API_KEY_ENV
    assert login.renew_after_refusal() is False


def test_keyring_store_comes_before_the_key_file_store(home):
    keyring_key = os.urandom(32)
    in_keyring = login_data(FAR)
    write_envelope_store(home / "auth.v2.keyring", in_keyring, keyring_key)
    write_keyfile_store(home, login_data(FAR))
    lookup = keyring_holding({"auth-encryption-key": keyring_key})
    login = open_login(far_settings(home), env={}, key_lookup=lookup)
    assert login.identity.source == "auth.v2.keyring"
    assert login.bearer() == in_keyring["access_token"]


def test_an_unreachable_keyring_falls_back_to_a_newer_file_store_with_a_warning(home, caplog):
    write_envelope_store(home / "auth.v2.keyring", login_data(FAR), os.urandom(32))
    in_file = login_data(FAR)
    write_keyfile_store(home, in_file)
    os.utime(home / "auth.v2.keyring", (1_700_000_000, 1_700_000_000))
    with caplog.at_level(logging.DEBUG):
        login = open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert login.bearer() == in_file["access_token"]
    # A fallback is never silent: one warning names both stores.
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert "auth.v2.keyring" in warning and "using the newer" in warning and "auth.v2.file" in warning


def test_an_unreachable_keyring_never_falls_back_to_an_older_file_store(home):
    # droid moved its login to the keyring and stopped renewing auth.v2.file: that file
    # may hold another login, or a refresh token long rotated away.
    write_keyfile_store(home, login_data(FAR))
    write_envelope_store(home / "auth.v2.keyring", login_data(FAR), os.urandom(32))
    os.utime(home / "auth.v2.file", (1_700_000_000, 1_700_000_000))
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    with pytest.raises(AuthError) as err:
        open_login(far_settings(home), env={}, key_lookup=no_keyring)
    message = str(err.value)
    assert "auth.v2.keyring" in message and "older" in message and "FACTORY_API_KEY" in message
    assert "\n" not in message and not err.value.permanent
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


def test_with_droids_keyring_switched_off_the_file_store_is_used_quietly(home, caplog):
    write_keyfile_store(home, in_file := login_data(FAR))
    write_envelope_store(home / "auth.v2.keyring", login_data(FAR), os.urandom(32))
    os.utime(home / "auth.v2.file", (1_700_000_000, 1_700_000_000))
    with caplog.at_level(logging.DEBUG):
        login = open_login(far_settings(home), env={"FACTORY_DISABLE_KEYRING": "1"})
    assert login.bearer() == in_file["access_token"]
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


def test_keyring_with_another_key_falls_through(home):
    write_envelope_store(home / "auth.v2.keyring", login_data(FAR), os.urandom(32))
    write_keyfile_store(home, login_data(FAR))
    lookup = keyring_holding({"auth-encryption-key": os.urandom(32)})
    assert open_login(far_settings(home), env={}, key_lookup=lookup).identity.source == ("auth.v2.file")


def test_disabling_droids_keyring_ignores_the_keyring_store(home):
    key = os.urandom(32)
    write_envelope_store(home / "auth.v2.keyring", login_data(FAR), key)
    write_keyfile_store(home, login_data(FAR))
    lookup = keyring_holding({"auth-encryption-key": key})
    login = open_login(far_settings(home), env={"FACTORY_DISABLE_KEYRING": "1"}, key_lookup=lookup)
    assert login.identity.source == "auth.v2.file"


def test_macos_login_keychain_store(home):
    key = os.urandom(32)
    write_envelope_store(home / "auth.v2.loginkeychain", login_data(FAR), key)
    lookup = keyring_holding({"auth-encryption-key-security-cli": key})
    assert find_stored_login(home, lookup, platform="darwin").source == "auth.v2.loginkeychain"
    assert find_stored_login(home, lookup, platform="linux") is None


@pytest.mark.parametrize("variant", ["plain", "hex", "envelope"])
def test_legacy_auth_encrypted_best_effort(home, variant):
    data = login_data(FAR)
    raw = json.dumps(data).encode()
    if variant == "plain":
        (home / "auth.encrypted").write_bytes(raw)
    elif variant == "hex":
        (home / "auth.encrypted").write_text(raw.hex())
    else:
        key = os.urandom(32)
        (home / "auth.encrypted").write_text(encrypt_envelope(raw, key))
        (home / "auth.v2.key").write_text(base64.b64encode(key).decode())
    login = open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert login.identity.source == "auth.encrypted"
    assert login.bearer() == data["access_token"]


def test_unreadable_legacy_file_falls_through_to_auth_json(home):
    (home / "auth.encrypted").write_text("garbage")
    data = login_data(FAR)
    (home / "auth.json").write_text(json.dumps(data))
    login = open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert (login.identity.source, login.bearer()) == ("auth.json", data["access_token"])


def test_no_login_anywhere(home):
    with pytest.raises(AuthError, match="no Factory login found") as err:
        open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert not err.value.permanent


def test_the_store_is_where_droid_reads_it():
    # FACTORY_HOME_OVERRIDE replaces the home directory, as droid 0.225.2 reads it.
    assert (
        str(default_factory_home({"FACTORY_HOME_OVERRIDE": "/srv/f", "HOME": "/home/u"})) == "/srv/f/.factory"
    )
    assert str(default_factory_home({"HOME": "/home/u"})) == "/home/u/.factory"


# -- broken key-file stores: a clear error naming the file, nothing overwritten ---------


def break_by_truncation(home):
    text = (home / "auth.v2.file").read_text()
    (home / "auth.v2.file").write_text(text[: len(text) // 2])


def break_by_corruption(home):
    iv, tag, ciphertext = (home / "auth.v2.file").read_text().split(":")
    flipped = bytearray(base64.b64decode(ciphertext))
    flipped[0] ^= 1
    (home / "auth.v2.file").write_text(f"{iv}:{tag}:{base64.b64encode(flipped).decode()}")


def break_by_other_key(home):
    (home / "auth.v2.key").write_text(base64.b64encode(os.urandom(32)).decode())


def break_by_short_key(home):
    (home / "auth.v2.key").write_text(base64.b64encode(os.urandom(16)).decode())


def break_by_losing_the_key(home):
    (home / "auth.v2.key").unlink()


@pytest.mark.parametrize(
    "breakage, names",
    [
        (break_by_truncation, "auth.v2.file"),
        (break_by_corruption, "auth.v2.file"),
        (break_by_other_key, "auth.v2.file"),
        (break_by_short_key, "auth.v2.key"),
        (break_by_losing_the_key, "auth.v2.key"),
    ],
)
def test_broken_key_file_store_is_a_clear_auth_error(home, breakage, names):
    write_keyfile_store(home, login_data(FAR))
    breakage(home)
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    with pytest.raises(AuthError) as err:
        open_login(far_settings(home), env={}, key_lookup=no_keyring)
    assert str(home / names) in str(err.value)
    assert "droid" in str(err.value)
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


# -- writing back -----------------------------------------------------------------------


def test_write_back_keeps_every_field_same_key_new_iv_mode_0600(home):
    data = login_data(FAR, whoami={"region": "eu", "isOnPrem": False}, future_field=[1, 2])
    key = write_keyfile_store(home, data)
    before = (home / "auth.v2.file").read_text()
    stored = find_stored_login(home, None)
    new = {**stored.data, "access_token": "new", "refresh_token": "rt2"}
    staged = stage(reserve(stored), encode(stored.codec, new), stored.refresh_token)
    written = install(stored, staged, stored.refresh_token, deadline=None)
    after = (home / "auth.v2.file").read_text()
    assert after.split(":")[0] != before.split(":")[0]  # a new iv
    assert json.loads(decrypt_envelope(after, key)) == {
        **data,
        "access_token": "new",
        "refresh_token": "rt2",
    }
    assert written.codec == Envelope(key)
    assert stat.S_IMODE(os.stat(home / "auth.v2.file").st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["auth.v2.file", "auth.v2.key"]


def test_the_short_import_of_aes_gcm_is_cryptographys_public_class():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from alerter.credentials.store import aes_gcm

    assert aes_gcm() is AESGCM
