"""Pinging a healthchecks.io-style dead man's switch around each run.

``<url>/start`` when a run starts, ``<url>`` when it succeeds, ``<url>/fail`` when it
fails. The monitoring service then notices what the job cannot report itself: a timer
that stopped firing, a machine that is off, a run that hangs. A ping that fails is logged
as a warning and never changes the run's outcome or hides its own error.
"""

from __future__ import annotations

import logging

import requests

from alerter.redact import mask_url

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
    """Given a check URL, return it safe to show: ``https://hc-ping.com/***``.

    The check's UUID or ping key in the path is what lets anyone ping it; see
    :func:`alerter.redact.mask_url`, the one masker for every URL the job shows.
    """
    return mask_url(url)
