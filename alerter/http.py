"""Bounded exchanges with peers: every request ends by a wall-clock deadline, with a capped body.

``requests`` bounds each socket read, never a whole request: a peer that sends one byte a
second, in its headers or its body, keeps a plain ``requests.get`` alive for ever. So each
exchange runs in a worker thread that the caller stops waiting for at the deadline
(:func:`call_within`), and the body is read in chunks, counted after decompression and
refused past a cap (:func:`request`). The job is a one-shot process: an abandoned worker
ends with it.

Errors name the peer as the caller describes it (``peer=``), never the URL: paths and
queries may carry secrets (a healthcheck key, an apprise token).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from requests.structures import CaseInsensitiveDict

from alerter.redact import remember_sent
from alerter.stopping import leave_signals_to_the_main_thread

MAX_ANSWER_BYTES = 1 << 20  # a real Factory answer is about 2 KB
MAX_JSON_DEPTH = 32  # real answers nest 3 or 4 levels
CHUNK_BYTES = 8192  # small reads keep a compressed answer's expansion per read small
T = TypeVar("T")


class PeerError(Exception):
    """A peer did not give a usable answer; ``str()`` is one line naming the peer, never a URL."""

    def __init__(self, peer: str, problem: str) -> None:
        super().__init__(f"{peer} {problem}")
        self.peer = peer
        self.problem = problem


class PeerTimeout(PeerError):
    """The peer's answer (connect, headers or body) did not come in time."""


class PeerUnreachable(PeerError):
    """The peer could not be reached (refused, no route, DNS, TLS); ``reason`` is short text."""

    def __init__(self, peer: str, reason: str, *, tls: bool = False) -> None:
        super().__init__(peer, f"unreachable ({reason})")
        self.reason = reason
        self.tls = tls


class AnswerTooLarge(PeerError):
    """The answer's body, decompressed, is larger than the cap."""


class UnusableJson(ValueError):
    """The body is not JSON, or nests deeper than any real answer; ``str()`` says which."""


@dataclass(frozen=True)
class Answer:
    """A complete answer: status, headers (case-insensitive), body (decompressed, capped)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self, max_depth: int = MAX_JSON_DEPTH) -> Any:
        """Return the body parsed as JSON. Raise UnusableJson when it is not JSON or is too deep."""
        if not self.body.strip():
            raise UnusableJson("not JSON (empty)")
        try:
            value = json.loads(self.body)
        except RecursionError:  # the C parser's own guard, long before our walk could run
            raise UnusableJson(f"nested deeper than {max_depth} levels") from None
        except ValueError:  # includes undecodable bytes and over-long integers
            raise UnusableJson("not JSON") from None
        if _deeper_than(value, max_depth):
            raise UnusableJson(f"nested deeper than {max_depth} levels")
        return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Given parsed JSON, return True when containers nest more than ``limit`` levels.

    Walks with an explicit stack: recursion is what a hostile answer would exhaust.
    """
    if not isinstance(value, (dict, list)):
        return False
    if limit < 1:
        return True
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def retry_after(answer: Answer | requests.Response) -> float | None:
    """Given an answer, return its Retry-After in seconds when it is a plain number, else None."""
    try:
        return max(0.0, float(answer.headers.get("Retry-After", "")))
    except ValueError:
        return None


def call_within(deadline: float, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a daemon worker thread; return its result or raise its exception.

    ``deadline`` is a ``time.monotonic()`` value. Raise PeerTimeout naming ``what`` when it
    passes first: the worker is abandoned, which is safe in a one-shot process.
    """
    if deadline - time.monotonic() <= 0:
        raise PeerTimeout(what, "timed out (no time was left before the deadline)")
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        leave_signals_to_the_main_thread()
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller as is
            outcome["error"] = exc
        finally:
            done.set()

    # In the caller's context: what the worker logs is named as the caller's lines are.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), name=f"peer: {what}", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise PeerTimeout(what, "timed out (no complete answer within the deadline)")
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome["value"]


def request(
    method: str,
    url: str,
    *,
    peer: str,
    deadline: float,
    session: requests.Session | None = None,
    max_bytes: int = MAX_ANSWER_BYTES,
    read_timeout: float | None = None,
    answer_by: float | None = None,
    **kwargs: Any,
) -> Answer:
    """Send one request and return the complete Answer, all of it by ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value bounding connect, headers and body
    together; ``read_timeout`` (when given) also bounds each wait for data. With
    ``answer_by`` (later than ``deadline``), only connecting must be done by ``deadline``:
    once the request may have been sent, its answer is awaited until ``answer_by``, for a
    request whose mere arrival changes the peer (a spent refresh token). Redirects are
    never followed. Raise PeerTimeout, PeerUnreachable, AnswerTooLarge (more than
    ``max_bytes`` after decompression) or PeerError (a broken answer), each naming ``peer``.
    """
    if kwargs.get("verify") is False:
        raise ValueError("TLS verification is never turned off")
    kwargs["allow_redirects"] = False  # a redirect would re-send a token to wherever it points
    _remember_credentials(url, kwargs)
    last = deadline if answer_by is None else max(deadline, answer_by)

    def exchange() -> Answer:
        now = time.monotonic()
        remaining, answer_remaining = deadline - now, last - now
        wait = remaining if read_timeout is None else min(read_timeout, remaining)
        read_wait = answer_remaining if read_timeout is None else min(read_timeout, answer_remaining)
        if wait <= 0:
            raise PeerTimeout(peer, "timed out (no time was left before the deadline)")
        sender = session if session is not None else requests.Session()
        try:
            with sender.request(method, url, stream=True, timeout=(wait, read_wait), **kwargs) as response:
                body = _read_body(response, peer, last, max_bytes)
                return Answer(response.status_code, CaseInsensitiveDict(response.headers), body)
        except requests.exceptions.RequestException as exc:
            connecting = isinstance(exc, requests.exceptions.ConnectTimeout)
            raise _peer_error(exc, peer, wait if connecting else read_wait) from None
        finally:
            if session is None:
                sender.close()

    return call_within(last, peer, exchange)


# Form fields that carry a credential (the refresh token sent to WorkOS, a client secret).
_SECRET_FIELD = ("token", "secret", "password", "key", "code")


def _remember_credentials(url: str, kwargs: Mapping[str, Any]) -> None:
    """Every credential leaves the process here: note each one, so that ``redact`` hides
    it in whatever a peer answers (a WorkOS or a proxy that echoes the refresh token in its
    ``error``) before that text reaches stderr, the state file or a notification."""
    from urllib.parse import unquote, urlsplit

    for name, value in (kwargs.get("headers") or {}).items():
        if name.lower() in ("authorization", "proxy-authorization") and isinstance(value, str):
            remember_sent(value.partition(" ")[2] or value)
    data = kwargs.get("data")
    if isinstance(data, Mapping):
        for name, value in data.items():
            if isinstance(value, str) and any(word in str(name).lower() for word in _SECRET_FIELD):
                remember_sent(value)
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            remember_sent(unquote(password))


def _read_body(response: requests.Response, peer: str, deadline: float, max_bytes: int) -> bytes:
    """Read the decompressed body in chunks, checking the deadline and the cap after each."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(peer, f"answered more than {max_bytes} bytes; refusing it")
        chunks.append(chunk)
        if time.monotonic() > deadline:  # the worker stops itself on a trickling body
            raise PeerTimeout(peer, "timed out (no complete answer within the deadline)")
    return b"".join(chunks)


def _peer_error(exc: requests.exceptions.RequestException, peer: str, wait: float) -> PeerError:
    """Given a requests exception, return the PeerError to raise; never quotes it (URLs)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return PeerUnreachable(peer, "TLS verification failed", tls=True)
    if isinstance(exc, requests.exceptions.Timeout):
        return PeerTimeout(peer, f"timed out (no data for {wait:.3g} s)")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return PeerError(peer, "sent a body that could not be decompressed")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return PeerError(peer, "broke off its answer")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc).lower()
        if "timed out" in text:  # requests reports a silent body as a ConnectionError
            return PeerTimeout(peer, f"timed out (no data for {wait:.3g} s)")
        if "refused" in text:
            reason = "connection refused"
        elif "name" in text and ("resolve" in text or "known" in text):
            reason = "name not found"
        elif "aborted" in text or "reset" in text or "closed" in text:
            reason = "connection closed"
        else:
            reason = "connection failed"
        return PeerUnreachable(peer, reason)
    return PeerUnreachable(peer, type(exc).__name__)
