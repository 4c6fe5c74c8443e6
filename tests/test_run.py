"""The alerting job end to end: stand-in Factory API, real notification receivers."""

from __future__ import annotations

import os
import stat
import time

from tests.conftest import API_KEY, DAY, USAGE_PATH, bucket, usage_body
from tests.standins import Reply

M = 1_000_000


def test_each_threshold_is_announced_once_as_usage_climbs(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    start = time.time() - 5 * DAY
    seen = []
    for used, expected in [(4, None), (10, 50), (12, None), (16, 80), (17, None), (19, 95), (20, 100)]:
        app.serve_usage(usage_body(used * M, start=start))
        result = app("run")
        assert result.code == 0, result.err
        messages = receiver.messages()
        if expected is None:
            assert len(messages) == len(seen)
        else:
            assert len(messages) == len(seen) + 1
            title = messages[-1]["title"]
            assert "standard" in title and f"{expected}%" in title, title
            seen.append(messages[-1])
    assert [m["type"] for m in seen] == ["info", "warning", "warning", "failure"]


def test_several_thresholds_at_once_give_one_notification_naming_the_highest(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(19_400_000, start=time.time() - 10 * DAY + 3600))
    assert app("run").code == 0
    messages = receiver.messages()
    assert len(messages) == 1
    msg = messages[0]
    assert "standard at 97%" in msg["title"] and "past 95%" in msg["title"]
    assert "19.4M of 20M tokens" in msg["message"]
    assert "Resets" in msg["message"] and "(in 17d 0h)" in msg["message"]


def test_second_run_sends_nothing_and_a_dip_does_not_rearm(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    start = time.time() - 3 * DAY
    app.serve_usage(usage_body(17 * M, start=start))
    assert app("run").code == 0
    assert len(receiver.messages()) == 1
    assert app("run").code == 0
    app.serve_usage(usage_body(9 * M, start=start))  # the data dips (a correction)
    assert app("run").code == 0
    app.serve_usage(usage_body(16_500_000, start=start))
    assert app("run").code == 0
    assert len(receiver.messages()) == 1


def test_a_new_billing_period_rearms_every_threshold(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    old = time.time() - 30 * DAY
    app.serve_usage(usage_body(17 * M, start=old, end=old + 27 * DAY))
    assert app("run").code == 0
    new = old + 27 * DAY
    app.serve_usage(usage_body(16 * M, start=new))
    assert app("run").code == 0
    titles = [m["title"] for m in receiver.messages()]
    assert len(titles) == 2 and all("past 80%" in t for t in titles)


def test_email_arrives_through_a_real_smtp_server(app, smtp):
    app.write_config({"notify": {"urls": [smtp.apprise_url]}})
    app.serve_usage(usage_body(16_400_000))
    result = app("run")
    assert result.code == 0, result.err
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert "standard at 82%" in mail["Subject"]
    assert mail["To"].endswith("lead@example.com")
    body = (
        mail.get_payload(decode=True)
        if not mail.is_multipart()
        else mail.get_payload(0).get_payload(decode=True)
    )
    assert b"16.4M of 20M tokens" in body
    assert app("run").code == 0
    assert len(smtp.messages) == 1


def test_without_channels_alerts_go_to_stdout(app):
    app.serve_usage(usage_body(16 * M))
    result = app("run")
    assert result.code == 0
    assert "Factory standard at 80% (past 80%)" in result.out
    assert "16M of 20M tokens" in result.out
    assert "past 80%" not in app("run").out


def test_dry_run_prints_sends_nothing_and_leaves_state_byte_for_byte(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    start = time.time() - 2 * DAY
    app.serve_usage(usage_body(11 * M, start=start))
    assert app("run").code == 0
    before = app.state_path.read_bytes()
    mtime = app.state_path.stat().st_mtime_ns
    app.serve_usage(usage_body(19 * M, start=start))
    result = app("run", "--dry-run")
    assert result.code == 0, result.err
    assert "would send (warning)" in result.out and "standard at 95%" in result.out
    assert len(receiver.messages()) == 1
    assert app.state_path.read_bytes() == before
    assert app.state_path.stat().st_mtime_ns == mtime
    assert app("run").code == 0  # the real run still sends what the dry run showed
    assert "95%" in receiver.messages()[-1]["title"]


def test_dry_run_with_no_state_file_creates_none(app):
    app.serve_usage(usage_body(17 * M))
    assert app("run", "--dry-run").code == 0
    assert not app.state_path.parent.exists()


def test_failed_delivery_exits_5_and_is_retried_next_run(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(17 * M))
    receiver.fail = True
    result = app("run")
    assert result.code == 5
    assert "could not deliver" in result.err and "retried" in result.err
    assert len(receiver.calls("POST", "/notify")) == 1
    receiver.fail = False
    assert app("run").code == 0
    assert len(receiver.messages()) == 2 and "80%" in receiver.messages()[-1]["title"]
    assert app("run").code == 0
    assert len(receiver.messages()) == 2


def test_one_failing_channel_does_not_repeat_the_others(app, receiver, smtp):
    app.write_config({"notify": {"urls": [receiver.apprise_url, smtp.apprise_url]}})
    app.serve_usage(usage_body(17 * M))
    receiver.fail = True
    assert app("run").code == 5
    assert len(smtp.messages) == 1
    receiver.fail = False
    assert app("run").code == 0
    assert len(smtp.messages) == 1
    assert len(receiver.messages()) == 2  # the failed POST and its retry


def test_severity_routing_sends_critical_only_to_the_pager(app, receiver, smtp):
    app.write_config(
        {
            "notify": {
                "channels": [
                    {"url": smtp.apprise_url, "name": "email", "severities": ["info", "warning"]},
                    {"url": receiver.apprise_url, "name": "pager", "severities": ["critical"]},
                ]
            }
        }
    )
    start = time.time() - DAY
    app.serve_usage(usage_body(17 * M, start=start))
    assert app("run").code == 0
    assert len(smtp.messages) == 1 and receiver.messages() == []
    app.serve_usage(usage_body(20_100_000, start=start))
    assert app("run").code == 0
    # email hears of 95 % (the highest it takes), the pager of 100 %
    assert len(smtp.messages) == 2 and "past 95%" in smtp.messages[1]["Subject"]
    assert len(receiver.messages()) == 1 and "at 100%" in receiver.messages()[0]["title"]
    assert app("run").code == 0
    assert len(smtp.messages) == 2 and len(receiver.messages()) == 1


def test_state_is_private_versioned_json(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(17 * M))
    assert app("run").code == 0
    assert stat.S_IMODE(os.stat(app.state_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(app.state_path.parent).st_mode) == 0o700
    state = app.state()
    assert state["version"] == 2
    ((key, channels),) = [(e, e["channels"]) for e in state["ledger"]]
    assert (key["meter"], key["kind"], key["level"]) == ("standard", "threshold", 80.0)
    assert [type(t) for t in channels.values()] == [float]  # when it was delivered
    assert receiver.apprise_url not in app.state_path.read_text()


def test_usage_get_carries_use_cache_and_the_bearer(app):
    app.serve_usage(usage_body(1 * M))
    assert app("run").code == 0
    (call,) = app.factory.calls("GET", USAGE_PATH)
    assert call.method == "GET" and call.path == USAGE_PATH
    assert call.query["useCache"] == "true"
    assert call.headers["authorization"] == f"Bearer {API_KEY}"


def test_post_is_used_when_get_answers_405(app):
    app.factory.route("GET", USAGE_PATH, Reply(405, {"error": "method not allowed"}))
    app.serve_usage(usage_body(17 * M), method="POST")
    result = app("run")
    assert result.code == 0, result.err
    post = app.factory.calls("POST", USAGE_PATH)
    assert len(post) == 1 and post[0].json() == {"useCache": True}
    assert "past 80%" in result.out


def test_premium_bucket_alerts_on_its_own(app, receiver):
    app.write_config({"notify": {"urls": [receiver.apprise_url]}})
    app.serve_usage(usage_body(2 * M, allowance=200 * M, premium=bucket(9 * M, 10 * M)))
    assert app("run").code == 0
    (msg,) = receiver.messages()
    assert msg["title"].startswith("Factory premium at 90%")


def test_usage_quirks_are_handled(app):
    start = time.time() - DAY
    # usedRatio 0 while tokens are used, null endDate, premium absent, above 100 %.
    body = usage_body(22 * M, start=start, end=None)
    body["usage"]["standard"]["usedRatio"] = 0
    del body["usage"]["premium"]
    app.serve_usage(body)
    result = app("run")
    assert result.code == 0, result.err
    assert "Factory standard at 110%" in result.out
    assert "reset time unknown" in result.out.lower()
    assert "premium" not in result.out


def test_unlimited_allowance_never_alerts(app):
    app.serve_usage(usage_body(5 * 10**12, allowance=10**13))
    result = app("run")
    assert result.code == 0 and result.out == "" or "past" not in result.out
    status = app("status")
    assert "standard" in status.out and "unlimited" in status.out
