"""Real local servers that play Factory's API and receive notifications.

Everything listens on 127.0.0.1 on a free port and records what arrived, so tests assert
on real HTTP requests and real deliveries rather than on mocks.
"""

from __future__ import annotations

import contextlib
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
        self._lock = threading.Lock()  # requests arrive on the server's threads
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
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def _answer(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
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


class RawPeer:
    """A TCP server on 127.0.0.1 that answers below HTTP's manners, for peers that misbehave.

    Each connection has its request head read, then ``script(conn, stopping)`` writes what
    it likes (nothing, a trickle, a flood) until it returns or ``stopping`` is set.
    ``stop()`` sets it and closes every connection, so a client left waiting sees the end.
    """

    def __init__(self, script: Callable[[socket.socket, threading.Event], None]) -> None:
        self.script = script
        self.stopping = threading.Event()
        self.heads: list[bytes] = []  # the request line and headers of each request
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # the accept loop looks at `stopping` this often
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> RawPeer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(5)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)  # a blocked write looks at `stopping` this often
        try:
            head = b""
            while b"\r\n\r\n" not in head and not self.stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                head += data
            with self._lock:
                self.heads.append(head.split(b"\r\n\r\n", 1)[0])
            self.script(conn, self.stopping)
        except OSError:
            pass  # the client went away: that is its right
        finally:
            conn.close()


def send_all(conn: socket.socket, data: bytes, stopping: threading.Event) -> None:
    """Write ``data`` even when the client reads slowly; give up once ``stopping`` is set."""
    view = memoryview(data)
    while view and not stopping.is_set():
        try:
            view = view[conn.send(view) :]
        except TimeoutError:
            continue


def silent(conn: socket.socket, stopping: threading.Event) -> None:
    """Accept the request and never answer."""
    stopping.wait()


def trickle(prefix: bytes, interval: float = 1.0) -> Callable[[socket.socket, threading.Event], None]:
    """Return a script that sends ``prefix`` at once, then one byte every ``interval`` for ever."""

    def script(conn: socket.socket, stopping: threading.Event) -> None:
        send_all(conn, prefix, stopping)
        while not stopping.wait(interval):
            send_all(conn, b"a", stopping)

    return script


SLOW_HEADERS = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
SLOW_BODY = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")


def flood(size: int, gzip: bool = False) -> Callable[[socket.socket, threading.Event], None]:
    """Return a script that answers 200 with a JSON-looking body of ``size`` bytes, made on
    the fly; with ``gzip`` the body is sent gzip-compressed (``size`` is then the inflated
    size, for a few tens of KB on the wire)."""
    import zlib

    block = b"[" + b"0," * 32767 + b"0]"  # 64 KiB that compress well
    if gzip:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [packer.compress(block) for _ in range(size // len(block))]
        wire = b"".join(parts) + packer.flush()
    else:
        wire = b""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if gzip:
        head += b"Content-Encoding: gzip\r\n"
    length = len(wire) if gzip else len(block) * (size // len(block))
    head += b"Content-Length: %d\r\n\r\n" % length

    def script(conn: socket.socket, stopping: threading.Event) -> None:
        send_all(conn, head, stopping)
        if gzip:
            send_all(conn, wire, stopping)
            return
        for _ in range(size // len(block)):
            send_all(conn, block, stopping)

    return script
