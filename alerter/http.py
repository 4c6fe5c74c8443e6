"""Small facts about HTTP answers shared by the Factory and WorkOS clients.

(Interim version: the bounded request is being written on another branch.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

MAX_ANSWER_BYTES = 1 << 20
T = TypeVar("T")


class PeerError(Exception):
    """A peer could not be used; the message names it and never a secret."""


class PeerTimeout(PeerError):
    """The deadline passed before the peer's answer was complete."""


class PeerUnreachable(PeerError):
    """The connection failed."""


class AnswerTooLarge(PeerError):
    """The answer is larger than any real one."""


class UnusableJson(ValueError):
    """The body is not JSON, or is nested deeper than any real answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self, max_depth: int = 32) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise UnusableJson("not JSON") from None


def call_within(deadline: float, what: str, fn: Callable[[], T]) -> T:
    result: list = []
    error: list = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001
            error.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise PeerTimeout(f"{what} did not answer within the run's deadline")
    if error:
        raise error[0]
    return result[0]


def request(
    method: str,
    url: str,
    *,
    peer: str,
    deadline: float,
    session: requests.Session | None = None,
    max_bytes: int = MAX_ANSWER_BYTES,
    read_timeout: float | None = None,
    **kwargs: Any,
) -> Answer:
    def go() -> Answer:
        remaining = max(0.01, deadline - time.monotonic())
        sender = session or requests
        try:
            response = sender.request(
                method, url, stream=True, timeout=(remaining, remaining), allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            raise PeerTimeout(f"{peer} did not answer") from None
        except requests.RequestException as exc:
            raise PeerUnreachable(f"{peer} unreachable ({type(exc).__name__})") from None
        body = b""
        for chunk in response.iter_content(65536):
            body += chunk
            if len(body) > max_bytes:
                raise AnswerTooLarge(f"{peer} answered more than {max_bytes} bytes")
        return Answer(response.status_code, response.headers, body)

    return call_within(deadline, peer, go)


def retry_after(response: requests.Response | Answer) -> float | None:
    """Given an answer, return its Retry-After in seconds when it is a plain number, else None."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None
