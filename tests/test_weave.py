"""Weaving (DESIGN §4.2) against the brute-force oracle: hand-built lakes with real splits.

The lakes come from tests/lakes.py (make_log, prediction). Everything expected is derived from
the raw change rows with tests/oracle.py, never from weaver's replay.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.lakes import (
    H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, woven_table, write_lake,
)
from tests.oracle import fold


# --- the lake -----------------------------------------------------------------------------------
def catalog_rows(settings) -> dict[str, dict]:
    from weaver.core import storage

    t = storage.read(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG)
    return {r["weave_id"]: r for r in t.to_pylist()}


@pytest.fixture()
def lake(tmp_path):
    data = make_log(seed=3)
    return weave_settings(write_lake(tmp_path / "lake", data)), data


# --- ids -----------------------------------------------------------------------------------------
def test_ids_are_deterministic_and_never_real_partition_ids():
    from weaver.core.ids import PARTITION_ID_RE
    from weaver.core.ids import child_ids_for, weave_id_for

    wid = weave_id_for("pred-1")
    assert wid == hashlib.sha1(b"pred-1").hexdigest()[:16]
    left, right = child_ids_for("p0007", wid)
    assert (left, right) == (f"p0007~{wid[:8]}~L", f"p0007~{wid[:8]}~R")
    assert not PARTITION_ID_RE.match(left) and not PARTITION_ID_RE.match(right)


# --- weaving against the oracle ------------------------------------------------------------------
@pytest.mark.spark
def test_weave_follows_a_real_split_extends_incrementally_and_reruns_idempotently(spark, lake):
    from weaver.core import storage
    from weaver.checks import validate
    from weaver.weave import weave
    from weaver.checks import woven_check_frame

    settings, data = lake
    split_ts = data["splits"][0]["split_ts"]
    p = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    assert p["window_start"] < T0 + 5 * H < split_ts < T0 + 8 * H < p["window_end"], \
        "the real split must fall inside the window, between the two runs"
    put_predictions(settings, [p])
    r1 = weave(spark, settings, at=T0 + 5 * H)
    assert (r1["new_sequences"], r1["sequences"], r1["timepoints_written"]) == (1, 1, 2)  # 03:30, 04:30
    assert assert_matches_oracle(settings, data, [p], at=T0 + 5 * H) == 2
    cat_after_1 = storage.read(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG)

    r2 = weave(spark, settings, at=T0 + 8 * H)
    assert (r2["new_sequences"], r2["timepoints_written"]) == (0, 3)  # 05:30, 06:30, 07:30
    assert r2["version"] == r1["version"] + 1 and r2["rows_written"] > 0
    assert assert_matches_oracle(settings, data, [p], at=T0 + 8 * H) == 5
    (row,) = catalog_rows(settings).values()
    assert row["status"] == "active" and row["last_timepoint"] == T0 + 7 * H + timedelta(minutes=30)
    assert row["last_seq"] == max(c["seq"] for c in data["changes"] if c["ts"] <= row["last_timepoint"])
    assert row["child_ids"] == [f"p0~{row['weave_id'][:8]}~L", f"p0~{row['weave_id'][:8]}~R"]
    frame = woven_check_frame(settings, sample=0)
    assert len(frame) == 5 and validate("woven", frame, context="test")["success"]

    # Rerunning the same interval writes nothing: no version, no files, same rows, same catalog.
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    cat_uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    before = woven_table(settings)
    files, cat_v = sorted(storage.open_table(uri).file_uris()), storage.version_of(cat_uri)
    again = weave(spark, settings, at=T0 + 8 * H)
    assert (again["timepoints_written"], again["rows_written"], again["committed"]) == (0, 0, False)
    assert storage.version_of(uri) == r2["version"] and sorted(storage.open_table(uri).file_uris()) == files
    assert storage.version_of(cat_uri) == cat_v

    # A retry after a lost catalog update (the woven commit of run 2 landed, its catalog MERGE did
    # not) redoes run 2's timepoints in place: same rows, none twice.
    storage.overwrite(cat_uri, storage.WOVEN_CATALOG, cat_after_1)
    redo = weave(spark, settings, at=T0 + 8 * H)
    assert redo["timepoints_written"] == 3
    key_cols = [("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")]
    assert woven_table(settings).sort_by(key_cols).equals(before.sort_by(key_cols))
    assert catalog_rows(settings)[row["weave_id"]]["last_timepoint"] == row["last_timepoint"]


@pytest.mark.spark
def test_extension_starts_from_the_last_woven_timepoint_and_the_gx_suite_catches_damage(spark, lake):
    """Run 2 continues from the woven state of run 1's last timepoint (not from the base): a row
    planted there is carried forward. The check frame counts it as extra, a moved row as
    misrouted, and the GX suite stops the run."""
    from deltalake import DeltaTable, write_deltalake

    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.checks import validate
    from weaver.weave import weave
    from weaver.checks import woven_check_frame

    settings, data = lake
    put_predictions(settings, [prediction(), prediction(partition_id="p1", split_key="k31", probability=0.95)])
    weave(spark, settings, at=T0 + 5 * H)
    (row,) = [r for r in catalog_rows(settings).values() if r["source_partition_id"] == "p0"]
    planted = {"weave_id": row["weave_id"], "woven_partition_id": row["child_ids"][0], "source_partition_id": "p0",
               "timepoint": row["last_timepoint"], "as_of_seq": row["last_seq"], "key": "k00~planted",
               "value": b"planted"}
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    write_deltalake(uri, pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                    mode="append")
    weave(spark, settings, at=T0 + 7 * H)
    later = sorted(w["timepoint"] for w in woven_table(settings).to_pylist() if w["key"] == "k00~planted")
    assert later == [T0 + timedelta(hours=h, minutes=30) for h in (4, 5, 6)]
    frame = woven_check_frame(settings, sample=0)
    mine = frame[frame["weave_id"] == row["weave_id"]]
    assert list(mine["extra"]) == [0, 1, 1, 1] and (frame[frame["weave_id"] != row["weave_id"]]["extra"] == 0).all()
    with pytest.raises(ExpectationFailedError, match="extra"):
        validate("woven", frame, context="test")

    (other,) = [r for r in catalog_rows(settings).values() if r["source_partition_id"] == "p1"]
    left, right = other["child_ids"]
    k = next(r["key"] for r in woven_table(settings).to_pylist() if r["woven_partition_id"] == left)
    DeltaTable(uri).update(predicate=f"woven_partition_id = '{left}' AND key = '{k}'",
                           updates={"woven_partition_id": f"'{right}'"})
    bad = woven_check_frame(settings, weave_ids=[other["weave_id"]], sample=2)
    assert len(bad) == 2 and bad["misrouted"].sum() > 0 and (bad["extra"] == 0).all()
    with pytest.raises(ExpectationFailedError, match="misrouted"):
        validate("woven", bad, context="test")


@pytest.mark.spark
def test_selection_threshold_and_waiting_for_data(spark, tmp_path):
    """Only the latest run <= at (or --run-ts) above the threshold is woven, and timepoints stop
    where the change log ends, however late `at` is."""
    from weaver.weave import weave

    data = make_log(seed=5, span=timedelta(hours=5), split_at=100)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    max_ts = max(c["ts"] for c in data["changes"])
    assert T0 + 4 * H + timedelta(minutes=30) < max_ts < T0 + 5 * H
    hi = prediction(split_key="k05", probability=0.8, split_ts=T0 + 2 * H + timedelta(minutes=15))
    lo = prediction(partition_id="p1", split_key="k30", probability=0.5)
    old_run = prediction(run_ts=T0 + H, split_key="k03", probability=0.99, split_ts=T0 + H)
    put_predictions(settings, [hi, lo, old_run])
    late = T0 + 9 * H
    r = weave(spark, settings, at=late)  # the latest run <= at is T0+2h: hi passes, lo does not
    assert (r["new_sequences"], r["below_threshold"], r["timepoints_written"]) == (1, 1, 3)  # 2:15, 3:15, 4:15
    assert {c["prediction_id"] for c in catalog_rows(settings).values()} == {hi["prediction_id"]}
    r = weave(spark, settings, at=late, confidence_threshold=0.4)
    assert (r["new_sequences"], r["sequences"]) == (1, 1)  # hi has nothing new to weave
    r = weave(spark, settings, at=T0 + 3 * H, run_ts=T0 + H)
    assert (r["new_sequences"], r["timepoints_written"]) == (1, 3)  # 1:00, 2:00, 3:00 (never past at)
    assert len(catalog_rows(settings)) == 3
    assert_matches_oracle(settings, data, [hi, lo], at=late)
    assert assert_matches_oracle(settings, data, [old_run], at=T0 + 3 * H) == 3


@pytest.mark.spark
def test_base_snapshot_own_root_zstd_and_retention(spark, tmp_path):
    """The log starts after a base snapshot, so only snapshot + tail can give the oracle's state;
    the woven tier lives under its own root, in zstd, with its own retention, protocol (1, 2)."""
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.weave import weave

    full = make_log(seed=9, split_at=120)
    cut = 40
    snap_ts = full["changes"][cut - 1]["ts"]
    state = fold(full["changes"], key_lo="", key_hi="k20", upto_seq=cut)
    data = dict(full, changes=full["changes"][cut:])
    cheap = tmp_path / "cheap" / "woven"
    settings = weave_settings(write_lake(tmp_path / "lake", data), woven_root=str(cheap), woven_retention="3d")
    sid = f"p0@{cut}"
    write_deltalake(storage.uri_for(settings, storage.SNAPSHOTS), pa.Table.from_pylist(
        [{"snapshot_id": sid, "partition_id": "p0", "as_of_seq": cut, "as_of_ts": snap_ts, "key": k, "value": v}
         for k, v in sorted(state.items())], schema=storage.SCHEMAS[storage.SNAPSHOTS]))
    write_deltalake(storage.uri_for(settings, storage.SNAPSHOT_CATALOG), pa.Table.from_pylist(
        [{"snapshot_id": sid, "partition_id": "p0", "as_of_seq": cut, "as_of_ts": snap_ts, "rows": len(state),
          "bytes": 1, "created_at": snap_ts}], schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]))
    p = prediction(split_ts=T0 + 4 * H)
    put_predictions(settings, [p])
    weave(spark, settings, at=T0 + 8 * H)
    # The oracle folds the FULL log (its part before the snapshot is only in the snapshot).
    assert assert_matches_oracle(settings, full, [p], at=T0 + 8 * H) == 5  # 04:00 .. 08:00

    for name in (storage.WOVEN_SNAPSHOTS, storage.WOVEN_CATALOG):
        uri = storage.uri_for(settings, name)
        assert uri.startswith(str(cheap))
        dt = storage.open_table(uri)
        conf = dt.metadata().configuration
        assert conf["delta.deletedFileRetentionDuration"] == "interval 259200 seconds"
        assert conf["delta.logRetentionDuration"] == "interval 259200 seconds"
        for f in dt.file_uris():
            meta = pq.ParquetFile(f).metadata
            assert {meta.row_group(i).column(j).compression for i in range(meta.num_row_groups)
                    for j in range(meta.num_columns)} == {"ZSTD"}
        proto = dt.protocol()
        assert (proto.min_reader_version, proto.min_writer_version) == (1, 2)
    assert not (Path(settings.lake) / "woven").exists()


def test_bad_input_raises_a_named_error_and_writes_nothing(tmp_path):
    """Every refusal happens before Spark is touched (spark=None would fail otherwise)."""
    from weaver.core import storage
    from weaver.core.errors import ContractViolation, InvalidParameterError, SeqGapError, TableNotFoundError
    from weaver.weave import weave

    data = make_log(seed=4)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    with pytest.raises(TableNotFoundError, match="weaver predict"):
        weave(None, settings, at=T0 + 5 * H)
    put_predictions(settings, [prediction(split_key="k25")])  # outside p0's range
    with pytest.raises(ContractViolation, match="strictly inside"):
        weave(None, settings, at=T0 + 5 * H)
    with pytest.raises(InvalidParameterError, match="no look-ahead"):
        weave(None, settings, at=T0 + H, run_ts=T0 + 2 * H)
    with pytest.raises(InvalidParameterError, match="no predictions of model 'path' with run_ts"):
        weave(None, settings, at=T0 + 5 * H, run_ts=T0 + 3 * H)
    # A gap in seq stops the run before anything is written.
    gap = dict(data, changes=[c for c in data["changes"] if c["seq"] != 30])
    settings = weave_settings(write_lake(tmp_path / "gap", gap))
    put_predictions(settings, [prediction()])
    with pytest.raises(SeqGapError, match="after 29") as err:
        weave(None, settings, at=T0 + 5 * H)
    assert err.value.seq == 30
    assert not storage.is_table(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))
    assert not storage.is_table(storage.uri_for(settings, storage.WOVEN_CATALOG))


# --- property: every woven snapshot equals the brute-force fold ----------------------------------
@pytest.mark.spark
@pytest.mark.slow
def test_property_every_woven_snapshot_equals_the_oracle(spark, tmp_path_factory):
    from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st

    from weaver.weave import weave

    @hsettings(max_examples=4, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 10**6), n=st.integers(40, 200), split_frac=st.floats(0.2, 0.8),
           split_key=st.sampled_from(["k03", "k10", "k15"]), pred_key=st.sampled_from(["k01", "k08", "k12", "k19"]),
           offset_min=st.integers(0, 180), cadence_min=st.sampled_from([30, 60, 90]),
           first_at_h=st.integers(3, 7))
    def check(seed, n, split_frac, split_key, pred_key, offset_min, cadence_min, first_at_h):
        data = make_log(seed, n=n, split_at=max(1, int(n * split_frac)), split_key=split_key)
        cadence = timedelta(minutes=cadence_min)
        settings = weave_settings(write_lake(tmp_path_factory.mktemp("prop") / "lake", data),
                                  woven_cadence=f"{cadence_min}m")
        p = prediction(split_key=pred_key, split_ts=T0 + 2 * H + timedelta(minutes=offset_min),
                       window=timedelta(hours=8))
        put_predictions(settings, [p])
        for at in (T0 + first_at_h * H, T0 + 11 * H):
            weave(spark, settings, at=at)
            assert_matches_oracle(settings, data, [p], at=at, cadence=cadence)

    check()


# --- CLI -----------------------------------------------------------------------------------------
@pytest.mark.spark
def test_cli_weave_json(spark, lake):
    import json

    from typer.testing import CliRunner

    from weaver.cli import app

    settings, data = lake
    p = prediction()
    put_predictions(settings, [p])
    res = CliRunner().invoke(app, ["weave", "--lake", settings.lake, "--at", "2026-01-01T06:00:00Z", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["timepoints_written"] == 3 and out["new_sequences"] == 1
    # The real split of p0 happened before 06:00, inside the window: the CLI's reconcile confirms it.
    assert data["splits"][0]["split_ts"] < T0 + 6 * H
    assert out["reconcile"]["statuses"] == {"confirmed": 1} and out["reconcile"]["confirmed"] == 1
    assert_matches_oracle(settings, data, [p], at=T0 + 6 * H)
    bad = CliRunner().invoke(app, ["weave", "--lake", settings.lake, "--at", "2026-01-01T06:00:00", "--json"])
    assert bad.exit_code != 0
    # The woven rows deleted by hand: the next run re-weaves the sequence from its base, not from
    # rows that no longer exist.
    import shutil

    from weaver.core import storage

    shutil.rmtree(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))
    res = CliRunner().invoke(app, ["weave", "--lake", settings.lake, "--at", "2026-01-01T06:00:00Z", "--json",
                                   "--no-reconcile"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["timepoints_written"] == 3
    assert_matches_oracle(settings, data, [p], at=T0 + 6 * H)
