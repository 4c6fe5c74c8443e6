"""Sending notifications through apprise, one channel at a time.

apprise is imported only when something is to be sent or checked: loading its plugins
costs about a quarter of a second, more than the rest of a quiet run. Each channel gets
its own ``Apprise`` object so that its outcome is known on its own and a failed channel
can be retried without repeating the others.

A channel is given until the caller's deadline (:func:`alerter.http.call_within`):
apprise's own timeouts bound each socket read, not a peer that answers a byte a second.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from alerter import http
from alerter.config import Channel
from alerter.errors import ConfigError

log = logging.getLogger(__name__)

NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure"}


def channels_digest(channels: Iterable[Channel]) -> str:
    """Given the channels, return a digest that changes whenever any URL changes."""
    joined = "\n".join(sorted(ch.url or "" for ch in channels))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def validate_channels(channels: Iterable[Channel]) -> None:
    """Parse every channel's URL with apprise. Raise ConfigError naming each bad one."""
    channels = [ch for ch in channels if ch.url]
    if not channels:
        return
    apprise = _apprise()
    bad = [ch.label for ch in channels if not apprise.Apprise().add(ch.url)]
    if bad:
        raise ConfigError(
            "notify: apprise cannot use "
            + ", ".join(bad)
            + "; check the URL against apprise's list of services",
            problems=[f"At 'notify': apprise cannot use {label}" for label in bad],
        )


def send(
    channel: Channel,
    title: str,
    body: str,
    severity: str,
    out: TextIO | None = None,
    deadline: float | None = None,
) -> bool:
    """Given a channel, a message and a deadline (a ``time.monotonic()`` value; None gives
    a minute), deliver it; return True when it was delivered by the deadline."""
    if channel.url is None:
        stream = out or sys.stdout
        stream.write(f"{title}\n{body}\n\n")
        stream.flush()
        return True
    apprise = _apprise()
    target = _target(apprise)
    if not target.add(channel.url):
        log.error("channel %s: apprise cannot use its URL", channel.label)
        return False
    deadline = time.monotonic() + 60.0 if deadline is None else deadline
    notify_type = NOTIFY_TYPES.get(severity, "info")
    try:
        result = http.call_within(
            deadline,
            f"channel {channel.label}",
            lambda: target.notify(title=title, body=body, notify_type=notify_type),
        )
    except http.PeerTimeout:
        log.error("channel %s: timed out (not delivered within the deadline)", channel.label)
        return False
    except Exception as exc:  # a plugin failing in an unexpected way is still one failed channel
        log.error("channel %s: sending failed (%s)", channel.label, type(exc).__name__)
        return False
    # apprise 2.x returns an AppriseResult: test its truth value, never `is False`.
    if not result:
        log.error("channel %s: the notification was not delivered", channel.label)
        return False
    return True


def _apprise():
    import apprise

    return apprise


def _target(apprise):
    """Return an empty Apprise object that sends on the calling thread.

    apprise 2.x gives each service a time limit by running it on its own thread pool; those
    threads are not daemons, so one stuck on a trickling peer would keep the finished job's
    process alive. With the limit off the service runs on call_within's daemon worker,
    which the deadline abandons. (Older apprise has no such limit and already does this.)
    """
    if hasattr(apprise.AppriseAsset, "_service_timeout"):
        return apprise.Apprise(asset=apprise.AppriseAsset(service_timeout=0))
    return apprise.Apprise()
