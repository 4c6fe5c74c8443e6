"""`--json` and `--jsonl`: stdout holds the JSON alone, whatever is logged meanwhile."""

from __future__ import annotations

import json

import pytest

from tests.conftest import USAGE_PATH, usage_body
from tests.standins import Reply

M = 1_000_000


def _retried_once(app) -> None:
    """Factory answers 503 (retry at once) and then the usage: the run logs a retry."""
    busy = Reply(503, {"error": "busy"}, headers={"Retry-After": "0"})
    answers = iter([busy, Reply(200, usage_body(5 * M))])
    app.factory.route("GET", USAGE_PATH, lambda rec: next(answers))


def test_status_json_is_json_alone_while_a_request_is_retried(app):
    _retried_once(app)
    result = app("-v", "status", "--json")
    assert result.code == 0, result.err
    assert "retrying" in result.err  # the retry is still told, on stderr
    assert json.loads(result.out)["meters"][0]["used_tokens"] == 5 * M


def test_status_json_is_json_alone_when_the_fetch_fails(app):
    app.write_config({"factory": {"deadline_seconds": 1}})
    app.serve_usage(Reply(503, {"error": "busy"}, headers={"Retry-After": "0"}))
    result = app("-v", "status", "--json")
    assert result.code == 4
    assert "retrying" in result.err
    assert set(json.loads(result.out)) == {"job"}


def test_status_json_of_accounts_is_json_alone_while_a_request_is_retried(app):
    _retried_once(app)
    app.write_config({"accounts": [{"name": "work", "api_key_env": "FACTORY_API_KEY"}]})
    result = app("-v", "status", "--json")
    assert result.code == 0, result.err
    assert "retrying" in result.err
    assert [a["account"] for a in json.loads(result.out)["accounts"]] == ["work"]


@pytest.mark.parametrize("argv", [["backtest", "--example", "--json"], ["history", "--jsonl"]])
def test_other_json_output_is_json_alone_with_every_log_line(app, argv):
    app.serve_usage(usage_body(5 * M))
    assert app("run").code == 0  # a history to print
    result = app("-vv", *argv)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    if argv[-1] == "--jsonl":
        assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    else:
        assert isinstance(json.loads(result.out), dict)
