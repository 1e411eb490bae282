"""Time travel on the woven tier: each weaving run is one Delta version (transaction time).

The queries here are the ones docs/weaving.md documents: Spark SQL ``VERSION AS OF`` /
``TIMESTAMP AS OF`` and delta-rs ``DeltaTable(uri, version=...)`` / ``load_as_version(datetime)``
(wrapped as weaver.weaving.woven_as_of).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.lakes import H, T0, make_log, prediction, put_predictions, weave_settings, woven_table, write_lake
from tests.oracle import fold

pytestmark = pytest.mark.spark


def _rows(table) -> list[tuple]:
    return sorted((r["weave_id"], r["woven_partition_id"], r["timepoint"], r["as_of_seq"], r["key"], bytes(r["value"]))
                  for r in (table.to_pylist() if hasattr(table, "to_pylist") else table))


def _spark_rows(df) -> list[tuple]:
    # Spark returns naive timestamps in the session zone (UTC): make them aware to compare.
    return sorted((r["weave_id"], r["woven_partition_id"], r["timepoint"].replace(tzinfo=timezone.utc)
                   if r["timepoint"].tzinfo is None else r["timepoint"], r["as_of_seq"], r["key"], bytes(r["value"]))
                  for r in df.collect())


def test_earlier_runs_are_queryable_by_version_and_by_timestamp(spark, tmp_path):
    from deltalake import DeltaTable

    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError
    from weaver.weave import weave, woven_as_of

    data = make_log(seed=8)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    p = prediction(split_ts=T0 + 3 * H, window=timedelta(hours=8))
    put_predictions(settings, [p])
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)

    r1 = weave(spark, settings, at=T0 + 5 * H)  # timepoints 03:00 .. 05:00
    after_run_1 = woven_table(settings)
    time.sleep(1.2)
    between = datetime.now(timezone.utc)  # "how did the woven tier look at this wall-clock instant?"
    time.sleep(1.2)
    r2 = weave(spark, settings, at=T0 + 9 * H)  # adds 06:00 .. 09:00
    assert (r1["version"], r2["version"]) == (0, 1)
    now = woven_table(settings)
    assert now.num_rows > after_run_1.num_rows

    # What run 1 wrote is, independently, the oracle's state cut at split_key for 03:00..05:00.
    expected = []
    wid = after_run_1.column("weave_id")[0].as_py()
    left, right = f"p0~{wid[:8]}~L", f"p0~{wid[:8]}~R"
    for h in (3, 4, 5):
        t = T0 + h * H
        seq_t = max(c["seq"] for c in data["changes"] if c["ts"] <= t)
        for k, v in fold(data["changes"], key_lo="", key_hi="k20", at=t).items():
            expected.append((wid, left if k < p["split_key"] else right, t, seq_t, k, v))
    assert _rows(after_run_1) == sorted(expected)

    # delta-rs: by version and by timestamp (the latest version committed at or before it).
    assert _rows(woven_as_of(settings, version=r1["version"])) == sorted(expected)
    assert _rows(woven_as_of(settings, timestamp=between)) == sorted(expected)
    assert _rows(DeltaTable(uri, version=0).to_pyarrow_table()) == sorted(expected)
    assert _rows(woven_as_of(settings, version=r2["version"])) == _rows(now)

    # Spark SQL on the same table.
    v0 = spark.sql(f"SELECT * FROM delta.`{uri}` VERSION AS OF {r1['version']}")
    assert _spark_rows(v0) == sorted(expected)
    ts = between.strftime("%Y-%m-%d %H:%M:%S.%f")
    t0 = spark.sql(f"SELECT * FROM delta.`{uri}` TIMESTAMP AS OF '{ts}'")
    assert _spark_rows(t0) == sorted(expected)
    latest = spark.read.format("delta").load(uri)
    assert _spark_rows(latest) == _rows(now)
    # Valid time vs transaction time: what run 1 believed about 05:00 is what we believe now.
    at5 = spark.sql(f"SELECT * FROM delta.`{uri}` VERSION AS OF 0 WHERE timepoint = TIMESTAMP'2026-01-01 05:00:00'")
    assert _spark_rows(at5) == [e for e in sorted(expected) if e[2] == T0 + 5 * H]
    # The history lists one WRITE per weaving run.
    ops = [h["operation"] for h in sorted(DeltaTable(uri).history(), key=lambda h: h["version"])]
    assert len(ops) == 2

    with pytest.raises(InvalidParameterError):
        woven_as_of(settings)
    with pytest.raises(InvalidParameterError, match="no version"):
        woven_as_of(settings, version=7)
