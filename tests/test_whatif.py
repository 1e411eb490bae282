"""What-if weaves (issue 13): origin column, manual weaves against the oracle fold, bad input.

Everything expected comes from tests/oracle.py's brute-force fold of the raw change rows.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from tests.lakes import H, T0, make_log, weave_settings, woven_table, write_lake
from tests.oracle import fold, rows_to_dict


@pytest.fixture()
def lake(tmp_path):
    data = make_log(seed=3)
    return weave_settings(write_lake(tmp_path / "lake", data)), data


def oracle_size_median(state: dict[str, bytes]) -> str:
    """The key k minimising |bytes(< k) - bytes(>= k)| over live keys (item = key + value bytes)."""
    keys = sorted(state)
    w = [len(k.encode()) + len(state[k]) for k in keys]
    total = sum(w)
    best = min(range(1, len(keys)), key=lambda i: (abs(2 * sum(w[:i]) - total), i))
    return keys[best]


# --- 1. woven_catalog.origin ---------------------------------------------------------------------
def test_a_catalog_written_before_origin_existed_reads_predicted_and_the_next_merge_evolves_it(tmp_path):
    from deltalake import DeltaTable, write_deltalake

    from weaver.core import storage
    from weaver.weave import read_woven_catalog, write_woven_catalog

    settings = weave_settings(tmp_path / "lake")
    old_schema = pa.schema([f for f in storage.SCHEMAS[storage.WOVEN_CATALOG] if f.name != "origin"])
    row = {"weave_id": "a" * 16, "prediction_id": "p1", "source_partition_id": "p0", "split_key": "k07",
           "split_ts": T0, "confidence": 0.9, "window_start": T0, "window_end": T0 + H, "child_ids": ["x", "y"],
           "status": "active", "created_at": T0, "last_timepoint": None, "last_seq": None,
           "actual_split_key": None, "actual_split_ts": None, "updated_at": T0}
    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    write_deltalake(uri, pa.Table.from_pylist([row], schema=old_schema))
    assert "origin" not in DeltaTable(uri).schema().to_arrow().names

    assert read_woven_catalog(settings).column("origin").to_pylist() == ["predicted"]
    manual = {**row, "weave_id": "b" * 16, "prediction_id": "manual", "confidence": 1.0, "origin": "manual"}
    write_woven_catalog(settings, [manual])
    assert "origin" in DeltaTable(uri).schema().to_arrow().names
    got = {r["weave_id"]: r["origin"] for r in read_woven_catalog(settings).to_pylist()}
    assert got == {"a" * 16: "predicted", "b" * 16: "manual"}


# --- 2. manual weaves ----------------------------------------------------------------------------
def test_bad_what_ifs_are_named_errors_and_write_nothing(lake):
    from weaver.core.errors import InvalidParameterError, InvalidTimepointError, UnknownPartitionError
    from weaver.whatif import whatif_weave

    settings, data = lake
    end = max(c["ts"] for c in data["changes"])
    bad = [
        (UnknownPartitionError, dict(partition_id="p9", at=T0 + 2 * H)),
        (UnknownPartitionError, dict(partition_id="p0~0123abcd~L", at=T0 + 2 * H)),
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, split_key="k05")),  # below p1's range
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, split_key="k20")),  # == key_lo: empty left
        (InvalidTimepointError, dict(partition_id="p1", at=T0 - H)),  # before the partition existed
        (InvalidTimepointError, dict(partition_id="p1", at=end + timedelta(seconds=1))),  # after the data ends
        (InvalidTimepointError, dict(partition_id="p1", at="2026-01-01T02:00:00")),  # no timezone
        (InvalidTimepointError, dict(partition_id="p0", at=data["splits"][0]["split_ts"] + H)),  # p0 retired
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, until=T0 + H)),  # until before T
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, key_by="median")),
    ]
    for err, kw in bad:
        with pytest.raises(err):
            whatif_weave(None, settings, **kw)  # validation fails before Spark is touched
    assert not (Path(settings.woven)).exists()


@pytest.mark.spark
def test_manual_weave_equals_the_oracle_at_every_timepoint_and_serves_rollback(spark, lake):
    from deltalake import DeltaTable

    from weaver.core import storage
    from weaver.recover import recover
    from weaver.weave import read_woven_catalog, reconcile
    from weaver.whatif import whatif_weave

    settings, data = lake
    changes = data["changes"]
    at, until = T0 + 2 * H + timedelta(minutes=15), T0 + 6 * H + timedelta(minutes=15)
    r = whatif_weave(spark, settings, "p1", at, until=until, key_by="size")
    # The default key is the size median of p1's live items at T, computed here by brute force.
    k = oracle_size_median(fold(changes, key_lo="k20", at=at))
    assert r["split_key"] == k and r["key_by"] == "size" and r["timepoints_written"] == 5
    left_id, right_id = r["child_ids"]
    woven = [w for w in woven_table(settings).to_pylist() if w["weave_id"] == r["weave_id"]]
    tps = [at + i * H for i in range(5)]
    assert sorted({w["timepoint"] for w in woven}) == tps
    for t in tps:
        rows = [w for w in woven if w["timepoint"] == t]
        assert rows_to_dict([w for w in rows if w["woven_partition_id"] == left_id]) == \
            fold(changes, key_lo="k20", key_hi=k, at=t)
        assert rows_to_dict([w for w in rows if w["woven_partition_id"] == right_id]) == fold(changes, key_lo=k, at=t)
        assert {w["as_of_seq"] for w in rows} == {max(c["seq"] for c in changes if c["ts"] <= t)}
    (row,) = [x for x in read_woven_catalog(settings).to_pylist() if x["weave_id"] == r["weave_id"]]
    assert (row["origin"], row["confidence"], row["prediction_id"], row["status"]) == ("manual", 1.0, "manual", "active")

    # Asking again writes nothing (same deterministic weave id, no new version).
    again = whatif_weave(spark, settings, "p1", at, until=until, key_by="size")
    assert again["weave_id"] == r["weave_id"] and again["existing"] and not again["committed"]
    assert again["version"] == r["version"]

    # Confidence 1.0 by construction: served even at the strictest threshold; rollback equals the fold.
    t = at + 3 * H + timedelta(minutes=20)
    rb = recover(settings, right_id, t, confidence_threshold=1.0, mode="rollback")
    assert rb.path == "woven" and rb.weave_id == r["weave_id"]
    assert rows_to_dict(DeltaTable(rb.output).to_pyarrow_table()) == fold(changes, key_lo=k, at=t)
    # Reality neither confirms nor refutes a what-if: it stays active past its window.
    reconcile(settings, at=until + H)
    (row,) = [x for x in read_woven_catalog(settings).to_pylist() if x["weave_id"] == r["weave_id"]]
    assert row["status"] == "active"
    assert storage.version_of(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)) == r["version"]
