"""Sending notifications through apprise, one channel at a time.

apprise is imported only when something is to be sent or checked: loading its plugins
costs about a quarter of a second, more than the rest of a quiet run. Each channel gets
its own ``Apprise`` object so that its outcome is known on its own and a failed channel
can be retried without repeating the others; a channel whose URL cannot be used is
skipped and named, the others still deliver.

A channel is given until the caller's deadline (:func:`alerter.http.call_within`):
apprise's own timeouts bound each socket read, not a peer that answers a byte a second.

Why a channel failed is read from what apprise and urllib3 log on the sending thread
(the HTTP status of each answer, the text of a connection error) and reduced to a few
fixed words ("HTTP 500", "connection refused", ...): their own text may hold the URL,
so it is never shown. A redirect (3xx) is never a delivery: the receiver did not take
the message where the URL points, and following it would forward the body (and any
credentials in it) elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TextIO
from urllib.parse import parse_qsl

from alerter import http
from alerter.config import Channel
from alerter.errors import ConfigError

log = logging.getLogger(__name__)

NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure"}


def install_hint(module: str) -> str:
    """Given a module's PyPI name, return how to add it to the job's environment.

    factory-usage-alert is installed from its source tree (it is not on PyPI, so
    ``pipx install 'factory-usage-alert[desktop]'`` finds nothing): add the module to the
    pipx environment, or reinstall from the checkout with the extra, as the README says.
    """
    fresh = "`pipx install --force '.[desktop]'`"
    return f"`pipx inject factory-usage-alert {module}` (or, in the checkout, {fresh})"


# apprise's desktop services, by what they need: dbus-python (dbus, kde, qt), PyGObject
# with libnotify (gnome), PyGObject's Gio (glib, gio), macOS, Windows with pywin32.
DBUS_SCHEMES = frozenset({"dbus", "kde", "qt"})
GI_SCHEMES = frozenset({"gnome", "glib", "gio"})
DESKTOP_SCHEMES = DBUS_SCHEMES | GI_SCHEMES | {"macosx", "windows"}

# Where apprise would split one entry into several URLs: a comma, semicolon or white
# space followed by another scheme (its own rule for a list of URLs in one string).
_JOINED = re.compile(r"[\s,;]+[A-Za-z0-9]{1,32}://")
# Query parameters that hold a credential whatever the service: a header (``+Name=``) or a
# name that says so.
_SECRET_PARAM = re.compile(r"^\+|token|key|secret|pass|auth|sig", re.IGNORECASE)


def channels_digest(channels: Iterable[Channel]) -> str:
    """Given the channels, return a digest that changes whenever any URL changes."""
    joined = "\n".join(sorted(ch.url or "" for ch in channels))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


# --- can a URL be used? ------------------------------------------------------------------


def scheme_of(url: str) -> str:
    """Given an apprise URL, return its scheme in lower case ('' when it has none)."""
    scheme, sep, _ = url.strip().partition("://")
    return scheme.lower() if sep else ""


def joined_urls(url: str) -> int:
    """Given one entry of the config, return how many URLs apprise would read in it."""
    return 1 + len(_JOINED.findall(url.strip()))


def url_problem(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """Given an apprise URL, return why it cannot be used, or None when it can.

    Without ``env`` only what does not change from one run to the next is checked (the
    URL, the installed modules); with it, also what a desktop channel needs from the
    session it runs in (a D-Bus session bus). The text is safe to show: it never quotes
    the URL.
    """
    count = joined_urls(url)
    if count > 1:
        return (
            f"holds {count} URLs joined by a comma, semicolon or space; "
            "give each its own entry, so that each is delivered and retried on its own"
        )
    scheme = scheme_of(url)
    if scheme in DESKTOP_SCHEMES:
        missing = desktop_problem(scheme, env)
        if missing is not None:
            return missing
    if not _apprise().Apprise().add(url):
        return "apprise cannot use it; check it against apprise's list of services"
    return None


def desktop_problem(scheme: str, env: Mapping[str, str] | None = None) -> str | None:
    """Given a desktop scheme (dbus, gnome, kde, macosx, windows, ...), return what is
    missing for it to work here, or None. ``env`` also checks the session bus."""
    if scheme == "macosx":
        if sys.platform != "darwin":
            return "macosx:// works only on macOS (with terminal-notifier: `brew install terminal-notifier`)"
        return None
    if scheme == "windows":
        if sys.platform != "win32":
            return "windows:// works only on Windows"
        if not _has_module("win32api"):
            return f"windows:// needs the pywin32 module: {install_hint('pywin32')}"
        return None
    if scheme in DBUS_SCHEMES:
        if not _has_module("dbus"):
            return (
                f"{scheme}:// needs the dbus-python module: {install_hint('dbus-python')} (it is compiled "
                "against libdbus: first `apt install libdbus-1-dev libglib2.0-dev pkg-config`)"
            )
        if not _has_module("dbus.mainloop.glib"):
            return f"{scheme}:// needs dbus-python built with its GLib main loop (libglib2.0-dev)"
    elif scheme in GI_SCHEMES:
        if not _has_module("gi"):
            return (
                f"{scheme}:// needs the PyGObject module, best the system's: `apt install python3-gi`, "
                "then, in the checkout, `pipx install --force --system-site-packages .`"
            )
        if scheme == "gnome" and not _has_typelib("Notify", "0.7"):
            return "gnome:// needs libnotify's introspection data: `apt install gir1.2-notify-0.7`"
    if env is not None:
        return session_bus_problem(env)
    return None


def session_bus_problem(env: Mapping[str, str]) -> str | None:
    """Given the environment, return why there is no D-Bus session bus to reach, or None.

    libdbus and GLib look for ``$DBUS_SESSION_BUS_ADDRESS``, then ``$XDG_RUNTIME_DIR/bus``
    (the bus systemd starts for each logged-in user).
    """
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return None
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            if stat.S_ISSOCK(os.stat(os.path.join(runtime, "bus")).st_mode):
                return None
        except OSError:
            pass
    return (
        "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set (nor $XDG_RUNTIME_DIR/bus); "
        "desktop notifications need the job to run in your session (the user timer), not cron "
        "or the system service"
    )


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _has_typelib(namespace: str, version: str) -> bool:
    try:
        import gi

        gi.require_version(namespace, version)
    except (ImportError, ValueError, AttributeError):
        return False
    return True


def unusable_channels(channels: Iterable[Channel], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Given the channels, return {channel id: why it cannot be used} for those that cannot."""
    return {ch.id: why for ch in channels if ch.url and (why := url_problem(ch.url, env)) is not None}


def validate_channels(channels: Iterable[Channel], env: Mapping[str, str] | None = None) -> None:
    """Check every channel's URL (with ``env``, also what desktop channels need from the
    session). Raise ConfigError naming each unusable one and why."""
    channels = [ch for ch in channels if ch.url]
    if not channels:
        return
    bad = unusable_channels(channels, env)
    if bad:
        labels = [ch.label for ch in channels if ch.id in bad]
        raise ConfigError(
            "notify: cannot use " + ", ".join(labels) + "; see `factory-usage-alert check-config`",
            problems=[f"At 'notify': {ch.label}: {bad[ch.id]}" for ch in channels if ch.id in bad],
        )


def carries_credentials(url: str) -> bool:
    """Given an apprise URL, return True when it holds a credential.

    A credential is what apprise itself hides when it shows the URL privately (a password,
    an API or bot token, a webhook key, ntfy's ``?token=``), a ``user:password@``, a header
    set in the query (``+Name=value``) or a query parameter named like a secret (token,
    key, secret, pass, auth, sig). A URL apprise cannot read is taken to hold one.
    """
    rest = url.strip().partition("://")[2]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if ":" in authority.rpartition("@")[0]:
        return True
    query = rest.partition("?")[2].partition("#")[0]
    if any(_SECRET_PARAM.search(name) for name, _ in parse_qsl(query, keep_blank_values=True)):
        return True
    if scheme_of(url) in DESKTOP_SCHEMES:
        return False  # nothing leaves the machine, and apprise may lack the module to read it
    target = _apprise().Apprise()
    if not target.add(url) or len(target) != 1:
        return True
    service = target[0]
    return service.url(privacy=True) != service.url(privacy=False)


# --- sending -------------------------------------------------------------------------------


def send(
    channel: Channel,
    title: str,
    body: str,
    severity: str,
    out: TextIO | None = None,
    deadline: float | None = None,
) -> bool:
    """Given a channel, a message and a deadline (a ``time.monotonic()`` value; None gives
    a minute), deliver it; return True when it was delivered by the deadline.

    A channel without a URL prints the message on ``out`` (stdout); it is delivered only
    when it was written somewhere: not when stdout is closed, /dev/null or cannot be
    written. Each failure is one line naming the channel and why, never its URL.
    """
    if channel.url is None:
        return _print(channel, title, body, out if out is not None else sys.stdout)
    problem = url_problem(channel.url, os.environ)
    if problem is not None:
        log.error("channel %s: skipped: %s", channel.label, problem)
        return False
    apprise = _apprise()
    target = _target(apprise)
    target.add(channel.url)
    deadline = time.monotonic() + 60.0 if deadline is None else deadline
    notify_type = NOTIFY_TYPES.get(severity, "info")

    def notify() -> tuple[bool, _Heard]:
        with _listening() as heard:
            delivered = bool(target.notify(title=title, body=body, notify_type=notify_type))
        return delivered, heard

    try:
        # apprise 2.x returns an AppriseResult: its truth value, never `is False`.
        delivered, heard = http.call_within(deadline, f"channel {channel.label}", notify)
    except http.PeerTimeout:
        log.error("channel %s: not delivered: timed out (no answer within the deadline)", channel.label)
        return False
    except Exception as exc:  # a plugin failing in an unexpected way is still one failed channel
        log.error("channel %s: not delivered: %s", channel.label, type(exc).__name__)
        return False
    redirect = heard.redirect()
    if redirect is not None:
        log.error(
            "channel %s: not delivered: the receiver redirected it (HTTP %d); a redirect is not a "
            "delivery: use the URL it points to",
            channel.label,
            redirect,
        )
        return False
    if not delivered:
        log.error("channel %s: not delivered: %s", channel.label, heard.why())
        return False
    return True


def _print(channel: Channel, title: str, body: str, stream: TextIO | None) -> bool:
    """Write the message on ``stream``; return True only when it went somewhere a person reads."""
    fix = "set a channel under notify: in the config, or let cron mail what the job prints"
    if stream is None:
        log.error("channel %s: not delivered: there is no standard output; %s", channel.label, fix)
        return False
    if _is_null_device(stream):
        log.error("channel %s: not delivered: standard output is /dev/null; %s", channel.label, fix)
        return False
    try:
        stream.write(f"{title}\n{body}\n\n")
        stream.flush()
    except (OSError, ValueError) as exc:  # closed, a broken pipe, a full disk
        why = getattr(exc, "strerror", None) or type(exc).__name__
        log.error("channel %s: not delivered: cannot write to standard output (%s)", channel.label, why)
        return False
    return True


def _is_null_device(stream: TextIO) -> bool:
    try:
        mode = os.fstat(stream.fileno())
        null = os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): it is read
        return False
    return stat.S_ISCHR(mode.st_mode) and mode.st_rdev == null.st_rdev


# --- why a channel failed: what apprise and urllib3 said on the sending thread ----------

_REASONS = (
    (
        (
            "name or service not known",
            "nodename nor servname",
            "temporary failure in name resolution",
            "nameresolutionerror",
            "getaddrinfo failed",
            "no address associated",
            "failed to resolve",
        ),
        "DNS lookup failed (check the host name)",
    ),
    (("connection refused", "errno 111"), "connection refused"),
    (("timed out", "timeout"), "timed out"),
    (("certificate", "ssl", "tls"), "TLS failed (certificate or protocol)"),
    (("dbusexception", "org.freedesktop.dbus.error"), "the D-Bus session bus refused it"),
    (("connection reset", "connection aborted", "remotedisconnected"), "the connection was broken off"),
)
_STATUS_IN_TEXT = re.compile(r"error=(\d{3})\b")
_URLLIB3_RESPONSE = '%s://%s:%s "%s %s %s" %s'  # urllib3's debug line for each answer


class _Heard(logging.Handler):
    """Keeps, in memory only, what apprise and urllib3 log on one thread while it sends."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.statuses: list[int] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return  # another channel's abandoned worker
        try:
            if isinstance(record.msg, str) and record.msg.startswith(_URLLIB3_RESPONSE):
                self.statuses.append(int(record.args[6]))  # type: ignore[index]
            else:
                self.texts.append(record.getMessage())
        except Exception:  # a record that does not read as expected says nothing
            pass

    def redirect(self) -> int | None:
        """Return the status of the first redirect answered, if any."""
        return next((s for s in self.statuses if 300 <= s < 400), None)

    def why(self) -> str:
        """Return, in a few fixed words, why the channel failed (never the logged text)."""
        failed = [s for s in self.statuses if s >= 400]
        if failed:
            return f"HTTP {failed[-1]}"
        text = " ".join(self.texts).lower()
        for markers, reason in _REASONS:
            if any(marker in text for marker in markers):
                return reason
        status = _STATUS_IN_TEXT.search(text)
        if status is not None:
            return f"HTTP {status.group(1)}"
        return "the service did not accept it (apprise gave no reason)"


_LOGGERS = ("apprise", "urllib3", "dbus")  # dbus: dbus-python, under apprise's dbus://
_listeners = 0
_listeners_lock = threading.Lock()
_saved: dict[str, tuple[int, bool]] = {}


class _listening:  # noqa: N801 - used as a context manager, named like one
    """Attach a ``_Heard`` to apprise's and urllib3's loggers for the calling thread.

    Their records hold URLs, so while anyone listens they go only to the listeners (not
    to the root logger or the console); the loggers' levels and propagation are restored
    when the last listener leaves.
    """

    def __enter__(self) -> _Heard:
        global _listeners
        self.heard = _Heard()
        with _listeners_lock:
            if _listeners == 0:
                for name in _LOGGERS:
                    logger = logging.getLogger(name)
                    _saved[name] = (logger.level, logger.propagate)
                    logger.setLevel(logging.DEBUG)
                    logger.propagate = False
            _listeners += 1
            for name in _LOGGERS:
                logging.getLogger(name).addHandler(self.heard)
        return self.heard

    def __exit__(self, *exc: object) -> None:
        global _listeners
        with _listeners_lock:
            for name in _LOGGERS:
                logging.getLogger(name).removeHandler(self.heard)
            _listeners -= 1
            if _listeners == 0:
                for name, (level, propagate) in _saved.items():
                    logger = logging.getLogger(name)
                    logger.setLevel(level)
                    logger.propagate = propagate


def _apprise():
    import apprise

    return apprise


def _target(apprise):
    """Return an empty Apprise object that sends on the calling thread and follows no redirect.

    apprise 2.x gives each service a time limit by running it on its own thread pool; those
    threads are not daemons, so one stuck on a trickling peer would keep the finished job's
    process alive. With the limit off the service runs on call_within's daemon worker,
    which the deadline abandons. (Older apprise has no such limit and already does this.)
    Redirects are refused here where apprise allows it; any redirect seen is a failure
    anyway (see :func:`send`), with older apprise or a URL's own ``redirect=yes``.
    """
    options = {}
    if hasattr(apprise.AppriseAsset, "_service_timeout"):
        options["service_timeout"] = 0
    if hasattr(apprise.AppriseAsset, "http_redirects"):
        options["http_redirects"] = False
    return apprise.Apprise(asset=apprise.AppriseAsset(**options)) if options else apprise.Apprise()
