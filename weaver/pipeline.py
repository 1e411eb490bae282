"""Stage functions of the `temporal_weaver` loop that are not a model or a Spark job.

The DAG is wiring only; each task body calls one function here (or in metrics / forecasting /
weaving). Every function takes the data interval explicitly, so a rerun of the same interval
produces the same rows, and returns a small JSON-able manifest for XCom.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weaver import storage
from weaver.changelog import Lineage, read_changes, seq_at
from weaver.errors import ContractViolation, ExpectationFailedError
from weaver.settings import Settings


def interval_id(start: datetime | None, end: datetime) -> str:
    """Deterministic id of a data interval (names its staged batch)."""
    raw = f"{start.isoformat() if start else '-'}|{end.isoformat()}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def staging_path(settings: Settings, iid: str) -> Path:
    return Path(settings.lake) / "_weaver" / "staging" / "changelog" / f"{iid}.parquet"


def changelog_check_frame(changes: pa.Table, lineage: Lineage, expected_first_seq: int | None) -> "pd.DataFrame":  # noqa: F821
    """One row per change with the flags the `changelog` suite asserts.

    `seq_step` is the distance to the previous seq (the first row's to `expected_first_seq - 1`),
    `in_range` whether the key lies in its partition's range, `owner_ok` whether that partition
    owned this seq (created_seq < seq <= retired_seq). Nothing here raises: the suite decides.
    """
    import pandas as pd

    t = changes.select(["seq", "ts", "partition_id", "key", "op", "value_bytes"])
    t = t.take(pc.sort_indices(t, sort_keys=[("seq", "ascending")])) if t.num_rows > 1 else t
    df = t.to_pandas()
    if df.empty:
        for c in ("seq_step", "in_range", "owner_ok"):
            df[c] = pd.Series(dtype="int64" if c == "seq_step" else "bool")
        return df
    prev = df["seq"].shift(1)
    if expected_first_seq is not None:
        prev.iloc[0] = expected_first_seq - 1
    else:
        prev.iloc[0] = df["seq"].iloc[0] - 1
    df["seq_step"] = (df["seq"] - prev).astype("int64")
    parts = pd.DataFrame([
        {"partition_id": p.partition_id, "_lo": p.key_lo, "_hi": p.key_hi, "_c": p.created_seq, "_r": p.retired_seq}
        for p in lineage
    ])
    j = df.merge(parts, on="partition_id", how="left")
    known = j["_lo"].notna()
    in_range = known & (j["key"] >= j["_lo"].fillna("")) & (j["_hi"].isna() | (j["key"] < j["_hi"].fillna("")))
    owner = known & (j["seq"] > j["_c"].fillna(0)) & (j["_r"].isna() | (j["seq"] <= j["_r"].fillna(0)))
    df["in_range"] = in_range.to_numpy(dtype=bool)
    df["owner_ok"] = owner.to_numpy(dtype=bool)
    df["value_bytes"] = df["value_bytes"].fillna(0)
    return df


def extract(settings: Settings, *, start: datetime | None, end: datetime) -> dict:
    """Stage the change log slice of the data interval [start, end) and describe it.

    The staged batch (Parquet, named by the interval id, replaced on rerun) is what the
    changelog suite checks; the manifest's counts are what later boundaries account for.
    """
    uri = storage.uri_for(settings, storage.CHANGELOG)
    filters = [("ts", "<", pa.scalar(end, storage.TS))]
    if start is not None:
        filters.append(("ts", ">=", pa.scalar(start, storage.TS)))
    changes = storage.read(uri, storage.CHANGELOG, filters=filters)
    changes = changes.take(pc.sort_indices(changes, sort_keys=[("seq", "ascending")])) if changes.num_rows > 1 else changes
    prev_seq = _seq_before(settings, start) if start is not None else 0
    iid = interval_id(start, end)
    path = staging_path(settings, iid)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(changes, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a batch
    per_part = {}
    if changes.num_rows:
        g = changes.group_by("partition_id").aggregate([("seq", "count")])
        per_part = dict(zip(g.column("partition_id").to_pylist(), g.column("seq_count").to_pylist()))
    seqs = changes.column("seq")
    return {
        "interval_id": iid,
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        "changes": changes.num_rows,
        "first_seq": int(pc.min(seqs).as_py()) if changes.num_rows else None,
        "last_seq": int(pc.max(seqs).as_py()) if changes.num_rows else None,
        "expected_first_seq": prev_seq + 1 if prev_seq else None,
        "per_partition": per_part,
        "staged": str(path),
    }


def _seq_before(settings: Settings, start: datetime) -> int:
    """Largest seq with ts < start (the change just before the interval), 0 if none."""
    t = storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG,
                     filters=[("ts", "<", pa.scalar(start, storage.TS))], columns=["seq"])
    return int(pc.max(t.column("seq")).as_py()) if t.num_rows else 0


def check_changelog(settings: Settings, manifest: dict) -> dict:
    """Run the `changelog` GX suite on the staged batch; raise ExpectationFailedError on a bad batch."""
    from weaver.quality import validate

    changes = pq.read_table(manifest["staged"])
    if changes.num_rows != manifest["changes"]:
        raise ExpectationFailedError(
            f"staged batch {manifest['staged']} holds {changes.num_rows} changes, extract reported {manifest['changes']}"
        )
    frame = changelog_check_frame(changes, Lineage.load(settings), manifest.get("expected_first_seq"))
    return validate("changelog", frame, context=f"interval {manifest['start']} .. {manifest['end']}")


def account_metrics(settings: Settings, manifest: dict) -> dict:
    """Nothing lost: the metrics' writes over the interval's buckets equal the extracted changes."""
    if manifest["start"] is None:
        return {"checked": False, "reason": "open interval"}
    start, end = datetime.fromisoformat(manifest["start"]), datetime.fromisoformat(manifest["end"])
    m = storage.read(storage.uri_for(settings, storage.PARTITION_METRICS), storage.PARTITION_METRICS,
                     filters=[("bucket_start", ">=", pa.scalar(start, storage.TS)),
                              ("bucket_start", "<", pa.scalar(end, storage.TS))],
                     columns=["writes"])
    writes = int(pc.sum(m.column("writes")).as_py() or 0)
    if writes != manifest["changes"]:
        raise ContractViolation(
            f"partition_metrics count {writes} writes in [{manifest['start']}, {manifest['end']}) but "
            f"{manifest['changes']} changes were extracted; rebuild the metrics for this interval"
        )
    return {"checked": True, "writes": writes}


def run_summary(settings: Settings, *, at: datetime) -> dict:
    """What the run produced: predictions of the run at `at` and the woven catalog's state."""
    preds = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                         filters=[("run_ts", "=", pa.scalar(at, storage.TS))], missing_ok=True)
    cat = storage.read(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)
    status = {}
    if cat.num_rows:
        g = cat.group_by("status").aggregate([("weave_id", "count")])
        status = dict(zip(g.column("status").to_pylist(), g.column("weave_id_count").to_pylist()))
    above = int(pc.sum(pc.greater_equal(preds.column("probability"), settings.confidence_threshold)).as_py() or 0) \
        if preds.num_rows else 0
    return {"at": at.isoformat(), "predictions": preds.num_rows, "above_threshold": above,
            "woven_catalog": status, "woven_version": storage.version_of(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))}


def write_run_record(settings: Settings, run_id: str, record: dict) -> Path:
    """Publish the run's summary next to the lake (replaced on rerun)."""
    p = Path(settings.lake) / "_weaver" / "runs" / f"{hashlib.sha1(run_id.encode()).hexdigest()[:16]}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"run_id": run_id, **record}, indent=2, default=str))
    return p


def resume_point(settings: Settings, end: datetime) -> datetime | None:
    """Where incremental metrics resume: the last bucket already built (rebuilt, idempotently),
    or None to build from the log's first bucket."""
    uri = storage.uri_for(settings, storage.PARTITION_METRICS)
    if not storage.is_table(uri):
        return None
    m = storage.read(uri, storage.PARTITION_METRICS, filters=[("bucket_start", "<", pa.scalar(end, storage.TS))],
                     columns=["bucket_start"])
    return pc.max(m.column("bucket_start")).as_py() if m.num_rows else None


def check_predictions(settings: Settings, *, at: datetime) -> dict:
    """Run the `predictions` GX suite on the predictions of the run at `at`."""
    from weaver.forecasting import check_predictions as run_suite

    preds = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                         filters=[("run_ts", "=", pa.scalar(at, storage.TS))])
    return run_suite(preds, Lineage.load(settings), at=at, context=f"run {at.isoformat()}")


def check_woven(settings: Settings) -> dict:
    """Run the `woven` GX suite (DESIGN §4.2 on sampled woven snapshots)."""
    from weaver.quality import validate
    from weaver.weaving import woven_check_frame

    return validate("woven", woven_check_frame(settings), context=f"woven tier {settings.woven}")


def job_target(settings: Settings) -> dict:
    """What spark-submit needs to run a job on the same lake: resolved roots and Spark conf."""
    from weaver.spark import spark_conf

    conf = spark_conf(settings, "temporal-weaver-weave")
    conf.pop("spark.app.name", None)
    local = lambda root: root if "://" in root else str(Path(root).resolve())  # noqa: E731
    # spark-submit's own JVM resolves its local address from SPARK_LOCAL_IP: the driver's address.
    return {"lake": local(settings.lake), "woven": local(settings.woven), "spark_conf": conf,
            "spark_env": {"SPARK_LOCAL_IP": settings.spark_driver_host}}
