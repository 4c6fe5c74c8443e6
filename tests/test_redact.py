"""Masking URLs and redacting server text: no secret survives, whatever shape it hides in."""

from __future__ import annotations

import base64
import json
import re
import string
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from alerter import healthcheck
from alerter.redact import HOST_SCHEMES, certain_host, is_loopback_url, mask_url, redact

SAFE = string.ascii_letters + string.digits
# What people put in passwords, tokens and paths without percent-encoding them.
SECRET_CHARS = SAFE + "/?#@:._-~!$&'()+,;=%"
HOSTS = [
    "example.com",
    "hooks.example.org:8443",
    "127.0.0.1:8080",
    "[::1]:9000",
    "localhost",
    "smtp.gmail.com",
]
SCHEMES = ["https", "http", "json", "jsons", "mailtos", "form", "xml", "slack", "tgram", "ntfys", "discord"]
TAILS = ["", "/", "/hook", "/notify?to=ops@example.com", "?to=a@b.co#x", "#frag", "?smtp=mail.example.com"]
SHAPES = [
    "{scheme}://{user}:{secret}@{host}{tail}",  # a password
    "{scheme}://{secret}@{host}{tail}",  # a token as the user
    "{scheme}://{user}:{secret}@{host}/{user}@example.com",  # apprise's mailto target in the path
    "{scheme}://{host}/{secret}",  # a ping key or hook token in the path
    "{scheme}://{host}/hook?token={secret}",
    "{scheme}://{host}/p#{secret}",
]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("slack://TokenA/TokenB/TokenC/#alerts", "slack://***"),
        ("tgram://123456:ABCdef/chat", "tgram://***"),
        ("https://hc-ping.com/0b3c-secret-uuid", "https://hc-ping.com/***"),
        ("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080/***"),
        ("json://127.0.0.1:8080", "json://127.0.0.1:8080"),
        ("https://api.factory.ai/", "https://api.factory.ai/"),
        ("mailtos://user:secret@gmail.com", "mailtos://***@gmail.com"),
        ("json://bob:pw@[::1]:80/notify", "json://***@[::1]:80/***"),
        # A password holding / ? # or @: the host is not certain, so only the scheme is shown.
        ("mailtos://user:pa/ss@gmail.com", "mailtos://***"),
        ("json://u:p?x#y@host/path", "json://***"),
        ("json://u:12/34@host/path", "json://***"),
        ("mailtos://user:secret@gmail.com?to=x@y.z", "mailtos://***"),
        ("https://u:p@ss@example.com/x", "https://***@example.com/***"),
        ("api.factory.ai", "***"),
        ("not a url at all", "***"),
        ("1http://host/secret", "***"),
    ],
)
def test_mask_url_shows_the_scheme_and_only_a_certain_host(url, shown):
    assert mask_url(url) == shown
    assert healthcheck.masked(url) == shown  # one masker for every URL the job shows


def test_loopback_means_a_certain_loopback_host():
    for url in ("http://127.0.0.1:8080", "http://127.9.9.9/x", "http://localhost", "http://[::1]:1/"):
        assert is_loopback_url(url), url
    for url in (
        "http://127.0.0.1@evil.example",  # the host is evil.example
        "http://evil.example#@127.0.0.1",  # ambiguous: not certain to be loopback
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://10.0.0.1",
        "http://[::2]",
    ):
        assert not is_loopback_url(url), url


@st.composite
def urls_with_a_secret(draw) -> tuple[str, str, str, str]:
    """Return (scheme, host, secret, url) with the secret placed in one of many shapes."""
    scheme = draw(st.sampled_from(SCHEMES))
    host = draw(st.sampled_from(HOSTS))
    secret = draw(st.text(alphabet=SECRET_CHARS, min_size=6, max_size=24))
    user = draw(st.text(alphabet=SAFE, min_size=1, max_size=8))
    shapes = SHAPES if scheme in HOST_SCHEMES else [*SHAPES, "{scheme}://{secret}/{user}"]
    shape = draw(st.sampled_from(shapes))
    tail = draw(st.sampled_from(TAILS))
    url = shape.format(scheme=scheme, user=user, secret=secret, host=host, tail=tail)
    # The secret must not be made of what may be shown anyway (the scheme, the host).
    assume(secret not in f"{scheme}://***@{host}/***")
    return scheme, host, secret, url


@settings(max_examples=400, deadline=None)
@given(urls_with_a_secret())
def test_a_masked_url_holds_nothing_but_its_scheme_and_host(case):
    scheme, host, secret, url = case
    shown = mask_url(url)
    assert secret not in shown
    allowed = rf"{re.escape(scheme)}://(\*\*\*|(\*\*\*@)?{re.escape(host)}(/\*\*\*|/)?)"
    assert re.fullmatch(allowed, shown), (url, shown)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(HOST_SCHEMES)),
    st.sampled_from(HOSTS),
    st.text(alphabet=SAFE + "._-~!$&'()*+,;=", min_size=1, max_size=16),
    st.sampled_from(["", "/hook", "/a/b?x=1#f"]),
)
def test_with_a_plain_password_the_host_is_shown(scheme, host, password, tail):
    url = f"{scheme}://user:{password}@{host}{tail}"
    assert certain_host(url) == host
    assert mask_url(url).startswith(f"{scheme}://***@{host}")


# --- redact ----------------------------------------------------------------------------------

PREFIXES = ["", "error: ", "Invalid credentials for ", "(", '"', '{"message": "', "token rejected: "]
SUFFIXES = ["", ".", " - log in again", ")", '"', '"}', ","]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jwts(draw) -> tuple[str, list[str]]:
    """Return a JWT and the parts of it that must not be shown."""
    claims = st.dictionaries(
        st.text(max_size=8), st.text(max_size=20) | st.integers() | st.booleans(), max_size=5
    )
    header = {"alg": draw(st.sampled_from(["RS256", "HS256", "none"])), **draw(claims)}
    payload = b64url(json.dumps(draw(claims)).encode())
    signature = b64url(draw(st.binary(max_size=64)))  # empty for an unsigned token
    token = f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"
    return token, [token] + [part for part in (payload, signature) if len(part) >= 8]


def whole(secret: str) -> tuple[str, list[str]]:
    return secret, [secret]


secrets_in_text = st.one_of(
    jwts(),
    st.text(alphabet=SAFE + "_-", min_size=8, max_size=40).map(lambda k: (f"fk-{k}", [k])),
    st.text(alphabet=SAFE + "-._~+/", min_size=8, max_size=40).map(lambda t: (f"Bearer {t}", [t])),
    st.binary(min_size=10, max_size=40).map(lambda b: whole(b.hex())),
    st.binary(min_size=15, max_size=40).map(lambda b: whole(base64.b64encode(b).decode())),
    st.binary(min_size=15, max_size=40).map(lambda b: whole(b64url(b))),
    st.tuples(
        st.text(alphabet=SAFE + "._+-", min_size=6, max_size=20),
        st.sampled_from(["example.com", "factory.ai", "mail.co.uk"]),
    ).map(lambda t: (f"{t[0]}@{t[1]}", [t[0]])),
    urls_with_a_secret().map(lambda case: (case[3], [case[2]])),
)


@settings(max_examples=400, deadline=None)
@given(secrets_in_text, st.sampled_from(PREFIXES), st.sampled_from(SUFFIXES))
def test_redact_removes_every_secret_shape(secret, prefix, suffix):
    text, hidden = secret
    out = redact(prefix + text + suffix)
    for part in hidden:
        assume(part not in prefix + suffix + "***")
        assert part not in out, (text, out)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=10, max_value=300))
def test_redact_gives_one_line_within_the_limit(text, limit):
    out = redact(text, limit)
    assert len(out) <= limit
    assert "\n" not in out and "\r" not in out


@pytest.mark.parametrize(
    "text",
    [
        "internal",
        "subscription_not_found_for_this_organization",
        "Your Basic plan has no premium tokens",
        "Token expired; run droid to log in again",
        "see /api/organization/subscription/usage on notifications.example.internal",
    ],
)
def test_plain_words_and_names_are_kept(text):
    assert redact(text) == text


def test_redact_examples():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert (
        redact(f"token {jwt} expired for alice.smith@example.com") == "token *** expired for ***@example.com"
    )
    assert redact("Authorization: Bearer abc.def rejected") == "Authorization: Bearer *** rejected"
    unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9."  # segments too short to be a "long run"
    assert redact(f"bad token {unsigned}") == "bad token ***"
    assert redact("key fk-abcDEF123 is revoked") == "key fk-*** is revoked"
    assert redact("api_key=s3cr3t&x=1") == "api_key=***&x=1"
    assert (
        redact("hook https://u:p@hooks.example.com/T1/B2 failed")
        == "hook https://***@hooks.example.com/*** failed"
    )
    assert redact("proxy http:/user:pw@host/path") == "proxy ***@host/path"
    assert redact("x" * 500, 50) == "***"  # a 500-letter run is no word
    assert redact("word " * 100, 50).endswith("...") and len(redact("word " * 100, 50)) == 50


def test_a_credential_the_job_sent_is_hidden_in_every_log_line_whatever_its_shape(capsys):
    """The last guard: a sent credential (here a short one no pattern would catch) quoted in
    any log line, by any code, reaches neither stdout nor stderr."""
    import logging

    from alerter.cli import setup_logging
    from alerter.redact import remember_sent

    remember_sent("Xq7pw")
    setup_logging(0, False, {})
    logging.getLogger("alerter.test").info("the peer said %s", "bad: Xq7pw")
    logging.getLogger("alerter.test").warning("the peer said Xq7pw again")
    out, err = capsys.readouterr()
    assert "the peer said bad: ***" in out and "the peer said *** again" in err
    assert "Xq7pw" not in out + err


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda s: quote(s, safe=""), id="percent-encoded"),
        pytest.param(lambda s: quote(s, safe="").replace("%2F", "%2f"), id="percent-encoded-lower-hex"),
        pytest.param(lambda s: quote_plus(s), id="form-encoded"),
        pytest.param(lambda s: f"{s[:9]}\n    {s[9:]}", id="wrapped-across-lines"),
    ],
)
def test_a_sent_credential_echoed_in_another_shape_is_hidden(shape):
    """A proxy quoting the form body or URL it got shows the secret percent-encoded; an
    error page wraps it across lines: neither shape may bring it back, in pieces or whole."""
    from alerter.redact import hide_sent, remember_sent

    secret = "Qz/9 k+Wm=ab"  # short pieces, no run a pattern would catch
    remember_sent(secret)
    echoed = f"invalid_grant: refresh {shape(secret)} is not valid"
    for shown in (redact(echoed), hide_sent(echoed)):
        assert " ".join(shown.split()) == "invalid_grant: refresh *** is not valid", shown
