"""Weaving defects found by an audit (Arrow engine, no Spark): a timepoint at the log's last ts,
re-asking an expired or quarantined what-if, the gate quarantining innocent weaves, malformed
probabilities.

Every expectation comes from tests/oracle.py's brute-force fold of the hand-kept change rows.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pyarrow as pa
import pytest

from tests.inject import crash_at
from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, write_lake
from tests.oracle import fold, rows_to_dict

M = timedelta(minutes=1)


def _append(settings, data: dict, rows: list[dict]) -> None:
    """Append changes to the lake's log (and to `data`, the oracle's copy)."""
    from deltalake import write_deltalake

    from weaver.core import storage

    write_deltalake(storage.uri_for(settings, storage.CHANGELOG),
                    pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.CHANGELOG]), mode="append")
    data["changes"].extend(rows)


def _change(seq: int, ts, key: str, value: bytes) -> dict:
    return {"seq": seq, "ts": ts, "partition_id": "p1", "key": key, "op": "PUT", "value": value,
            "value_bytes": len(value)}


def _raw(settings, name: str) -> list[dict]:
    from deltalake import DeltaTable

    from weaver.core import storage

    uri = storage.uri_for(settings, name)
    return DeltaTable(uri).to_pyarrow_table().to_pylist() if storage.is_table(uri) else []


def _check_manual(settings, data: dict, wid: str, split_key: str) -> list:
    """Every woven timepoint of manual weave `wid` (of p1 [k20, +inf)) equals the oracle's fold cut
    at split_key; returns the timepoints."""
    woven = [w for w in _raw(settings, "woven_snapshots") if w["weave_id"] == wid]
    tps = sorted({w["timepoint"] for w in woven})
    for t in tps:
        rows = [w for w in woven if w["timepoint"] == t]
        left = rows_to_dict([w for w in rows if w["woven_partition_id"].endswith("~L")])
        right = rows_to_dict([w for w in rows if w["woven_partition_id"].endswith("~R")])
        assert left == fold(data["changes"], key_lo="k20", key_hi=split_key, at=t), f"left at {t}"
        assert right == fold(data["changes"], key_lo=split_key, at=t), f"right at {t}"
    return tps


def _cut_lake(tmp_path, cut, *, last_ts=None):
    """make_log(seed=3) without a real split, cut to changes before `cut`; with `last_ts` one more
    change of p1 exactly at it. Returns (settings, data, rest of the log)."""
    full = make_log(seed=3, split_at=None)
    kept = [c for c in full["changes"] if c["ts"] < cut]
    rest = [c for c in full["changes"] if c["ts"] >= cut]
    data = {**full, "changes": kept}
    if last_ts is not None:
        data["changes"] = kept + [_change(kept[-1]["seq"] + 1, last_ts, "k25", b"first-at-the-tail")]
        rest = []
    return weave_settings(write_lake(tmp_path / "lake", data)), data, rest


# --- 3. a timepoint equal to the log's last ts is not complete yet --------------------------------
def test_a_timepoint_at_the_logs_last_ts_waits_until_the_log_passes_it(tmp_path):
    from weaver.core.errors import InvalidTimepointError
    from weaver.whatif import plan_whatif, whatif_weave

    settings, data, _ = _cut_lake(tmp_path, T0 + 5 * H, last_ts=T0 + 5 * H)
    assert max(c["ts"] for c in data["changes"]) == T0 + 5 * H
    # A what-if at the log's last ts is refused (its data may still grow), and writes nothing.
    with pytest.raises(InvalidTimepointError):
        plan_whatif(settings, "p1", T0 + 5 * H, split_key="k30")
    with pytest.raises(InvalidTimepointError):
        whatif_weave(None, settings, "p1", T0 + 5 * H, split_key="k30")
    assert _raw(settings, "woven_catalog") == []

    r = whatif_weave(None, settings, "p1", T0 + 2 * H, split_key="k30", until=T0 + 8 * H)
    wid = r["weave_id"]
    assert _check_manual(settings, data, wid, "k30") == [T0 + 2 * H, T0 + 3 * H, T0 + 4 * H]
    # A late change arrives with exactly the tail's ts (as an ingest writer may write it).
    seq = max(c["seq"] for c in data["changes"])
    _append(settings, data, [_change(seq + 1, T0 + 5 * H, "k26", b"late-at-the-tail")])
    whatif_weave(None, settings, "p1", T0 + 2 * H, split_key="k30", until=T0 + 8 * H)
    assert _check_manual(settings, data, wid, "k30") == [T0 + 2 * H, T0 + 3 * H, T0 + 4 * H]
    # Once the log holds a change after 05:00, 05:00 is woven - with both changes at 05:00.
    _append(settings, data, [_change(seq + 2, T0 + 6 * H + M, "k27", b"after")])
    whatif_weave(None, settings, "p1", T0 + 2 * H, split_key="k30", until=T0 + 8 * H)
    tps = _check_manual(settings, data, wid, "k30")
    assert tps == [T0 + 2 * H, T0 + 3 * H, T0 + 4 * H, T0 + 5 * H, T0 + 6 * H]
    at5 = fold(data["changes"], key_lo="k20", at=T0 + 5 * H)
    assert at5["k25"] == b"first-at-the-tail" and at5["k26"] == b"late-at-the-tail"


def test_a_predicted_timepoint_at_the_logs_last_ts_waits_until_the_log_passes_it(tmp_path):
    from weaver.weave import weave

    settings, data, _ = _cut_lake(tmp_path, T0 + 5 * H, last_ts=T0 + 5 * H)
    p = prediction("p1", split_key="k30", split_ts=T0 + 3 * H, window=timedelta(hours=6))
    put_predictions(settings, [p])
    weave(None, settings, at=T0 + 8 * H)
    seq = max(c["seq"] for c in data["changes"])
    _append(settings, data, [_change(seq + 1, T0 + 5 * H, "k26", b"late-at-the-tail"),
                             _change(seq + 2, T0 + 7 * H + M, "k27", b"after")])
    weave(None, settings, at=T0 + 8 * H)
    # assert_matches_oracle: timepoints 03:00..07:00 (the log passed them all), each the oracle's fold.
    assert assert_matches_oracle(settings, data, [p], at=T0 + 8 * H) == 5


# --- 4. re-asking an expired or quarantined what-if weaves it again from the base ---------------
def test_an_expired_what_if_asked_again_is_woven_from_the_base(tmp_path):
    from weaver.weave import vacuum_woven
    from weaver.whatif import whatif_weave

    settings, data, rest = _cut_lake(tmp_path, T0 + 4 * H + 30 * M)
    r = whatif_weave(None, settings, "p1", T0 + H, split_key="k30", until=T0 + 9 * H)
    wid = r["weave_id"]
    assert _check_manual(settings, data, wid, "k30") == [T0 + i * H for i in range(1, 5)]
    v = vacuum_woven(settings, now=T0 + 30 * 24 * H)  # past 09:00 + 7 d: expired, its rows deleted
    assert v["rows_deleted"] > 0 and [w for w in _raw(settings, "woven_snapshots") if w["weave_id"] == wid] == []
    _append(settings, data, rest)  # the rest of the log arrives (to ~10:00)

    again = whatif_weave(None, settings, "p1", T0 + H, split_key="k30", until=T0 + 9 * H)
    assert again["weave_id"] == wid
    (row,) = [c for c in _raw(settings, "woven_catalog") if c["weave_id"] == wid]
    assert row["status"] == "active" and row["last_timepoint"] == T0 + 9 * H
    assert _check_manual(settings, data, wid, "k30") == [T0 + i * H for i in range(1, 10)]


def test_a_quarantined_what_if_asked_again_is_woven_again_checked_and_reported_honestly(tmp_path):
    from deltalake import write_deltalake
    from typer.testing import CliRunner

    from weaver.cli import app
    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import gate_weaves, list_quarantine
    from weaver.whatif import whatif_weave

    settings, data, _ = _cut_lake(tmp_path, T0 + 11 * H)
    r = whatif_weave(None, settings, "p1", T0 + 2 * H, split_key="k30", until=T0 + 5 * H, stage=True)
    wid = r["weave_id"]
    (row,) = _raw(settings, "woven_catalog")
    # Plant a defect: a right-hand key filed under the left child at the last timepoint.
    state = fold(data["changes"], key_lo="k30", at=row["last_timepoint"])
    key = sorted(state)[0]
    planted = {"weave_id": wid, "woven_partition_id": row["child_ids"][0], "source_partition_id": "p1",
               "timepoint": row["last_timepoint"], "as_of_seq": row["last_seq"], "key": key, "value": state[key]}
    write_deltalake(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")
    with pytest.raises(ExpectationFailedError):
        gate_weaves(settings)
    assert _raw(settings, "woven_catalog")[0]["status"] == "quarantined"

    # Asked again (no new data): woven again from the base, audited, published - and the CLI says
    # what the catalog says.
    res = CliRunner().invoke(app, ["whatif", "weave", "--lake", settings.lake, "--json", "--partition", "p1",
                                   "--at", (T0 + 2 * H).isoformat(), "--split-key", "k30",
                                   "--until", (T0 + 5 * H).isoformat()])
    out = json.loads(res.stdout.splitlines()[-1])
    (row,) = _raw(settings, "woven_catalog")
    assert out["weave_id"] == wid and row["status"] == "active"
    assert res.exit_code == 0 and out["published"] is True and out["status"] == "active"
    assert _check_manual(settings, data, wid, "k30") == [T0 + i * H for i in range(2, 6)]
    assert list_quarantine(settings) == []  # the pass ended the old quarantine record


def test_a_quarantined_what_if_never_expires_into_an_as_of_read(tmp_path):
    """A quarantined manual weave stayed quarantined only until its span plus the retention passed:
    reconcile then made it `expired`, and an as-of read (which serves weaves expired since) served
    rows that had failed their audit."""
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import gate_weaves
    from weaver.recover import recover
    from weaver.weave import reconcile
    from weaver.whatif import whatif_weave

    settings, data, _ = _cut_lake(tmp_path, T0 + 11 * H)
    r = whatif_weave(None, settings, "p1", T0 + 2 * H, split_key="k30", until=T0 + 5 * H, stage=True)
    (row,) = _raw(settings, "woven_catalog")
    state = fold(data["changes"], key_lo="k30", at=row["last_timepoint"])
    key = sorted(state)[0]
    planted = {"weave_id": r["weave_id"], "woven_partition_id": row["child_ids"][0], "source_partition_id": "p1",
               "timepoint": row["last_timepoint"], "as_of_seq": row["last_seq"], "key": key, "value": b"poison"}
    write_deltalake(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")
    with pytest.raises(ExpectationFailedError):
        gate_weaves(settings)
    late = T0 + 5 * H + settings.woven_retention + H
    assert reconcile(settings, at=late)["expired"] == 0
    assert _raw(settings, "woven_catalog")[0]["status"] == "quarantined"
    version = storage.version_of(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))
    got = recover(settings, row["child_ids"][0], row["last_timepoint"], confidence_threshold=0.0,
                  as_of_version=version)
    assert got.path == "standard"
    assert rows_to_dict(got.table.to_pylist()) == fold(data["changes"], key_lo="k20", key_hi="k30",
                                                       at=row["last_timepoint"])


def test_the_cli_reports_a_quarantined_what_if_as_not_published(tmp_path, monkeypatch):
    from deltalake import write_deltalake
    from typer.testing import CliRunner

    import weaver.cli._whatif as cli_whatif
    from weaver.cli import app
    from weaver.core import storage

    settings, data, _ = _cut_lake(tmp_path, T0 + 11 * H)
    real = cli_whatif.whatif_weave

    def weave_then_plant(*a, **kw):  # a defect between the weave and its audit
        r = real(*a, **kw)
        (row,) = _raw(settings, "woven_catalog")
        state = fold(data["changes"], key_lo="k30", at=row["last_timepoint"])
        key = sorted(state)[0]
        planted = {"weave_id": row["weave_id"], "woven_partition_id": row["child_ids"][0],
                   "source_partition_id": "p1", "timepoint": row["last_timepoint"], "as_of_seq": row["last_seq"],
                   "key": key, "value": state[key]}
        write_deltalake(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS),
                        pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")
        return r

    monkeypatch.setattr(cli_whatif, "whatif_weave", weave_then_plant)
    res = CliRunner().invoke(app, ["whatif", "weave", "--lake", settings.lake, "--json", "--partition", "p1",
                                   "--at", (T0 + 2 * H).isoformat(), "--split-key", "k30"])
    assert res.exit_code != 0
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["error"] == "ExpectationFailedError" and "quarantined" in out["message"]
    assert _raw(settings, "woven_catalog")[0]["status"] == "quarantined"


# --- 5. the gate quarantines only the weaves that failed -------------------------------------------
def test_one_failing_weave_does_not_quarantine_the_others(tmp_path):
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import gate_weaves, list_quarantine
    from weaver.weave import weave

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    good = prediction("p1", split_key="k30", split_ts=T0 + 3 * H, window=timedelta(hours=6))
    bad = prediction("p0", split_key="k07", split_ts=T0 + 3 * H, window=timedelta(hours=6))
    put_predictions(settings, [good, bad])
    weave(None, settings, at=T0 + 5 * H, stage=True)
    cat = {c["prediction_id"]: c for c in _raw(settings, "woven_catalog")}
    assert {c["status"] for c in cat.values()} == {"staged"}
    row = cat[bad["prediction_id"]]
    state = fold(data["changes"], key_lo="k07", key_hi="k20", at=row["last_timepoint"])
    key = sorted(state)[0]
    planted = {"weave_id": row["weave_id"], "woven_partition_id": row["child_ids"][0], "source_partition_id": "p0",
               "timepoint": row["last_timepoint"], "as_of_seq": row["last_seq"], "key": key, "value": state[key]}
    write_deltalake(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")

    with pytest.raises(ExpectationFailedError, match="misrouted"):
        gate_weaves(settings)
    st = {c["prediction_id"]: c["status"] for c in _raw(settings, "woven_catalog")}
    assert st == {good["prediction_id"]: "active", bad["prediction_id"]: "quarantined"}
    assert [(q["item_kind"], q["item_id"]) for q in list_quarantine(settings)] == [("weave", row["weave_id"])]
    assert assert_matches_oracle(settings, data, [good], at=T0 + 5 * H) == 3


# --- 7. a probability must be a number in [0, 1] ---------------------------------------------------
@pytest.mark.parametrize("probability", [math.nan, 1.3, -0.2, math.inf])
def test_a_probability_outside_0_1_is_a_contract_violation_and_nothing_is_woven(tmp_path, probability):
    from pathlib import Path

    from weaver.core.errors import ContractViolation
    from weaver.weave import weave

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    ok = prediction("p1", split_key="k30", split_ts=T0 + 3 * H, probability=0.9)
    broken = prediction("p0", split_key="k07", split_ts=T0 + 3 * H, probability=probability)
    put_predictions(settings, [ok, broken])
    with pytest.raises(ContractViolation, match=broken["prediction_id"]):
        weave(None, settings, at=T0 + 5 * H)
    assert not Path(settings.woven).exists()



def test_a_threshold_at_the_calibration_floor_skips_predictions_no_path_crossed(tmp_path):
    """A partition no sample path crossed has raw probability 0 and no split; calibrated, its
    probability is the map's floor (above 0). A threshold at or below that floor must weave the
    others, not refuse the run for a split that was never predicted."""
    from weaver.weave import weave

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    ok = prediction("p0", split_ts=T0 + 3 * H + 30 * M, window=timedelta(hours=9), probability=0.9)
    none = {**prediction("p1", probability=0.0621), "split_key": None, "predicted_split_ts": None,
            "split_ts_p10": None, "split_ts_p90": None, "probability_raw": 0.0}
    put_predictions(settings, [{**ok, "probability_raw": 0.95}, none])
    r = weave(None, settings, at=T0 + 5 * H, confidence_threshold=0.0)
    assert r["new_sequences"] == 1
    assert assert_matches_oracle(settings, data, [ok], at=T0 + 5 * H) == 2
    # Without a raw probability of 0, a likely split with no split key is still malformed.
    from weaver.core.errors import ContractViolation

    put_predictions(settings, [{**none, "probability_raw": 0.5}])
    with pytest.raises(ContractViolation, match=none["prediction_id"]):
        weave(None, settings, at=T0 + 5 * H, confidence_threshold=0.0)


# --- 2. a crash between an extension's data and catalog commits serves nothing unaudited ----------
def test_an_extension_interrupted_before_its_catalog_commit_is_never_served_until_audited(tmp_path):
    from weaver.pipeline import gate_weaves
    from weaver.recover import recover
    from weaver.weave import weave

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    p = prediction("p1", split_key="k30", split_ts=T0 + 3 * H, window=timedelta(hours=6))
    put_predictions(settings, [p])
    weave(None, settings, at=T0 + 4 * H, stage=True)
    gate_weaves(settings)
    (row,) = _raw(settings, "woven_catalog")
    assert (row["status"], row["last_timepoint"]) == ("active", T0 + 4 * H)

    with crash_at("weave.before_catalog"):
        weave(None, settings, at=T0 + 7 * H, stage=True)  # 05:00..07:00 written, catalog not moved
    assert {w["timepoint"] for w in _raw(settings, "woven_snapshots")} >= {T0 + 6 * H}
    rec = recover(settings, "p1", T0 + 6 * H + 30 * M)
    assert rec.timepoint is None or rec.timepoint <= T0 + 4 * H, "an unaudited timepoint was served"
    assert rows_to_dict(rec.table) == fold(data["changes"], key_lo="k20", at=T0 + 6 * H + 30 * M)

    # The rerun (weave, then the gate that audits what the crash left staged) publishes it all.
    weave(None, settings, at=T0 + 7 * H, stage=True)
    gate_weaves(settings)
    weave(None, settings, at=T0 + 7 * H, stage=True)
    gate_weaves(settings)
    (row,) = _raw(settings, "woven_catalog")
    assert (row["status"], row["last_timepoint"]) == ("active", T0 + 7 * H)
    assert assert_matches_oracle(settings, data, [p], at=T0 + 7 * H) == 5
    rec = recover(settings, "p1", T0 + 6 * H + 30 * M)
    assert rec.path == "woven" and rows_to_dict(rec.table) == fold(data["changes"], key_lo="k20", at=T0 + 6 * H + 30 * M)


@pytest.mark.parametrize("probability", [math.nan, 1.3])
def test_advice_refuses_a_probability_outside_0_1(tmp_path, probability):
    from weaver.core.errors import ContractViolation
    from weaver.whatif import advise

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    broken = prediction("p1", split_key="k30", split_ts=T0 + 3 * H, probability=probability)
    put_predictions(settings, [broken])
    with pytest.raises(ContractViolation, match=broken["prediction_id"]):
        advise(settings, at=T0 + 3 * H)
    assert _raw(settings, "advice") == []
