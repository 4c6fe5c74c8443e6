"""The config file: defaults, locations, and every mistake reported clearly (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alerter.config import (
    DEFAULT_THRESHOLDS,
    build_config,
    default_config_file,
    default_state_file,
    load_config,
    mask_url,
)
from alerter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_loads_and_matches_the_defaults():
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    config = build_config(data, None, {"HOME": "/home/u"})
    assert config.thresholds_for("standard") == DEFAULT_THRESHOLDS
    assert config.endpoint == "auto" and config.timeout_seconds == 10
    assert config.channels == ()
    defaults = build_config({}, None, {"HOME": "/home/u"})
    assert config.state_file == defaults.state_file
    assert config.deadline_seconds == defaults.deadline_seconds


def test_the_example_config_is_the_starter_config_that_init_writes():
    assert (ROOT / "config.example.yaml").read_text() == (
        ROOT / "alerter" / "starter_config.yaml"
    ).read_text()


def test_default_locations_follow_xdg_and_systemd():
    assert default_config_file({"HOME": "/h"}) == Path("/h/.config/factory-usage-alert/config.yaml")
    assert default_config_file({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/factory-usage-alert/config.yaml"
    )
    assert default_state_file({"HOME": "/h"}) == Path("/h/.local/state/factory-usage-alert/state.json")
    assert default_state_file({"HOME": "/h", "XDG_STATE_HOME": "/s"}) == Path(
        "/s/factory-usage-alert/state.json"
    )
    assert default_state_file({"STATE_DIRECTORY": "/var/lib/fua:/other"}) == Path("/var/lib/fua/state.json")


def test_missing_default_config_runs_on_builtin_defaults(tmp_path):
    config = load_config(None, {"HOME": str(tmp_path)})
    assert config.path is None
    assert config.thresholds_for("premium") == (50.0, 80.0, 95.0, 100.0)
    assert config.home == tmp_path / ".factory"


def test_config_env_variable_names_the_file(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("thresholds:\n  standard: [90]\n")
    config = load_config(None, {"HOME": str(tmp_path), "FACTORY_USAGE_ALERT_CONFIG": str(file)})
    assert config.thresholds_for("standard") == (90.0,)
    assert config.thresholds_for("premium") == DEFAULT_THRESHOLDS


def test_an_explicit_config_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"), {"HOME": str(tmp_path)})


def config_error(tmp_path: Path, text: str) -> str:
    """Given a config's text, return the ConfigError that loading it raises (it must raise)."""
    file = tmp_path / "config.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(file), {"HOME": str(tmp_path)})
    return str(info.value)


def test_a_path_under_the_home_of_a_user_that_does_not_exist_is_a_config_error(tmp_path):
    # Found by the hypothesis test below ('~0'): pathlib raised RuntimeError, an internal error.
    message = config_error(tmp_path, "state_file: ~no-such-user-fua/state.json\n")
    assert "state_file" in message and "give the path in full" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "thresholds:\n  standard: [50, 2000]\n",
            "At 'thresholds.standard': 2000 is not a percent between 1 and 1000",
        ),
        ("thresholds:\n  standard: [0]\n", "At 'thresholds.standard': 0 is not a percent"),
        ("thresholds:\n  standard: 80\n", "At 'thresholds.standard': must be a non-empty list"),
        ("thresholds:\n  standrd: [80]\n", "At 'thresholds.standrd': unknown key"),
        ("colour: blue\n", "At 'colour': unknown key"),
        ("threshold:\n  default: [80]\n", "At 'threshold': unknown key (did you mean 'thresholds'?)"),
        (
            "monitor:\n  failure_before_alert: 2\n",
            "unknown key (did you mean 'failures_before_alert'?)",
        ),
        ("factory:\n  api_key: fk-x\n", "an API key goes in the environment ($FACTORY_API_KEY)"),
        ("FACTORY_API_KEY: fk-x\n", "an API key goes in the environment ($FACTORY_API_KEY)"),
        (
            "accounts:\n  - name: w\n    api_key: fk-x\n",
            "api_key_env names the environment variable that holds the key",
        ),
        ("factory:\n  timeout_seconds: fast\n", "At 'factory.timeout_seconds': must be a number"),
        ("factory:\n  endpoint: magic\n", "At 'factory.endpoint': must be one of auto, limits, allowance"),
        ("factory:\n  base_url: api.factory.ai\n", "At 'factory.base_url': must be an http(s) URL"),
        ('factory:\n  base_url: "https://api.factory.ai\\n"\n', "At 'factory.base_url': must be an http"),
        ("notify:\n  urls: [not-a-url]\n", "At 'notify.urls[0]': is not an apprise URL"),
        ("notify:\n  urls: json://x\n", "At 'notify.urls': must be a list"),
        (
            "notify:\n  channels:\n    - url: json://h\n      severities: [loud]\n",
            "severities': must be a list",
        ),
        ("factory: [1]\n", "At 'factory': must be a mapping"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("thresholds: [\n", "not valid YAML at line"),
    ],
)
def test_each_mistake_names_the_file_the_key_and_the_problem(tmp_path, text, expected):
    message = config_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "config.yaml")) and expected in message
    assert "\n" not in message


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
)  # seven lines that expand to 9**7 values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thresholds:\n  default: [1" + "0" * 400 + "]\n", "At 'thresholds.default': "),
        ("factory:\n  deadline_seconds: 1" + "0" * 400 + "\n", "At 'factory.deadline_seconds': "),
        ("thresholds:\n  default: [1" + "0" * 5000 + "]\n", "a number thousands of digits long"),
        ("thresholds:\n  default: [50]\nnote: 2026-13-45\n", "or a date that does not exist"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to read"),
        (BOMB, "aliases (*name) expand to more than"),
        ("thresholds:\n  default: &a [50, *a]\n", "aliases (*name) expand to more than"),
    ],
)
def test_a_config_too_big_or_deep_to_use_is_a_config_error_not_a_bug_or_a_hang(tmp_path, text, expected):
    assert expected in config_error(tmp_path, text)


def test_aliases_within_reason_are_fine(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("thresholds:\n  default: &t [50, 90]\n  standard: *t\n")
    assert load_config(str(file), {"HOME": str(tmp_path)}).thresholds["standard"] == (50.0, 90.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "thresholds:\n  default: [50]\nthresholds:\n  default: [60]\n",
            "'thresholds' is given twice (lines 1 and 3)",
        ),
        ("thresholds: {default: [50], default: [60]}\n", "'default' is given twice (lines 1 and 1)"),
    ],
)
def test_a_key_given_twice_is_an_error_not_silently_the_last(tmp_path, text, expected):
    assert expected in config_error(tmp_path, text)


def test_a_key_may_override_one_merged_from_an_alias(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("thresholds:\n  default: &t [50, 90]\n  standard: *t\n  premium: *t\n")
    assert load_config(str(file), {"HOME": str(tmp_path)}).thresholds["premium"] == (50.0, 90.0)
    file.write_text(
        "notify:\n  channels:\n    - &c {name: a, url: 'json://h/x'}\n    - {<<: *c, name: b, url: 'json://h/y'}\n"
    )
    assert [ch.label for ch in load_config(str(file), {"HOME": str(tmp_path)}).channels] == ["a", "b"]


def test_all_problems_are_reported_at_once(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("thresholds:\n  standard: [5000]\nfactory:\n  endpoint: x\nbogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(file), {"HOME": str(tmp_path)})
    assert len(info.value.problems) == 3


def test_masked_urls_hide_credentials():
    assert mask_url("slack://TokenA/TokenB/TokenC/#alerts") == "slack://***"
    assert mask_url("mailtos://user:secret@gmail.com") == "mailtos://***@gmail.com"
    # `?to=x@y.z` might end a password that holds `?`: then gmail.com would be part of it.
    assert mask_url("mailtos://user:secret@gmail.com?to=x@y.z") == "mailtos://***"
    assert mask_url("json://127.0.0.1:8080/hook") == "json://127.0.0.1:8080/***"


@pytest.mark.parametrize("key", ["factory.base_url", "factory.workos_url", "healthcheck_url"])
def test_plain_http_is_a_config_error_unless_the_host_is_loopback(key):
    def config_with(url: str) -> dict:
        section, _, name = key.rpartition(".")
        return {section: {name: url}} if section else {name: url}

    for url in ("http://127.0.0.1:8080", "http://localhost:1/x", "http://[::1]:9/", "https://example.com"):
        build_config(config_with(url), None, {"HOME": "/home/u"})
    for url in ("http://example.com", "http://127.0.0.1@example.com/", "http://example.com#@127.0.0.1"):
        with pytest.raises(ConfigError) as info:
            build_config(config_with(url), None, {"HOME": "/home/u"})
        assert len(info.value.problems) == 1
        problem = info.value.problems[0]
        assert problem.startswith(f"At '{key}': use https://") and "plain http://" in problem


def test_config_errors_mask_the_values_they_quote():
    data = {
        "factory": {
            "base_url": "http://user:Pa55/w0rd@api.example.com/t0ken-path",
            "workos_url": "ftp://bob:hunter2@example.com/",
            "timeout_seconds": "Bearer abcDEF1234567890xyz",
            "source": "fk-0123456789SECRET",
        },
        "healthcheck_url": "http://hc-ping.com/0b3c8e2a-9d1f-4c5e-8a7b-secretuuid",
        "thresholds": {"standard": ["json://u:s3cr3t@hook.example/x"]},
        "monitor": {"reset_notice": "https://hooks.slack.com/services/T000/B000/XXXXXXXX"},
        "quiet_hours": {"start": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.", "end": "07:00"},
        "json://carol:Tr0ub4dor@example.com/hook": 1,
    }
    with pytest.raises(ConfigError) as info:
        build_config(data, None, {"HOME": "/home/u"})
    text = str(info.value) + "\n".join(info.value.problems)
    assert len(info.value.problems) == 9
    for secret in (
        "Pa55",
        "w0rd",
        "t0ken",
        "hunter2",
        "abcDEF",
        "0123456789",
        "secretuuid",
        "s3cr3t",
        "services/T000",
        "eyJzdWIi",
        "Tr0ub4dor",
        "carol",
        "bob:",
    ):
        assert secret not in text, secret
    assert "At 'factory.base_url': use https:// ('http://***' is plain http://" in text
    assert "At 'factory.workos_url': must be an http(s) URL, not 'ftp://***'" in text
    assert "At 'json://***@example.com/***': unknown key" in text


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["factory", "thresholds", "notify", "severity", "state_file", "other"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, yaml_values, max_size=5))
def test_any_mapping_gives_a_config_or_a_clean_config_error(data):
    try:
        build_config(data, None, {"HOME": "/home/u"})
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("At '") for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_clean_config_error(tmp_path_factory, text):
    file = tmp_path_factory.mktemp("cfg") / "config.yaml"
    file.write_text(text)
    try:
        load_config(str(file), {"HOME": "/home/u"})
    except ConfigError as exc:
        assert str(exc).startswith(str(file))


def test_the_retired_refresh_margin_is_accepted_with_its_fix():
    from alerter.config import build_config

    config = build_config({"factory": {"refresh_margin_hours": 24}}, None, {"HOME": "/nonexistent"})
    assert config.deadline_seconds == 60
    (note,) = config.deprecations
    assert "refresh_margin_hours is no longer used" in note
    assert "delete the line `refresh_margin_hours: 24`" in note


def test_the_endpoint_key_of_earlier_releases_is_read_with_its_fix():
    env = {"HOME": "/home/u"}
    config = build_config({"factory": {"source": "limits"}}, None, env)
    assert config.endpoint == "limits"
    assert config.deprecations == (
        "factory.source is now factory.endpoint; replace `source: limits` with `endpoint: limits`",
    )
    assert build_config({"factory": {"endpoint": "allowance"}}, None, env).endpoint == "allowance"
