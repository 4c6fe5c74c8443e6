"""Small facts about HTTP answers shared by the Factory and WorkOS clients."""

from __future__ import annotations

import requests


def retry_after(response: requests.Response) -> float | None:
    """Given an answer, return its Retry-After in seconds when it is a plain number, else None."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None
