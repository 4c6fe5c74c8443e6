"""Real local servers that play Factory's API and receive notifications.

Everything listens on 127.0.0.1 on a free port and records what arrived, so tests assert
on real HTTP requests and real deliveries rather than on mocks.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the stand-in answers: a status, a body (JSON-encoded unless bytes), headers."""

    status: int = 200
    body: Any = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


Route = Callable[[Recorded], Reply]


class StandIn:
    """An HTTP server on 127.0.0.1 whose answers are set per (method, path)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route | Reply] = {}
        self.requests: list[Recorded] = []
        self._cond = threading.Condition()
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # keep-alive clients must not hold up teardown
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, reply: Route | Reply) -> None:
        self.routes[(method, path)] = reply

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._cond:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Wait until at least ``count`` requests arrived; return them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def _answer(self, rec: Recorded) -> Reply:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()
        route = self.routes.get((rec.method, rec.path))
        if route is None:
            return Reply(404, {"error": "not found"})
        return route(rec) if callable(route) else route

    def _handler_class(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urlparse(self.path)
                rec = Recorded(
                    self.command,
                    parsed.path,
                    {k: v[0] for k, v in parse_qs(parsed.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                reply = standin._answer(rec)
                if reply.delay:
                    time.sleep(reply.delay)  # simulates a slow server
                if isinstance(reply.body, bytes):
                    data, ctype = reply.body, "text/html"
                elif reply.body is None:
                    data, ctype = b"", "application/json"
                else:
                    data, ctype = json.dumps(reply.body).encode(), "application/json"
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": ctype, **reply.headers}
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting (timeout tests)

            do_GET = do_POST = do_PUT = _serve

        return Handler


class JsonReceiver(StandIn):
    """Receives apprise ``json://`` notifications; ``fail`` makes it answer 500."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.route("POST", "/notify", self._receive)

    def _receive(self, rec: Recorded) -> Reply:
        return Reply(500, {"error": "down"}) if self.fail else Reply(200, {"ok": True})

    @property
    def apprise_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"json://{host}:{port}/notify"

    def messages(self) -> list[dict]:
        """Return the notifications that were accepted (answered 200)."""
        if self.fail:
            return []
        return [r.json() for r in self.calls("POST", "/notify")]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpReceiver:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's API
                import email

                receiver.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def apprise_url(self) -> str:
        return (
            f"mailto://localhost:{self.port}?smtp=127.0.0.1&mode=insecure"
            "&from=alerts@example.com&to=lead@example.com"
        )


def self_signed_cert(directory) -> tuple[str, str]:
    """Write a certificate for 127.0.0.1 and its key; return (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory stand-in")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


class TlsStandIn(StandIn):
    """The same stand-in, speaking HTTPS with a self-signed certificate."""

    def __init__(self, directory) -> None:
        import ssl

        super().__init__()
        self.cert, key = self_signed_cert(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://")
