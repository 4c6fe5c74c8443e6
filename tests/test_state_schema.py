"""The state's one schema: files written by the previous release, the delivery ledger, and
the write-ahead marks a killed run leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerter import job
from alerter.config import Channel, Config, MonitorSettings
from alerter.decide import Failure, decide
from alerter.meters import Meter, Reading
from alerter.state import DeliveryKey, State, dump, load, load_state, save_state

DATA = Path(__file__).resolve().parent / "data"
A = Channel(id="ch-a", label="a", url="json://a")
B = Channel(id="ch-b", label="b", url="json://b", severities=frozenset({"critical"}))
T0 = 1_790_000_000.0
H = 3600.0


def config(tmp_path: Path | None = None) -> Config:
    monitor = MonitorSettings(reset_notice=True, reminder_hours=1, failures_before_alert=2)
    if tmp_path is None:
        return Config(channels=(A, B), monitor=monitor)
    return Config(channels=(A, B), monitor=monitor, state_file=tmp_path / "state.json")


def sent(decision) -> list[tuple]:
    return [(a.meter_id, a.kind, a.level, a.channels) for a in decision.send]


# state-v1.json was written by the release before the ledger (commit 60b995c): nine hours
# of a limits account with two channels (b takes only critical alerts), a 5-hour window
# that reached 100 % (reminders), reset, then ran hot (a forecast and three thresholds to
# a), two failed runs ("not working" to both), and an expired login told to a only. The
# expected decisions below are what that release decided on the same inputs.
V1_PROBES = [
    (
        Reading(
            "limits",
            (
                Meter("standard", 0.19, T0 - 10 * 86400, T0 + 20 * 86400, 3_800_000, 20_000_000),
                Meter("standard.5h", 0.995, window_end=T0 + 10 * H + 120),
            ),
        ),
        [("health", "recovered", 0.0, ("ch-a", "ch-b"))],
    ),
    (Failure("login expired", login_expired=True), [("login", "login", 0.0, ("ch-b",))]),
    (
        Reading("limits", (Meter("standard.5h", 1.0, window_end=T0 + 10 * H),)),
        [
            ("health", "recovered", 0.0, ("ch-a", "ch-b")),
            ("standard.5h", "threshold", 100.0, ("ch-a", "ch-b")),
        ],
    ),
]


@pytest.mark.parametrize(("observation", "expected"), V1_PROBES)
def test_a_state_file_from_the_previous_release_decides_as_that_release_did(tmp_path, observation, expected):
    path = tmp_path / "state.json"
    path.write_bytes((DATA / "state-v1.json").read_bytes())
    state = load_state(path)
    assert sent(decide(state, observation, config(), T0 + 9.5 * H)) == expected


def test_the_previous_release_s_records_land_in_the_ledger(caplog):
    state, dropped = load(json.loads((DATA / "state-v1.json").read_text()))
    assert dropped == [] and caplog.text == ""
    five = state.meters["standard.5h"]
    assert five.window is not None and five.window_key == T0 + 10 * H
    assert five.episode is not None
    assert state.delivered(DeliveryKey("standard.5h", "threshold", T0 + 10 * H, 95.0)).keys() == {"ch-a"}
    assert state.delivered(DeliveryKey("standard.5h", "forecast", five.episode.since, 0.0)).keys() == {"ch-a"}
    assert state.delivered(DeliveryKey("health", "stale", T0 + 9 * H, 0.0)).keys() == {"ch-a", "ch-b"}
    assert state.delivered(DeliveryKey("login", "login", 0.0, 0.0)).keys() == {"ch-a"}
    assert state.endpoint == {"checked_at": T0, "name": "limits"}
    assert [r.login_expired for r in state.health.failed_runs] == [False, False]
    assert load(json.loads(json.dumps(dump(state))))[0] == state  # and version 2 keeps it all


def test_a_reset_notice_still_owed_by_the_previous_release_is_still_owed():
    data = {
        "version": 1,
        "meters": {},
        "pending": [
            {
                "kind": "reset",
                "meter": "standard.5h",
                "title": "Factory standard.5h reset, you are back to 2%",
                "body": "b",
                "severity": "info",
                "channels": ["ch-a"],
                "since": T0,
            }
        ],
    }
    state, _ = load(data)
    decision = decide(state, Failure("down"), config(), T0 + 60)
    assert sent(decision) == [("standard.5h", "reset", 0.0, ("ch-a",))]


def test_parts_of_the_wrong_shape_are_dropped_with_one_warning(tmp_path, caplog):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 2, "health": [], "ledger": [{"meter": 1}], "meters": {"x": 3}}))
    path.chmod(0o600)
    assert load_state(path) == State()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ignored what was not understood" in warnings[0].getMessage()
    assert "health" in warnings[0].getMessage() and "ledger" in warnings[0].getMessage()


def reading(percent: float) -> Reading:
    return Reading("limits", (Meter("standard.5h", percent / 100, window_end=T0 + 4 * H),))


def test_a_run_killed_while_sending_sends_only_what_it_had_not_recorded_again(tmp_path, caplog):
    cfg = config(tmp_path)
    fetch = lambda state, now: job.Fetched(reading(100))  # noqa: E731
    delivered = []

    def send_then_die(channel, alert):
        if delivered:
            raise KeyboardInterrupt  # the run is killed during its second delivery
        delivered.append((channel.id, alert.kind))
        return True

    with pytest.raises(KeyboardInterrupt):
        job.run(cfg, job.Shell(fetch, send_then_die), lambda: T0)
    assert delivered == [("ch-a", "threshold")]
    on_disk = json.loads(cfg.state_file.read_text())
    (entry,) = on_disk["ledger"]
    # a's delivery was saved as it succeeded; b was about to be sent
    assert entry["channels"] == {"ch-a": T0, "ch-b": None}
    # The next run cannot know whether b got it: it is due again, with a warning; a is not.
    again = []
    job.run(cfg, job.Shell(fetch, lambda ch, alert: again.append(ch.id) or True), lambda: T0 + 60)
    assert again == ["ch-b"]
    assert "could not record them; they are due again" in caplog.text
    (entry,) = json.loads(cfg.state_file.read_text())["ledger"]
    assert entry["channels"] == {"ch-a": T0, "ch-b": T0 + 60}
    # And once recorded, never twice.
    job.run(cfg, job.Shell(fetch, lambda ch, alert: again.append(ch.id) or True), lambda: T0 + 120)
    assert again == ["ch-b"]


def test_a_failed_delivery_leaves_no_mark_and_stays_due(tmp_path):
    cfg = config(tmp_path)
    fetch = lambda state, now: job.Fetched(reading(100))  # noqa: E731
    with pytest.raises(job.DeliveryError):
        job.run(cfg, job.Shell(fetch, lambda ch, alert: ch.id == "ch-a"), lambda: T0)
    state = load_state(cfg.state_file)
    assert state.in_flight() == []
    (key,) = state.ledger
    assert state.delivered(key).keys() == {"ch-a"}
    save_state(cfg.state_file, state)
    again = []
    job.run(cfg, job.Shell(fetch, lambda ch, alert: again.append(ch.id) or True), lambda: T0 + 60)
    assert again == ["ch-b"]


# --- the loader takes anything ------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# NaN is left out only because it never equals itself; the loader takes it (as json does).
numbers = st.integers(-(2**60), 2**60) | st.floats(allow_nan=False)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=5)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
key_like = {
    "meter": st.sampled_from(["standard", "health", "login"]) | scalars,
    "kind": st.sampled_from(["threshold", "reset", "stale"]) | scalars,
    "window": st.floats(0, 2e9) | scalars,
    "level": st.sampled_from([0.0, 80.0, 100.0]) | scalars,
}
ledger_entry = st.fixed_dictionaries(
    {},
    optional={
        **key_like,
        "channels": st.dictionaries(
            st.sampled_from(["ch-a", "ch-b"]), st.none() | st.floats(0, 2e9) | scalars
        )
        | anything,
    },
)
notice = st.fixed_dictionaries(
    {},
    optional={
        **key_like,
        "title": scalars,
        "body": scalars,
        "since": scalars | st.floats(1, 2e9),
        "channels": anything,
    },
)
version_2 = st.fixed_dictionaries(
    {"version": st.just(2)},
    optional={
        "ledger": st.lists(ledger_entry | anything, max_size=3) | anything,
        "notices": st.lists(notice | anything, max_size=2) | anything,
        "health": anything,
        "meters": st.dictionaries(st.sampled_from(["standard", "core.5h"]), anything, max_size=2) | anything,
        "endpoint": anything,
        "credentials": anything,
        "channels_checked": scalars,
    },
)


@settings(max_examples=300, deadline=None)
@given(version_2 | anything)
def test_anything_loads_into_a_valid_state_that_saves_and_loads_back_the_same(data):
    state, _ = load(data)
    again, dropped = load(json.loads(json.dumps(dump(state))))
    assert again == state and dropped == []
    decide(state, Failure("down"), config(), T0)  # and the decision core takes it as it is


# --- merging an earlier state's ledger (an upgrade that left two states) ---------------------


def test_merging_keeps_the_newest_record_of_each_delivery_and_names_a_window_as_this_state_does():
    from alerter.state import MeterMemory, Window, merge_ledger

    mine = State(
        meters={"standard.5h": MeterMemory(window=Window(None, T0 + 5 * H), window_key=T0 + 5 * H)},
        ledger={DeliveryKey("standard.5h", "threshold", T0 + 5 * H, 50.0): {"ch-a": T0 + 60}},
    )
    drifted = T0 + 5 * H + 120  # the same limit window, first seen by the other state 2 min later
    other = State(
        meters={"premium": MeterMemory(window=Window(T0, None), window_key=T0, peak=81.0)},
        ledger={
            DeliveryKey("standard.5h", "threshold", drifted, 50.0): {"ch-a": T0 + 30, "ch-b": T0 + 40},
            DeliveryKey("standard.5h", "threshold", drifted, 80.0): {"ch-a": T0 + 90, "ch-b": None},
            DeliveryKey("premium", "threshold", T0, 80.0): {"ch-a": T0 + 100},
        },
    )
    merged = merge_ledger(mine, other)
    assert merged.ledger == {
        DeliveryKey("standard.5h", "threshold", T0 + 5 * H, 50.0): {"ch-a": T0 + 60, "ch-b": T0 + 40},
        DeliveryKey("standard.5h", "threshold", T0 + 5 * H, 80.0): {"ch-a": T0 + 90},  # ch-b: still due
        DeliveryKey("premium", "threshold", T0, 80.0): {"ch-a": T0 + 100},
    }
    assert merged.meters["premium"].peak == 81.0  # a meter only the other knew comes with its memory
    assert mine.ledger == {DeliveryKey("standard.5h", "threshold", T0 + 5 * H, 50.0): {"ch-a": T0 + 60}}


def test_the_earlier_states_merged_are_remembered_across_a_save(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, State(merged=("a" * 24, "b" * 24)))
    assert load_state(path).merged == ("a" * 24, "b" * 24)
