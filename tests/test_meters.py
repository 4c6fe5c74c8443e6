"""The answer parsers: known shapes, quirks, and any input giving a clean result or error."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerter.meters import BadAnswer, parse_limits, parse_time, parse_usage, plan_name
from tests.conftest import bucket

NOW = 1_800_000_000.0


def usage(**standard_overrides):
    std = {**bucket(5_000_000, 20_000_000), **standard_overrides}
    return {
        "usage": {
            "startDate": 1770623326000,
            "endDate": 1772956800000,
            "standard": std,
            "premium": bucket(0, 0),
        }
    }


def test_the_documented_example():
    reading = parse_usage(usage())
    (meter,) = reading.meters
    assert meter.id == "standard" and meter.used_ratio == 0.25 and reading.plan == "Pro"
    assert meter.window_start == 1770623326.0 and meter.window_end == 1772956800.0


def test_tokens_win_over_a_zero_used_ratio():
    (meter,) = parse_usage(usage(usedRatio=0)).meters
    assert meter.used_ratio == 0.25


def test_ratio_is_used_when_tokens_are_absent():
    std = bucket(0, 20_000_000, ratio=0.6)
    del std["orgTotalTokensUsed"], std["userTokens"]
    (meter,) = parse_usage({"usage": {"startDate": 1, "standard": std}}).meters
    assert meter.used_ratio == 0.6 and meter.window_end is None


def test_plans():
    assert [plan_name(x) for x in (0, 1, 20e6, 200e6, 2e12)] == ["None", "Basic", "Pro", "Max", "Unlimited"]


@pytest.mark.parametrize(
    "bad",
    [
        {"usage": {"startDate": 1, "standard": {"totalAllowance": "20M", "orgTotalTokensUsed": 1}}},
        {"usage": {"startDate": 1, "standard": {"totalAllowance": float("nan"), "orgTotalTokensUsed": 1}}},
        {"usage": {"startDate": 1, "standard": {"totalAllowance": 1e30, "orgTotalTokensUsed": 1}}},
        {"usage": {"startDate": 1, "standard": {"totalAllowance": 10, "orgTotalTokensUsed": -1}}},
        {"usage": {"startDate": 1, "standard": {"totalAllowance": 10, "orgTotalTokensUsed": True}}},
        {"usage": {"startDate": 1}},
        {"usage": "none"},
        {"message": "Unauthorized"},
    ],
)
def test_bad_fields_raise_bad_answer_naming_them(bad):
    with pytest.raises(BadAnswer) as info:
        parse_usage(bad)
    assert "Factory" in str(info.value)


def test_server_text_quoted_in_a_bad_answer_is_redacted():
    key = "fk-9f8e7d6c5b4a3210SECRET"
    with pytest.raises(BadAnswer) as info:
        parse_usage({"error": f"API key {key} is revoked"})
    assert str(info.value) == "Factory answered with an error instead of usage: API key fk-*** is revoked"
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9."
    with pytest.raises(BadAnswer) as info:
        parse_time(jwt, "limits.standard.fiveHour.windowEnd")
    assert "eyJ" not in str(info.value) and "'***'" in str(info.value)


def test_parse_time_accepts_iso_ms_and_seconds():
    assert parse_time("2027-01-15T12:00:00.000Z", "w") == parse_time("2027-01-15T12:00:00+00:00", "w")
    assert parse_time(1_800_000_000_000, "w") == 1_800_000_000.0
    assert parse_time(1_800_000_000, "w") == 1_800_000_000.0
    assert parse_time("1800000000000", "w") == 1_800_000_000.0
    assert parse_time(None, "w") is None
    with pytest.raises(BadAnswer):
        parse_time("next tuesday", "w")


def test_parse_time_takes_rfc_3339_lower_case_t_and_z():
    # RFC 3339 5.6 allows them; the run failed with "unreadable time" on them.
    assert parse_time("2027-01-15t12:00:00.000z", "w") == parse_time("2027-01-15T12:00:00Z", "w")
    assert parse_time("2027-01-15T12:00:00z", "w") == 1_800_014_400.0


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-14:00", "1969-12-31T23:00:00Z", 999_999_999_999_999, "300000000000000"]
)
def test_a_time_no_calendar_can_show_is_a_bad_answer(value):
    # `status` prints every window end; past the year 9999 it crashed with a ValueError.
    with pytest.raises(BadAnswer, match="impossible time in limits.standard.fiveHour.windowEnd"):
        parse_time(value, "limits.standard.fiveHour.windowEnd")
    assert parse_time("9999-12-31T23:59:59Z", "w") == 253402300799.0


def test_a_billing_period_in_seconds_is_read_as_seconds():
    # Read as ms, seconds put the period in January 1970: "resets now", no forecast.
    def body(scale):
        standard = {"totalAllowance": 10, "orgTotalTokensUsed": 8}
        return {
            "usage": {
                "startDate": 1_780_000_000 * scale,
                "endDate": 1_782_000_000 * scale,
                "standard": standard,
            }
        }

    (meter,) = parse_usage(body(1)).meters
    assert (meter.window_start, meter.window_end) == (1_780_000_000.0, 1_782_000_000.0)
    assert parse_usage(body(1)) == parse_usage(body(1000))


@pytest.mark.parametrize("field", ["startDate", "endDate"])
def test_a_billing_period_beyond_the_calendar_is_a_bad_answer(field):
    usage = {"startDate": 1_780_000_000_000, "endDate": 1_782_000_000_000, "standard": {"totalAllowance": 10}}
    usage[field] = 10**17  # milliseconds: the year 3170843
    with pytest.raises(BadAnswer, match=f"impossible time in usage.{field}"):
        parse_usage({"usage": usage})


def test_a_window_counted_down_past_its_end_has_ended():
    # A negative secondsRemaining (no windowEnd) failed the whole run as an impossible value.
    body = {
        "limits": {"standard": {"fiveHour": {"usedPercent": 100, "windowEnd": None, "secondsRemaining": -30}}}
    }
    (meter,) = parse_limits(body, NOW).meters
    assert not meter.active and meter.used_ratio == 0.0


def test_limits_windows_with_seconds_remaining_only():
    body = {
        "limits": {"standard": {"fiveHour": {"usedPercent": 50, "windowEnd": None, "secondsRemaining": 600}}}
    }
    (meter,) = parse_limits(body, NOW).meters
    assert meter.active and meter.window_end == NOW + 600 and meter.used_ratio == 0.5


json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
bucket_keys = st.sampled_from(["totalAllowance", "orgTotalTokensUsed", "userTokens", "usedRatio", "x"])
bucket_like = st.dictionaries(bucket_keys, json_leaf, max_size=5)
usage_like = st.fixed_dictionaries(
    {},
    optional={
        "startDate": json_leaf,
        "endDate": json_leaf,
        "standard": bucket_like | json_value,
        "premium": bucket_like | json_value,
    },
)
window_like = st.fixed_dictionaries(
    {}, optional={"usedPercent": json_leaf, "windowEnd": json_leaf, "secondsRemaining": json_leaf}
)
pool_like = st.fixed_dictionaries(
    {}, optional={"fiveHour": window_like, "weekly": window_like, "monthly": json_value}
)


def _clean(reading) -> None:
    for meter in reading.meters:
        assert math.isfinite(meter.used_ratio) and meter.used_ratio >= 0


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_value, st.fixed_dictionaries({"usage": usage_like})))
def test_any_usage_answer_gives_a_reading_or_bad_answer(body):
    with contextlib.suppress(BadAnswer):
        _clean(parse_usage(body))


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        json_value,
        st.fixed_dictionaries(
            {"limits": st.fixed_dictionaries({}, optional={"standard": pool_like, "core": pool_like})}
        ),
    )
)
def test_any_limits_answer_gives_a_reading_or_bad_answer(body):
    with contextlib.suppress(BadAnswer):
        _clean(parse_limits(body, NOW))


def test_a_window_end_of_unicode_digits_is_a_bad_answer_not_a_crash():
    # "²" is a digit to str.isdigit but not to int() (found by hypothesis).
    with pytest.raises(BadAnswer):
        parse_limits({"limits": {"standard": {"fiveHour": {"usedPercent": 1, "windowEnd": "²"}}}}, 0.0)


@pytest.mark.parametrize(
    "window",
    [
        {"usedPercent": 10**400, "windowEnd": "2030-01-01T00:00:00Z"},
        {"usedPercent": 1, "windowEnd": 10**400},
        {"usedPercent": 1, "windowEnd": "1" * 5000},  # int() refuses over 4300 digits
    ],
)
def test_a_number_no_float_holds_is_a_bad_answer_in_one_short_line(window):
    with pytest.raises(BadAnswer) as info:
        parse_limits({"limits": {"standard": {"fiveHour": window}}}, 0.0)
    assert len(str(info.value)) < 200
