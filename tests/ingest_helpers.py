"""Helpers of the ingestion tests: write DynamoDB exports as AWS does, read a lake's state back.

Nothing here imports the adapters: exports are written from the test's own record of writes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_export(root: Path, export_id: str, *, table: str, lines_per_file: list[list[dict]], export_type: str,
                 export_time: datetime | None = None, from_time: datetime | None = None,
                 to_time: datetime | None = None, view: str = "NEW_AND_OLD_IMAGES") -> Path:
    """One export folder <root>/AWSDynamoDB/<export_id> with gzip'd data files and both manifests."""
    d = root / "AWSDynamoDB" / export_id
    (d / "data").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, lines in enumerate(lines_per_file):
        name = f"{export_id}-{i:03d}.json.gz"
        raw = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())
        (d / "data" / name).write_bytes(raw)
        entries.append({"itemCount": len(lines), "md5Checksum": base64.b64encode(hashlib.md5(raw).digest()).decode(),
                        "etag": hashlib.md5(raw).hexdigest(), "dataFileS3Key": f"exports/AWSDynamoDB/{export_id}/data/{name}"})
    (d / "manifest-files.json").write_text("".join(json.dumps(e) + "\n" for e in entries))
    summary = {"version": "2023-08-01" if export_type == "INCREMENTAL_EXPORT" else "2020-06-30",
               "exportArn": f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/export/{export_id}",
               "startTime": iso(datetime.now(timezone.utc)), "endTime": iso(datetime.now(timezone.utc)),
               "tableArn": f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}", "tableId": "t-1",
               "s3Bucket": "bucket", "s3Prefix": "exports", "s3SseAlgorithm": "AES256", "s3SseKmsKeyId": None,
               "manifestFilesS3Key": f"exports/AWSDynamoDB/{export_id}/manifest-files.json",
               "billedSizeBytes": 0, "itemCount": sum(map(len, lines_per_file)), "outputFormat": "DYNAMODB_JSON",
               "exportType": export_type}
    if export_type == "FULL_EXPORT":
        summary["exportTime"] = iso(export_time)
    else:
        summary.update(exportFromTime=iso(from_time), exportToTime=iso(to_time), outputView=view)
    (d / "manifest-summary.json").write_text(json.dumps(summary))
    return d


def lake_state(settings, at: datetime) -> dict:
    """The whole table at `at` through the weaver: restore_partition of every active partition."""
    from weaver.log import Lineage
    from weaver.ingest.keys import decode_key
    from weaver.ingest.values import decode_item
    from weaver.pitr import restore_partition

    lineage = Lineage.load(settings)
    out = {}
    for p in lineage.active():
        t = restore_partition(settings, p.partition_id, at, lineage=lineage).table
        for k, v in zip(t.column("key").to_pylist(), t.column("value").to_pylist()):
            out[decode_key(k)] = decode_item(v)
    return out


def lake_fingerprint(settings) -> dict:
    """Delta versions of every table ingestion may write (to prove a refused input wrote nothing)."""
    from weaver.core import storage

    return {n: storage.version_of(storage.uri_for(settings, n))
            for n in (storage.CHANGELOG, storage.PARTITIONS, storage.INGEST_LOG, storage.INGEST_WATERMARKS)}
