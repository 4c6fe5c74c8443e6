"""Channels fail one at a time, say why, are told apart by name, and a redirect is no delivery."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerter.notify import carries_credentials
from tests.conftest import API_KEY, python_path, same_clock, usage_body
from tests.standins import JsonReceiver, Reply, StandIn, free_port

M = 1_000_000
ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Pa55word"


def one_line(err: str, text: str) -> str:
    lines = [line for line in err.splitlines() if text in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def second():
    server = JsonReceiver().start()
    yield server
    server.stop()


# --- an unusable URL is skipped; the others deliver --------------------------------------------


def test_an_unusable_url_is_skipped_and_the_other_channels_still_deliver(app, receiver):
    app.write_config(
        {
            "notify": {
                "channels": [
                    {"name": "broken", "url": f"nosuchservice://{SECRET}/abc"},
                    {"name": "team", "url": receiver.apprise_url},
                ]
            }
        }
    )
    app.serve_usage(usage_body(16 * M))
    result = app("run")
    assert result.code == 2, result.err
    assert len(receiver.messages()) == 1 and "80%" in receiver.messages()[0]["title"]
    assert "channel broken: skipped: apprise cannot use it" in one_line(result.err, "channel broken")
    last = result.err.splitlines()[-1]
    assert last.startswith("factory-usage-alert: error: cannot use broken (skipped; the other channels")
    assert SECRET not in result.err + result.out
    # Every run names it until it is fixed; the channel that works is not repeated.
    again = app("run")
    assert again.code == 2 and "channel broken: skipped" in again.err
    assert len(receiver.messages()) == 1


def test_the_not_working_notice_reaches_the_channels_that_work(app, receiver):
    app.write_config(
        {
            "monitor": {"failures_before_alert": 1},
            "notify": {"urls": ["json://a.example,json://b.example", receiver.apprise_url]},
        }
    )
    app.serve_usage(Reply(404, {"error": "gone"}))
    app.factory.route("GET", "/api/billing/limits", Reply(404, {"error": "gone"}))
    result = app("run")
    assert result.code == 4, result.err  # the read's own error comes first
    assert [m["title"] for m in receiver.messages()] == ["factory-usage-alert: usage alerts are not working"]
    assert "holds 2 URLs joined by a comma" in one_line(result.err, "skipped")


def test_a_comma_joined_url_is_rejected_by_check_config_and_skipped_by_run(app, receiver, second):
    joined = f"{receiver.apprise_url},{second.apprise_url}"
    app.write_config({"notify": {"urls": [joined]}})
    check = app("check-config")
    assert check.code == 2
    problem = one_line(check.err, "joined")
    assert "At 'notify': json://" in problem
    assert "holds 2 URLs joined by a comma, semicolon or space; give each its own entry" in problem
    app.serve_usage(usage_body(16 * M))
    result = app("run")
    assert result.code == 2, result.err
    assert receiver.calls() == [] and second.calls() == []  # neither half, so nothing re-sent later
    app.write_config({"notify": {"urls": [receiver.apprise_url, second.apprise_url]}})
    assert app("check-config").code == 0
    assert app("run").code == 0
    assert len(receiver.messages()) == 1 and len(second.messages()) == 1


# --- a failed delivery says why ----------------------------------------------------------------


def test_an_http_error_is_named_with_its_status(app, receiver):
    app.write_config({"notify": {"channels": [{"name": "team", "url": receiver.apprise_url}]}})
    receiver.fail = True
    app.serve_usage(usage_body(16 * M))
    result = app("run")
    assert result.code == 5
    assert one_line(result.err, "channel team").endswith("channel team: not delivered: HTTP 500")


def test_a_refused_connection_is_named(app):
    url = f"json://user:{SECRET}@127.0.0.1:{free_port()}/notify"
    app.write_config({"notify": {"channels": [{"name": "pager", "url": url}]}})
    result = app("test-notify")
    assert result.code == 5
    assert "FAILED pager" in result.out
    assert one_line(result.err, "channel pager").endswith("channel pager: not delivered: connection refused")
    assert SECRET not in result.err + result.out


def run_with_loopback_resolver(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Run the job with ``config`` and ``args`` in a private mount namespace whose
    /etc/resolv.conf names 127.0.0.1: a name lookup fails at once, nothing leaves the
    machine. Skip where such a namespace cannot be had."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to give the job a private /etc/resolv.conf")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({"state_file": str(tmp_path / "state" / "state.json"), **config}))
    file.chmod(0o600)
    probe = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "mount", "--bind", str(resolv), "/etc/resolv.conf"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot use a private mount namespace here: {probe.stderr.decode().strip()}")
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", ""),
        "FACTORY_API_KEY": API_KEY,
        "PYTHONPATH": python_path(str(ROOT)),
        **same_clock(),
    }
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    command = [sys.executable, "-m", "alerter", *args, "--config", str(file)]
    return subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", str(resolv), *command],
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_a_dns_failure_is_named(tmp_path):
    config = {"notify": {"channels": [{"name": "hook", "url": f"json://{SECRET}.invalid/notify"}]}}
    proc = run_with_loopback_resolver(tmp_path, config, "test-notify")
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    assert one_line(err, "channel hook").endswith(
        "channel hook: not delivered: DNS lookup failed (check the host name)"
    )
    assert SECRET not in err + proc.stdout.decode()


def test_a_factory_host_that_is_not_found_names_the_setting_to_check(tmp_path):
    config = {"factory": {"base_url": "https://factory-stand-in.invalid", "deadline_seconds": 2}}
    proc = run_with_loopback_resolver(tmp_path, config, "run")
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    line = one_line(err, "will retry next run")
    assert "unreachable (name not found" in line
    assert "check the network and factory.base_url (https://factory-stand-in.invalid)" in line, line
    assert API_KEY not in err + proc.stdout.decode()


# --- a redirect is not a delivery ----------------------------------------------------------------


@pytest.fixture
def redirecting():
    """A receiver that answers every notification with 302 to a page that answers 200."""
    server = StandIn().start()
    server.route("POST", "/notify", Reply(302, b"", {"Location": "/landing"}))
    server.route("GET", "/landing", Reply(200, {"ok": True}))
    yield server
    server.stop()


@pytest.mark.parametrize("follow", ["", "?redirect=yes"], ids=["default", "url-asks-to-follow"])
def test_a_redirect_is_not_a_delivery(app, redirecting, follow):
    host, port = redirecting.server.server_address[:2]
    app.write_config(
        {"notify": {"channels": [{"name": "hook", "url": f"json://{host}:{port}/notify{follow}"}]}}
    )
    app.serve_usage(usage_body(16 * M))
    result = app("run")
    assert result.code == 5, result.err
    line = one_line(result.err, "channel hook")
    assert "not delivered: the receiver redirected it (HTTP 302); a redirect is not a delivery" in line
    # Not recorded: the next run tries again.
    assert app("run").code == 5
    assert len(redirecting.calls("POST", "/notify")) == 2


# --- names ----------------------------------------------------------------------------------------


def test_channels_are_shown_by_name_and_alike_ones_are_told_apart(app, receiver, second):
    app.write_config(
        {
            "notify": {
                "urls": [
                    f"json://user:{SECRET}@127.0.0.1:{receiver.server.server_address[1]}/notify",
                    f"json://user:{SECRET}@127.0.0.1:{receiver.server.server_address[1]}/other",
                ],
                "channels": [
                    {"name": "on-call pager", "url": second.apprise_url, "severities": ["critical"]}
                ],
            }
        }
    )
    result = app("check-config")
    assert result.code == 0, result.err
    assert "json://***@127.0.0.1:" in result.out
    assert "(notify.urls[0])" in result.out and "(notify.urls[1])" in result.out
    assert "  on-call pager: json://127.0.0.1:" in result.out
    receiver.fail = True
    app.serve_usage(usage_body(16 * M))
    run = app("run")
    assert run.code == 5
    assert "/*** (notify.urls[0]): not delivered: HTTP 500" in run.err
    assert "(notify.urls[1]): not delivered: HTTP 404" in run.err
    assert SECRET not in run.err + run.out


def test_a_named_channel_whose_url_token_is_rotated_is_not_told_again(app, receiver):
    port = receiver.server.server_address[1]

    def team(token: str) -> dict:
        return {
            "notify": {"channels": [{"name": "team", "url": f"json://user:{token}@127.0.0.1:{port}/notify"}]}
        }

    app.write_config(team("old-token"))
    app.serve_usage(usage_body(17 * M))  # 85 %
    assert app("run").code == 0
    assert len(receiver.messages()) == 1
    app.write_config(team("rotated-token"))  # the same channel, a new token in its URL
    assert app("run").code == 0
    assert len(receiver.messages()) == 1, "the 80 % alert was sent again after the token was rotated"
    app.serve_usage(usage_body(19 * M + 400_000))  # 97 %: the next alert, once, through the new URL
    assert app("run").code == 0
    assert [m["title"].split(" at ")[-1][:3] for m in receiver.messages()] == ["85%", "97%"]


def test_a_state_that_knew_a_named_channel_by_its_url_is_honoured(app, receiver):
    """Earlier releases keyed every channel by its URL's digest, named or not: a state they
    wrote is read with the named channel's deliveries under its name, so nothing repeats."""
    from alerter.config import channel_id

    app.serve_usage(usage_body(17 * M))
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})  # keyed by the URL, as before
    assert app("run").code == 0
    assert channel_id(receiver.apprise_url) in app.state_path.read_text()
    app.write_config({"notify": {"channels": [{"name": "team", "url": receiver.apprise_url}]}})
    assert app("run").code == 0
    assert len(receiver.messages()) == 1, "the 80 % alert was sent again once the channel had a name"
    assert channel_id(receiver.apprise_url) not in app.state_path.read_text()


def test_two_channels_with_one_name_are_a_config_problem(app, receiver, second):
    app.write_config(
        {
            "notify": {
                "channels": [
                    {"name": "team", "url": receiver.apprise_url},
                    {"name": "team", "url": second.apprise_url},
                ]
            }
        }
    )
    result = app("check-config")
    assert result.code == 2
    assert "At 'notify.channels[1].name': 'team' names another channel too" in result.err


# --- the permission warning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("json://127.0.0.1:8080/notify", False),
        ("ntfys://ntfy.sh/my-factory-alerts", False),
        ("mailto://localhost:25?smtp=127.0.0.1&from=a@example.com&to=b@example.com", False),
        ("dbus://", False),
        ("json://user:pw@127.0.0.1/notify", True),
        ("json://127.0.0.1/notify?+X-Api-Key=abc", True),
        ("ntfys://ntfy.sh/topic?token=tk_abcdef", True),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", True),
        ("tgram://123456789:abcdefg_hijklmnop/12315544", True),
        ("mailtos://user:app-password@gmail.com?to=me@example.com", True),
        ("discord://1234/abcdef", True),
        ("nosuchservice://whatever", True),  # cannot tell: assume it does
    ],
)
def test_which_urls_carry_credentials(url, secret):
    assert carries_credentials(url) is secret


def test_the_permission_warning_is_for_credentials_and_said_once_per_change(app, receiver):
    warning = "is readable by other users and holds credentials"
    plain = {"notify": {"urls": [receiver.apprise_url]}}
    app.write_config(plain).chmod(0o644)
    app.serve_usage(usage_body(1 * M))
    assert warning not in app("run").err  # no credentials: nothing to say

    port = receiver.server.server_address[1]
    app.write_config(
        {"notify": {"channels": [{"name": "team", "url": f"json://u:{SECRET}@127.0.0.1:{port}/n"}]}}
    )
    app.config_path.chmod(0o644)
    first = app("run")
    assert warning in one_line(first.err, warning) and "in team;" in first.err
    assert SECRET not in first.err
    assert warning not in app("run").err  # cron would mail it once, not every 15 minutes
    assert warning in app("check-config").err  # asked for: always said
    app.config_path.chmod(0o640)  # a change of the file: said again, once
    assert warning in app("run").err
    assert warning not in app("run").err
    app.config_path.chmod(0o600)
    assert warning not in app("run").err + app("check-config").err
