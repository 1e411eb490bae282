"""The two weaving engines (weaver.weave.engine): Arrow and Spark write the same rows, both equal to
the oracle fold (tests/oracle.py via tests/lakes.assert_matches_oracle), and an Arrow rerun of the
same interval changes nothing. The lake has a real split inside the window, base snapshots of the
parent and of its children (a new sequence starts from several pieces), the change log in many
small commits (file pruning), and two sequences on overlapping ranges.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_id_of, \
    weave_settings, woven_table, write_lake

KEY_COLS = [("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")]


def _lake(root, engine: str, data: dict, preds: list[dict]):
    # Snapshots at seq 40 (p0, p1) and 120 (p1, p2, p3: after the real split at seq 90).
    s = weave_settings(write_lake(root, data, [40, 120], log_chunk=25), weave_engine=engine)
    put_predictions(s, preds)
    return s


def _predictions() -> list[dict]:
    """The default model's predictions of the run (woven) and, last, another model's of p0 at the
    same run: in the lake, never woven (a run weaves one model's predictions)."""
    return [prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9)),
            prediction(partition_id="p1", split_key="k31", probability=0.95),
            prediction(partition_id="p0", split_key="k13", model="arima", probability=0.8,
                       split_ts=T0 + 4 * H, window=timedelta(hours=9))]


@pytest.mark.spark
def test_arrow_and_spark_weave_the_same_rows_as_the_oracle(spark, tmp_path):
    from weaver.core import storage
    from weaver.weave import weave

    data, preds = make_log(seed=11, n=240), _predictions()
    arrow, sp = _lake(tmp_path / "arrow", "arrow", data, preds), _lake(tmp_path / "spark", "spark", data, preds)
    # Both in two runs: from the bases, then an extension from their own woven rows (Spark reads
    # its last timepoint back through the broadcast join of weaver.replay.spark): same rows.
    r1, rs1 = weave(None, arrow, at=T0 + 5 * H), weave(spark, sp, at=T0 + 5 * H)
    r2, rs2 = weave(None, arrow, at=T0 + 9 * H), weave(spark, sp, at=T0 + 9 * H)
    assert [r["engine"] for r in (r1, r2, rs1, rs2)] == ["arrow", "arrow", "spark", "spark"]
    assert [r["timepoints_written"] for r in (r1, r2)] == [r["timepoints_written"] for r in (rs1, rs2)]
    assert [r["rows_written"] for r in (r1, r2)] == [r["rows_written"] for r in (rs1, rs2)]
    assert r1["timepoints_written"] > 0 and r2["timepoints_written"] > 0 and r2["rows_written"] > 0
    a, b = woven_table(arrow).sort_by(KEY_COLS), woven_table(sp).sort_by(KEY_COLS)
    assert a.equals(b)
    # The other model's prediction of p0 stayed out of both engines' runs.
    assert set(a.column("weave_id").to_pylist()) == {weave_id_of(p["prediction_id"]) for p in preds[:2]}
    assert assert_matches_oracle(sp, data, preds[:2], at=T0 + 9 * H) >= 9

    # Same layout and properties whichever engine wrote the table.
    ua, us = (storage.open_table(storage.uri_for(x, storage.WOVEN_SNAPSHOTS)) for x in (arrow, sp))
    assert ua.metadata().partition_columns == us.metadata().partition_columns == ["weave_id"]
    for k in ("delta.logRetentionDuration", "delta.deletedFileRetentionDuration"):
        assert ua.metadata().configuration[k] == us.metadata().configuration[k]
    assert (ua.protocol().min_reader_version, ua.protocol().min_writer_version) == (1, 2)


@pytest.mark.spark
def test_a_large_spark_run_writes_each_weave_from_one_task_with_the_oracles_rows(spark, tmp_path, monkeypatch):
    # A run of more than CONCURRENT_WRITERS sequences (forced here with a limit of 1) shuffles the
    # events by weave_id into weave_tasks() tasks and writes through the sort: the rows are still
    # the oracle's, and each weave's rows of one commit are one file (one task), not one per task
    # (the key-partitioned path writes one per task: this fails without the weave_id shuffle).
    from weaver.weave import run as weave_run

    monkeypatch.setattr(weave_run, "CONCURRENT_WRITERS", 1)
    # AQE would coalesce this small run's shuffle into one task and hide the layout.
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    monkeypatch.setattr(weave_run, "WEAVE_TIMEPOINTS_PER_TASK", 1)  # as many tasks as sequences
    try:
        _large_run(spark, tmp_path)
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")


def _large_run(spark, tmp_path):
    from weaver.core import storage
    from weaver.weave import weave

    data, preds = make_log(seed=11, n=240), _predictions()
    sp = _lake(tmp_path / "spark", "spark", data, preds)
    uri = storage.uri_for(sp, storage.WOVEN_SNAPSHOTS)
    for at in (T0 + 5 * H, T0 + 9 * H):
        before = set(storage.open_table(uri).file_uris()) if storage.is_table(uri) else set()
        r = weave(spark, sp, at=at)
        assert r["engine"] == "spark" and r["sequences"] >= 2 and r["rows_written"] > 0
        new = set(storage.open_table(uri).file_uris()) - before
        weave_of = [f.split("weave_id=")[1].split("/")[0] for f in new]
        assert len(weave_of) == len(set(weave_of)) == r["sequences"], sorted(new)
    assert assert_matches_oracle(sp, data, preds[:2], at=T0 + 9 * H) >= 9


def test_an_arrow_rerun_changes_nothing_and_a_lost_catalog_update_is_redone_in_place(tmp_path):
    from weaver.core import storage
    from weaver.weave import weave

    data, preds = make_log(seed=5, n=200), _predictions()
    s = _lake(tmp_path / "lake", "auto", data, preds)
    r1 = weave(None, s, at=T0 + 5 * H)
    assert r1["engine"] == "arrow" and r1["committed"]  # auto: a small run stays in this process
    cat_uri, uri = (storage.uri_for(s, n) for n in (storage.WOVEN_CATALOG, storage.WOVEN_SNAPSHOTS))
    cat_after_1 = storage.read(cat_uri, storage.WOVEN_CATALOG)
    r2 = weave(None, s, at=T0 + 9 * H)
    assert r2["version"] == r1["version"] + 1 and r2["rows_written"] > 0
    assert assert_matches_oracle(s, data, preds[:2], at=T0 + 9 * H) >= 3
    before, files, cat_v = woven_table(s).sort_by(KEY_COLS), sorted(storage.open_table(uri).file_uris()), \
        storage.version_of(cat_uri)

    again = weave(None, s, at=T0 + 9 * H)
    assert (again["committed"], again["rows_written"], again["engine"]) == (False, 0, None)
    assert storage.version_of(uri) == r2["version"] and sorted(storage.open_table(uri).file_uris()) == files
    assert storage.version_of(cat_uri) == cat_v

    # The woven commit of run 2 landed, its catalog MERGE did not: the rerun replaces its own rows.
    storage.overwrite(cat_uri, storage.WOVEN_CATALOG, cat_after_1)
    redo = weave(None, s, at=T0 + 9 * H)
    assert redo["engine"] == "arrow" and redo["timepoints_written"] == r2["timepoints_written"]
    assert woven_table(s).sort_by(KEY_COLS).equals(before)
    assert assert_matches_oracle(s, data, preds[:2], at=T0 + 9 * H) >= 3


def test_auto_picks_spark_at_the_threshold_and_the_setting_is_validated(tmp_path):
    from weaver.core.errors import InvalidParameterError
    from weaver.core.settings import load_settings
    from weaver.pitr import Piece
    from weaver.weave.engine import choose_engine
    from weaver.weave.plan import Sequence

    seq = Sequence(weave_id="w", prediction_id="p", source_partition_id="p0", key_lo="", key_hi=None,
                   split_key="k", split_ts=T0, confidence=0.9, window_start=T0, window_end=T0 + H,
                   status="active", created_at=T0, tp_seqs=[150, 400],
                   pieces=[Piece("", "k5", None, None, 0), Piece("k5", None, "s", "p0", 100)])
    s = load_settings(env={"WEAVER_WEAVE_SPARK_MIN_CHANGES": "400"}, lake=str(tmp_path))
    assert choose_engine(s, [seq]) == ("spark", 400)  # 400 seqs from the lowest base (0) to the last timepoint
    assert choose_engine(s.with_overrides(weave_spark_min_changes=401), [seq]) == ("arrow", 400)
    # A session on a cluster master weaves with Spark whatever the size; a forced engine still wins.
    assert choose_engine(s.with_overrides(weave_spark_min_changes=401), [seq], cluster=True)[0] == "spark"
    assert choose_engine(s.with_overrides(weave_engine="arrow"), [seq], cluster=True)[0] == "arrow"
    assert choose_engine(s.with_overrides(weave_engine="arrow", weave_spark_min_changes=0), [seq])[0] == "arrow"
    with pytest.raises(InvalidParameterError, match="weave_engine"):
        load_settings(env={"WEAVER_WEAVE_ENGINE": "dask"}, lake=str(tmp_path))
