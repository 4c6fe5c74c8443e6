"""Pinging a healthchecks.io-style dead man's switch around each run.

``<url>/start`` when a run starts, ``<url>`` when it succeeds, ``<url>/fail`` when it
fails. The monitoring service then notices what the job cannot report itself: a timer
that stopped firing, a machine that is off, a run that hangs. A ping that fails is logged
as a warning and never changes the run's outcome or hides its own error.
"""

from __future__ import annotations

import logging

import requests

TIMEOUT_SECONDS = 5.0
EVENTS = {"start": "/start", "success": "", "fail": "/fail"}
log = logging.getLogger(__name__)


def ping_url(base_url: str, event: str) -> str:
    """Given the configured check URL and an event (start, success, fail), return the URL to GET."""
    return base_url.rstrip("/") + EVENTS[event]


def ping(base_url: str | None, event: str, timeout: float = TIMEOUT_SECONDS) -> bool:
    """Given the check URL (or None) and an event, GET the ping URL; return True when it was accepted.

    Never raises: the job's own outcome matters more than its monitoring.
    """
    if not base_url:
        return False
    url = ping_url(base_url, event)
    try:
        response = requests.get(url, timeout=timeout, headers={"User-Agent": "factory-usage-alert"})
    except Exception as exc:  # any failure of the ping is only worth a warning
        log.warning("healthcheck %s ping to %s failed (%s)", event, masked(base_url), type(exc).__name__)
        return False
    if response.status_code >= 400:
        log.warning(
            "healthcheck %s ping to %s answered HTTP %d", event, masked(base_url), response.status_code
        )
        return False
    log.debug("healthcheck %s ping sent", event)
    return True


def masked(url: str) -> str:
    """Given a check URL, return it without its path: the check's UUID or ping key is what
    lets anyone ping it, so only ``https://hc-ping.com/***`` is ever shown."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/***"
