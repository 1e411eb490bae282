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

from weaver.core import objstore, storage
from weaver.core.errors import ContractViolation, InvalidParameterError
from weaver.core.ids import interval_id
from weaver.core.settings import Settings
from weaver.core.spark import spark_conf
from weaver.core.time import bucket_us, format_duration, to_us
from weaver.log import ChangeLog
from weaver.weave import read_woven_catalog


def _lake_file(settings: Settings, *parts: str) -> str:
    """URI of a plain file under ``<lake>/_weaver`` (a local path or an s3:// object key)."""
    return objstore.lake_file(settings.lake, *parts)


def staging_path(settings: Settings, iid: str) -> str:
    """Where the interval `iid`'s extracted batch is staged (one Parquet file, replaced on rerun)."""
    return _lake_file(settings, "staging", "changelog", f"{iid}.parquet")


def check_interval(settings: Settings, *, start: datetime | None, end: datetime) -> None:
    """A data interval must be whole metrics buckets on the bucket grid: the run's accounting
    (`account_metrics`) sums the buckets that start inside it. Refused with a named error (a
    bucket longer than the DAG's hourly schedule, or one that does not divide it) before any write."""
    if start is None:
        return
    b = settings.bucket
    # In microseconds: Airflow passes pendulum instants, whose Interval % timedelta raises.
    s_us, e_us, b_us = to_us(start), to_us(end), bucket_us(b)
    if e_us <= s_us or (e_us - s_us) % b_us or s_us % b_us:
        raise InvalidParameterError(
            f"the data interval [{start.isoformat()}, {end.isoformat()}) is not a whole number of "
            f"{format_duration(b)} metrics buckets on the bucket grid: use a bucket that divides the DAG's "
            f"schedule interval ({format_duration(end - start)}), e.g. 1h, 30m or 15m for the hourly schedule")


def validate_run(settings: Settings, *, start: datetime | None, end: datetime, window, model: str) -> None:
    """The `temporal_weaver` run's parameters, checked by its first task before anything is written:
    the data interval against the bucket (`check_interval`) and the forecast's window and model at
    the run instant (`weaver.predict.run_params`: a window of at least one bucket, a known model)."""
    from weaver.predict import run_params

    check_interval(settings, start=start, end=end)
    run_params(settings, at=end, window=window, model=model)


def extract(settings: Settings, *, start: datetime | None, end: datetime) -> dict:
    """Stage the change log slice of the data interval [start, end) and describe it.

    The staged batch (Parquet, named by the interval id, replaced on rerun) is what the
    changelog suite checks; the manifest's counts are what later boundaries account for.
    """
    check_interval(settings, start=start, end=end)
    uri = storage.uri_for(settings, storage.CHANGELOG)
    filters = [("ts", "<", pa.scalar(end, storage.TS))]
    if start is not None:
        filters.append(("ts", ">=", pa.scalar(start, storage.TS)))
    changes = storage.read(uri, storage.CHANGELOG, filters=filters)
    changes = changes.take(pc.sort_indices(changes, sort_keys=[("seq", "ascending")])) if changes.num_rows > 1 else changes
    prev_seq = ChangeLog(settings).seq_before(start) if start is not None else 0
    iid = interval_id(start, end)
    path = storage.write_parquet_atomic(staging_path(settings, iid), changes)  # an s3:// key on a remote lake
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


def run_summary(settings: Settings, *, at: datetime, model: str | None = None) -> dict:
    """What the run produced: `model`'s predictions of the run at `at` (None: every model's) and
    the woven catalog's state. The DAG names its model: a backtest of another model may have
    backfilled rows at the same instant, which this run neither made nor wove."""
    only = [("model", "=", model)] if model is not None else []
    preds = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                         filters=[("run_ts", "=", pa.scalar(at, storage.TS)), *only], missing_ok=True)
    cat = read_woven_catalog(settings)
    status = {}
    if cat.num_rows:
        g = cat.group_by("status").aggregate([("weave_id", "count")])
        status = dict(zip(g.column("status").to_pylist(), g.column("weave_id_count").to_pylist()))
    above = int(pc.sum(pc.greater_equal(preds.column("probability"), settings.confidence_threshold)).as_py() or 0) \
        if preds.num_rows else 0
    return {"at": at.isoformat(), "model": model, "predictions": preds.num_rows, "above_threshold": above,
            "woven_catalog": status, "woven_version": storage.version_of(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))}


def write_run_record(settings: Settings, run_id: str, record: dict) -> str:
    """Publish the run's summary next to the lake (replaced on rerun); returns its path or URI."""
    p = _lake_file(settings, "runs", f"{hashlib.sha1(run_id.encode()).hexdigest()[:16]}.json")
    return objstore.write_text(p, json.dumps({"run_id": run_id, **record}, indent=2, default=str),
                               settings.storage_options(p))


def resume_point(settings: Settings, end: datetime) -> datetime | None:
    """Where incremental metrics resume: the last bucket already built (rebuilt, idempotently),
    or None to build from the log's first bucket."""
    uri = storage.uri_for(settings, storage.PARTITION_METRICS)
    if not storage.is_table(uri):
        return None
    m = storage.read(uri, storage.PARTITION_METRICS, filters=[("bucket_start", "<", pa.scalar(end, storage.TS))],
                     columns=["bucket_start"])
    return pc.max(m.column("bucket_start")).as_py() if m.num_rows else None


def job_target(settings: Settings) -> dict:
    """What spark-submit needs to run a job on the same lake: resolved roots and Spark conf."""
    conf = spark_conf(settings, "temporal-weaver-weave")
    conf.pop("spark.app.name", None)
    local = lambda root: root if "://" in root else str(Path(root).resolve())  # noqa: E731
    # spark-submit's own JVM resolves its local address from SPARK_LOCAL_IP: the driver's address.
    return {"lake": local(settings.lake), "woven": local(settings.woven), "spark_conf": conf,
            "spark_env": {"SPARK_LOCAL_IP": settings.spark_driver_host}}
