"""Builders for droid stores and a WorkOS stand-in on 127.0.0.1, shared by the credential tests."""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt

from alerter.credentials.store import encrypt_envelope

HOUR = 3600.0
# A token this close to expiry is renewed before use (the job renews within 5 minutes).
SOON = 120.0
DAY = 24 * HOUR


def make_jwt(expires_in: float, email: str = "alice@example.com", org_id: str = "org_A") -> str:
    """Return a WorkOS-like access token expiring ``expires_in`` seconds from now."""
    claims = {
        "sub": "user_01ALICE",
        "email": email,
        "org_id": org_id,
        "iat": int(time.time()),
        "exp": int(time.time() + expires_in),
        "jti": secrets.token_hex(8),  # two tokens minted in the same second still differ
    }
    return jwt.encode(claims, "test-signing-key-not-a-secret-0123456789", algorithm="HS256")


def login_data(expires_in: float = 12 * HOUR, **extra) -> dict:
    """Return droid's decrypted login JSON with a token expiring ``expires_in`` from now."""
    return {
        "access_token": make_jwt(expires_in),
        "refresh_token": f"rt-secret-{secrets.token_hex(12)}",
        "active_organization_id": "org_A",
        **extra,
    }


def write_envelope_store(path: Path, data: dict, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(encrypt_envelope(json.dumps(data).encode(), key), encoding="utf-8")
    os.chmod(path, 0o600)


def write_keyfile_store(home: Path, data: dict, key: bytes | None = None) -> bytes:
    """Write ``auth.v2.file`` + ``auth.v2.key`` like droid does; return the key."""
    key = key or os.urandom(32)
    home.mkdir(parents=True, exist_ok=True)
    key_path = home / "auth.v2.key"
    key_path.write_text(base64.b64encode(key).decode(), encoding="utf-8")
    os.chmod(key_path, 0o600)
    write_envelope_store(home / "auth.v2.file", data, key)
    return key


def no_keyring(account: str) -> None:
    """A keyring lookup for a machine without one (a cron job's usual case)."""
    return None


def keyring_holding(keys: dict[str, bytes]) -> Callable[[str], str | None]:
    """A keyring lookup that knows the given accounts' keys."""

    def lookup(account: str) -> str | None:
        key = keys.get(account)
        return base64.b64encode(key).decode() if key else None

    return lookup


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true (checked every 10 ms). Fail after ``timeout`` s."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@dataclass
class WorkOSStandIn:
    """A WorkOS ``/authenticate`` endpoint that rotates single-use refresh tokens.

    ``script`` holds the next answers, one per request: ``"ok"``, ``"hang"``,
    ``(status, json_body)``, ``(status, json_body, headers)``, or a function to call before
    answering "ok"; when empty, it answers "ok". A refresh token is accepted once; reusing
    it gets 400 invalid_grant, like WorkOS. ``answer_delay`` (seconds, or a function
    returning them) holds every answer back after the token was rotated, as a slow network
    would: the old token is already spent while the answer is on its way. ``arrived`` holds
    each request's arrival time (:func:`time.monotonic`, the clock the job's deadlines use).
    """

    url: str = ""
    requests: list[dict] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    script: list = field(default_factory=list)
    issued: list[dict] = field(default_factory=list)
    new_token_lifetime: float = 3 * DAY
    spent: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer_delay: float | Callable[[], float] = 0.0

    def accepts(self, refresh_token: str | None) -> bool:
        """True when a renewal with this refresh token would succeed now (it is not spent)."""
        with self.lock:
            return bool(refresh_token) and refresh_token not in self.spent | {"droid-doctor-invalid-probe"}

    def answer(self, form: dict) -> tuple[int, dict | str, dict]:
        with self.lock:
            self.arrived.append(time.monotonic())
            self.requests.append(form)
            step = self.script.pop(0) if self.script else "ok"
            if callable(step):  # something to do to the world while WorkOS answers
                step()
                step = "ok"
            token = form.get("refresh_token", "")
            if step == "ok" and token in self.spent | {"droid-doctor-invalid-probe"}:
                step = (400, {"error": "invalid_grant", "error_description": "Session expired"})
            if step == "ok":
                self.spent.add(token)
                pair = {
                    "access_token": make_jwt(self.new_token_lifetime),
                    "refresh_token": f"rt-secret-{secrets.token_hex(12)}",
                }
                self.issued.append(pair)
                return 200, {**pair, "user": {"id": "user_01ALICE"}, "organization_id": "org_A"}, {}
        if step == "hang":
            self.release.wait(30)
            return 503, {"error": "late"}, {}
        status, body, *headers = step
        return status, body, (headers[0] if headers else {})


def start_workos() -> tuple[WorkOSStandIn, Callable[[], None]]:
    """Start a stand-in on 127.0.0.1; return it and the function that stops it."""
    stand_in = WorkOSStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length).decode()
            form = dict(urllib.parse.parse_qsl(body))
            form["_path"] = self.path
            form["_content_type"] = self.headers.get("Content-Type", "")
            status, payload, headers = stand_in.answer(form)
            delay = stand_in.answer_delay() if callable(stand_in.answer_delay) else stand_in.answer_delay
            if delay > 0:
                stand_in.release.wait(delay)  # cut short when the stand-in stops
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass  # the client gave up waiting (timeout tests)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/user_management"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()

    def stop() -> None:
        stand_in.release.set()
        server.shutdown()
        server.server_close()

    return stand_in, stop
