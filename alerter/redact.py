"""Keeping secrets out of anything a person or a file will see.

Two pure functions: :func:`mask_url` shows a URL as little more than its scheme (an apprise
URL, a healthcheck URL or a Factory base URL may carry a password, a token in its path or
a ping key), and :func:`redact` strips whatever looks like a credential from free text
that came from elsewhere, such as an error message in Factory's answer, before it reaches
stderr, the state file or a notification.

Both prefer showing too little over showing a secret: users write passwords holding
``/``, ``?``, ``#`` and ``@`` without percent-encoding them, so a URL's host is shown only
when no reading of the URL could make it part of a password.
"""

from __future__ import annotations

import functools
import ipaddress
import re

HIDDEN = "***"

# Schemes whose host is where the message goes (a web hook, a mail server, a check
# service) rather than a token: for these the host is worth showing. For the other
# apprise services (slack://TokenA/TokenB, tgram://bottoken/chat, ...) the "host" is
# usually a credential, so only the scheme is shown.
HOST_SCHEMES = frozenset(
    {"http", "https", "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos"}
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")


def _split(url: str) -> tuple[str, str] | None:
    """Given a URL, return (scheme, everything after ``://``), or None if it has no scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    return scheme, rest


def certain_host(url: str) -> str | None:
    """Given a URL, return its ``host[:port]`` when no reading of the URL disagrees, else None.

    RFC 3986 ends the authority at the first ``/``, ``?`` or ``#``, but a password written
    without percent-encoding may hold those characters (``mailtos://me:pa/ss@gmail.com``).
    Any ``@`` after that point means the userinfo might reach up to it, so what looks like
    the host might be part of a password: the host is then uncertain. An ill-formed host is
    uncertain too.
    """
    parts = _split(url)
    if parts is None:
        return None
    rest = parts[1]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    if "@" in rest[end:]:
        return None
    host = rest[:end].rpartition("@")[2]
    return host if _HOST.fullmatch(host) else None


def mask_url(url: str) -> str:
    """Given a URL, return a form of it that is safe to show.

    ``https://hc-ping.com/***`` or ``mailtos://***@gmail.com`` for schemes whose host is
    not a secret and is certain (see :func:`certain_host`); ``slack://***`` otherwise; and
    ``***`` for text that is not a URL at all. Userinfo, path, query and fragment are never
    shown, only marked by ``***`` where they were.
    """
    parts = _split(url.strip())
    if parts is None:
        return HIDDEN
    scheme, rest = parts
    host = certain_host(url.strip()) if scheme.lower() in HOST_SCHEMES else None
    if host is None:
        return f"{scheme}://{HIDDEN}"
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    userinfo = f"{HIDDEN}@" if "@" in rest[:end] else ""
    after = rest[end:]
    tail = after if after in ("", "/") else f"/{HIDDEN}"
    return f"{scheme}://{userinfo}{host}{tail}"


def is_loopback_url(url: str) -> bool:
    """Given a URL, return True when its host is certainly loopback (127.0.0.0/8, ::1, localhost)."""
    host = certain_host(url)
    if host is None:
        return False
    if host.startswith("["):
        name = host[1 : host.index("]")]
    else:
        name = host.rsplit(":", 1)[0] if ":" in host else host
    if name.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --- free text -----------------------------------------------------------------------------

DEFAULT_LIMIT = 200
_MAX_INPUT = 20_000  # a larger text is cut (at white space) before it is searched

# Each pattern may start only where a run of its own characters starts (the look-behinds),
# so a long run that does not match costs one scan rather than one scan per character.
# Whatever precedes ``://`` is taken as the scheme; mask_url hides all of an invalid one.
_URL_SOURCE = r"(?<![A-Za-z0-9+.-])[A-Za-z0-9+.-]*://\S*"
# ``user:password@host`` outside a URL, or in one with a broken scheme (``http:/u:p@h``);
# a masked URL (which starts with its scheme) is left alone.
_USERINFO_SOURCE = r"(?<!\S)(?![A-Za-z][A-Za-z0-9+.-]*://)[^\s:]*:\S*@"
_BEARER_SOURCE = (r"\b(Bearer)\s+[^\s,;\"']+", re.IGNORECASE)
# "Basic" is also a plan's name: only a word that looks like base64 after it is hidden.
_BASIC_SOURCE = r"\b(Basic)\s+([A-Za-z0-9+/]{6,}=*)"
_ASSIGNED_SOURCE = (
    r"\b((?:api[_-]?key|access[_-]?token|refresh[_-]?token|id[_-]?token|token|secret|password"
    r"|passwd|pwd|authorization|cookie)[\"']?\s*[=:]\s*[\"']?)"
    # ``Authorization: Bearer ***`` keeps its scheme: the token is hidden already.
    r"(?!(?:Bearer|Basic)\s)[^\s,;\"'&}]+",
    re.IGNORECASE,
)
_LOCAL = r"A-Za-z0-9._%+'!#$&*=^`{|}~-"
_EMAIL_SOURCE = rf"(?<![{_LOCAL}])[{_LOCAL}]+@(?=(?:[A-Za-z0-9-]+\.)+[A-Za-z]{{2,}})"
# A JWT's header is JSON, so its base64url starts with "eyJ"; other dotted triples are
# taken for tokens only when they look like one (not ``notifications.example.internal``).
_JWT_SOURCE = r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"
_DOTTED_SOURCE = r"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9_-]{8,}\.){2}[A-Za-z0-9_-]{8,}"
_FACTORY_KEY_SOURCE = r"(?<![A-Za-z0-9_-])fk-[A-Za-z0-9_-]+"
_RUN_SOURCE = r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{20,}"


# Words of letters (lower, UPPER, Capitalized or camelCase) joined by _ - / . and the like
# are names such as ``subscription_not_found`` or ``/api/billing/limits``, not keys.
_WORD = r"(?:[A-Z]?[a-z]+(?:[A-Z][a-z]+)*|[A-Z]+)"
_NAME_SOURCE = rf"[._/+=-]*{_WORD}(?:[._/+=-]+{_WORD})+[._/+=-]*"


@functools.cache
def _compiled(name: str) -> re.Pattern[str]:
    """Compile a free-text pattern the first time it is needed: only runs that have an
    error to report pay for them."""
    source = globals()[f"{name}_SOURCE"]
    return re.compile(*source) if isinstance(source, tuple) else re.compile(source)


def _token_like(run: str) -> bool:
    # A long run is a key, hash or base64 unless it reads as joined words: no digits and at
    # least one joiner (a 20-letter run without one may well be a key).
    return _compiled("_NAME").fullmatch(run) is None


def _base64_like(word: str) -> bool:
    # base64 of "user:password" has digits, padding or an upper case letter inside; a
    # plain word ("Basic plan", "Basic Usage") has none of them.
    return any(c.isdigit() or c in "+/=" for c in word) or any(c.isupper() for c in word[1:])


# The secrets this process has sent (see alerter.http.request): a peer that echoes one, in
# whatever shape and however short, must not get it into stderr or the state file.
_SENT: set[str] = set()
_SHORTEST_SENT = 4  # "abc" is no secret worth hiding everywhere it occurs


def remember_sent(secret: str) -> None:
    """Given a credential this process sends (a token, a key, a password), make
    :func:`redact` hide it wherever a peer quotes it, whatever it looks like."""
    secret = secret.strip()
    if len(secret) >= _SHORTEST_SENT:
        _SENT.add(secret)


def hide_sent(text: str) -> str:
    """Given text the job is about to show or keep (a log line, the error line, the reason
    in the state), return it with every credential this process sent replaced by ``***``.

    Whatever shape a peer gives it back in: as it was sent, percent-encoded (a proxy that
    quotes the form body or the URL it got, ``%2F`` or ``%2f``), or cut across lines (an
    error page wrapped at 76 columns). Only the secrets themselves are replaced, so paths
    and names stay readable: this is the last guard at every way out, behind
    :func:`redact` on each text a peer sent.
    """
    if not _SENT:
        return text
    return _sent_pattern(frozenset(_SENT)).sub(HIDDEN, text)


@functools.lru_cache(maxsize=4)
def _sent_pattern(sent: frozenset[str]) -> re.Pattern[str]:
    """One pattern for every secret sent, the longest first, each in any of its shapes."""
    return re.compile("|".join(_any_shape(s) for s in sorted(sent, key=len, reverse=True)))


def _any_shape(secret: str) -> str:
    # Each character as itself or percent-encoded (UTF-8, either case of hex; a space
    # also as "+"), white space allowed between any two of them.
    chars = []
    for c in secret:
        encoded = "".join(f"%(?i:{b:02x})" for b in c.encode("utf-8"))
        plus = "|\\+" if c == " " else ""
        chars.append(f"(?:{re.escape(c)}|{encoded}{plus})")
    return r"\s*".join(chars)


def redact(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """Given text from outside (an error message in an answer), return it on one line with
    URLs masked and anything token-like replaced by ``***``, at most ``limit`` characters.

    Every text a peer sent passes here before it is quoted. Replaced: every credential
    this process sent (see :func:`remember_sent`); URLs' userinfo, paths and queries (see
    :func:`mask_url`); ``user:pass@``;
    ``Bearer ...`` and ``Basic ...`` credentials; ``token=...`` and the like; e-mail local
    parts; JWTs; ``fk-...`` keys; and runs of 20 or more hex/base64/base64url characters
    unless they read as joined words (``subscription_not_found_for_this_org``).
    """
    if len(text) > _MAX_INPUT:
        # Cut at white space, so that no secret is cut into a piece too short to be recognized.
        words = text[:_MAX_INPUT].rsplit(None, 1)
        text = words[0] if len(words) == 2 else ""
    text = hide_sent(text)
    text = " ".join(text.split())
    text = _compiled("_URL").sub(lambda m: mask_url(m.group(0)), text)
    text = _compiled("_USERINFO").sub(f"{HIDDEN}@", text)
    text = _compiled("_BEARER").sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
    text = _compiled("_BASIC").sub(
        lambda m: f"Basic {HIDDEN}" if _base64_like(m.group(2)) else m.group(0), text
    )
    text = _compiled("_ASSIGNED").sub(lambda m: m.group(1) + HIDDEN, text)
    text = _compiled("_EMAIL").sub(f"{HIDDEN}@", text)
    text = _compiled("_JWT").sub(HIDDEN, text)
    text = _compiled("_DOTTED").sub(lambda m: HIDDEN if _token_like(m.group(0)) else m.group(0), text)
    text = _compiled("_FACTORY_KEY").sub(f"fk-{HIDDEN}", text)
    text = _compiled("_RUN").sub(lambda m: HIDDEN if _token_like(m.group(0)) else m.group(0), text)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text
