"""Pinging a healthchecks.io-style dead man's switch around each run.

``<url>/start`` when a run starts, ``<url>`` when it succeeds, ``<url>/fail`` when it
fails. The monitoring service then notices what the job cannot report itself: a timer
that stopped firing, a machine that is off, a run that hangs. A ping that fails is logged
as a warning and never changes the run's outcome or hides its own error.

A ping is bounded in wall-clock time (:mod:`alerter.http`): at most 5 s; the start ping
at most a quarter of what is left of the run, so monitoring never eats the run; the
closing ping at least 2 s even after the run's deadline, so a run that timed out still
reports its failure.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit, urlunsplit

from alerter import http
from alerter.redact import mask_url

TIMEOUT_SECONDS = 5.0
START_SHARE = 0.25  # of what is left of the run
CLOSING_FLOOR_SECONDS = 2.0
EVENTS = {"start": "/start", "success": "", "fail": "/fail"}
log = logging.getLogger(__name__)


def ping_url(base_url: str, event: str) -> str:
    """Given the configured check URL and an event (start, success, fail), return the URL to GET.

    The event goes at the end of the path, before a query (healthchecks.io's
    ``<ping key>/<slug>?create=1``), never after it.
    """
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + EVENTS[event]))


def budget(event: str, deadline: float | None, now: float, timeout: float = TIMEOUT_SECONDS) -> float:
    """Given an event, the run's deadline (monotonic, or None) and the monotonic time now,
    return how many seconds its ping may take."""
    if deadline is None:
        return timeout
    left = deadline - now
    if event == "start":
        return min(timeout, max(0.0, left) * START_SHARE)
    return min(timeout, max(left, CLOSING_FLOOR_SECONDS))


def ping(
    base_url: str | None, event: str, deadline: float | None = None, timeout: float = TIMEOUT_SECONDS
) -> bool:
    """Given the check URL (or None), an event and the run's deadline (a ``time.monotonic()``
    value, or None), GET the ping URL within its budget; return True when it was accepted.

    Never raises: the job's own outcome matters more than its monitoring.
    """
    if not base_url:
        return False
    url = ping_url(base_url, event)
    peer = f"healthcheck {event} ping to {masked(base_url)}"
    now = time.monotonic()
    try:
        answer = http.request(
            "GET",
            url,
            peer=peer,
            deadline=now + budget(event, deadline, now, timeout),
            max_bytes=64 * 1024,  # healthchecks.io answers "OK"
            headers={"User-Agent": "factory-usage-alert"},
        )
    except http.PeerError as exc:
        log.warning("%s", exc)
        return False
    except Exception as exc:  # any failure of the ping is only worth a warning
        log.warning("%s failed (%s)", peer, type(exc).__name__)
        return False
    if answer.status >= 300:  # a redirect is not followed, so the ping did not arrive
        log.warning("%s answered HTTP %d", peer, answer.status)
        return False
    log.debug("healthcheck %s ping sent", event)
    return True


def masked(url: str) -> str:
    """Given a check URL, return it safe to show: ``https://hc-ping.com/***``.

    The check's UUID or ping key in the path is what lets anyone ping it; see
    :func:`alerter.redact.mask_url`, the one masker for every URL the job shows.
    """
    return mask_url(url)
