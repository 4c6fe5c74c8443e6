"""Desktop channels: accepted by the URL check, `check-config` says what each lacks, and a
notification reaches a real (private) D-Bus session bus."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from alerter import notify
from tests.conftest import API_KEY, python_path, same_clock, usage_body
from tests.credentials.secret_service import BUS_CONFIG, _read_line, _stop

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
HANG_SECONDS = 60  # a hang detector, never a measurement


def check(app, url: str) -> str:
    app.write_config({"notify": {"channels": [{"name": "desk", "url": url}]}})
    result = app("check-config")
    assert result.code == 2, result.out
    assert "not an apprise URL" not in result.err
    lines = [line for line in result.err.splitlines() if "desk:" in line]
    assert len(lines) == 1, result.err
    return lines[0]


@pytest.mark.parametrize("scheme", ["dbus", "kde"])
def test_dbus_without_dbus_python_names_the_module_and_the_extra(app, monkeypatch, scheme):
    real = notify._has_module
    monkeypatch.setattr(notify, "_has_module", lambda name: False if name == "dbus" else real(name))
    line = check(app, f"{scheme}://")
    assert f"{scheme}:// needs the dbus-python module: `pipx inject factory-usage-alert dbus-python`" in line
    # The package is installed from its source tree: no hint may send anyone to PyPI for it.
    assert "factory-usage-alert[desktop]" not in line


def test_dbus_without_a_session_bus_says_so(app, monkeypatch):
    if not notify._has_module("dbus"):  # that is what it would say first
        monkeypatch.setattr(notify, "_has_module", lambda name: True)
    app.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    app.env["XDG_RUNTIME_DIR"] = str(app.home)  # holds no bus socket
    line = check(app, "dbus://")
    assert "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set" in line


def test_gnome_names_what_it_lacks(app):
    if notify._has_module("gi") and notify._has_typelib("Notify", "0.7"):
        pytest.skip("PyGObject and libnotify's typelib are installed: gnome:// lacks nothing here")
    line = check(app, "gnome://")
    assert "gnome:// needs the PyGObject module" in line or "gnome:// needs libnotify's introspection" in line


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="these are the platforms they work on")
@pytest.mark.parametrize(("url", "says"), [("macosx://", "only on macOS"), ("windows://", "only on Windows")])
def test_other_platforms_desktop_urls_say_where_they_work(app, url, says):
    assert says in check(app, url)


def test_desktop_urls_pass_the_syntax_check_of_the_config(app):
    app.write_config({"notify": {"urls": ["dbus://", "gnome://", "kde://", "macosx://", "windows://"]}})
    result = app("run", "--dry-run")
    assert "not an apprise URL" not in result.err


# --- a real notification on a private session bus ----------------------------------------------


def desktop_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "D-Bus desktop notifications are tested on Linux"
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon not found (Debian package dbus-daemon; run .ci/install-test-deps.sh as root)"
    if not notify._has_module("dbus"):
        return (
            "dbus-python is not installed in this environment "
            "(pip install '.[desktop]' after apt install libdbus-1-dev libglib2.0-dev pkg-config)"
        )
    if not notify._has_module("jeepney"):
        return "jeepney (a dependency of keyring on Linux) is missing: it plays the notification server"
    return None


INTROSPECTION = """<node>
 <interface name="org.freedesktop.Notifications">
  <method name="Notify">
   <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
   <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
   <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/>
  </method>
 </interface>
</node>"""


class NotificationServer:
    """org.freedesktop.Notifications on a bus, as a desktop's notification daemon would be:
    it answers Notify with an id and keeps what it was sent."""

    def __init__(self, address: str) -> None:
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        self.received: list[tuple] = []
        self.connection = open_dbus_connection(bus=address)
        reply = self.connection.send_and_get_reply(message_bus.RequestName("org.freedesktop.Notifications"))
        assert reply.body == (1,), reply.body  # the primary owner
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from jeepney import HeaderFields, MessageType, new_error, new_method_return

        while not self.stopping:
            try:
                message = self.connection.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:  # the connection was closed: stop
                return
            if message.header.message_type != MessageType.method_call:
                continue
            member = message.header.fields.get(HeaderFields.member)
            if member == "Introspect":  # dbus-python asks for the signatures first
                self.connection.send(new_method_return(message, "s", (INTROSPECTION,)))
            elif member == "Notify":
                self.received.append(message.body)
                self.connection.send(new_method_return(message, "u", (len(self.received),)))
            else:
                self.connection.send(new_error(message, "org.freedesktop.DBus.Error.UnknownMethod"))

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.connection.close()


@contextlib.contextmanager
def private_session_bus() -> Iterator[str]:
    """Start a dbus-daemon listening on a socket in a private directory; yield its address."""
    root = Path(tempfile.mkdtemp(prefix="nb-"))  # short: a socket path stays under 108 bytes
    config = root / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=root / "bus"), encoding="utf-8")
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield _read_line(bus.stdout, HANG_SECONDS)
    finally:
        _stop(bus)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(desktop_unavailable() is not None, reason=str(desktop_unavailable()))
@pytest.mark.parametrize("scheme", ["dbus", "kde"])
def test_a_desktop_notification_reaches_the_session_bus(tmp_path, app, scheme):
    app.serve_usage(usage_body(16 * M))
    config = tmp_path / "desktop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "factory": {"base_url": app.factory.url, "timeout_seconds": 5},
                "state_file": str(tmp_path / "state" / "state.json"),
                "notify": {"channels": [{"name": "desktop", "url": f"{scheme}://"}]},
            }
        )
    )
    config.chmod(0o600)
    with private_session_bus() as address:
        server = NotificationServer(address)
        try:
            env = {
                "HOME": str(tmp_path),
                "PATH": os.environ.get("PATH", ""),
                "DBUS_SESSION_BUS_ADDRESS": address,
                "FACTORY_API_KEY": API_KEY,
                "PYTHONPATH": python_path(str(ROOT)),
                **same_clock(),
            }

            def command(*args: str) -> subprocess.CompletedProcess:
                argv = [sys.executable, "-m", "alerter", *args, "--config", str(config)]
                return subprocess.run(argv, env=env, capture_output=True, timeout=HANG_SECONDS)

            checked = command("check-config")
            assert checked.returncode == 0, checked.stderr.decode()
            assert f"  desktop: {scheme}://" in checked.stdout.decode()
            tested = command("test-notify")
            assert tested.returncode == 0, tested.stderr.decode()
            assert "ok     desktop" in tested.stdout.decode()
            ran = command("run")
            assert ran.returncode == 0, ran.stderr.decode()
            assert 'sent "Factory standard at 80% (past 80%)" to desktop' in ran.stdout.decode()
        finally:
            server.stop()
    titles = [body[3] for body in server.received]  # Notify(app, id, icon, summary, body, ...)
    assert titles == ["factory-usage-alert: test notification", "Factory standard at 80% (past 80%)"]
    assert "16M of 20M tokens" in server.received[1][4]
