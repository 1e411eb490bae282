"""Ingest throughput per adapter (changes/s), against a plain pyarrow read of the same input.

Inputs, N changes each on 20% distinct-key reuse, built once per run:

* dynamodb-export: an incremental export (NEW_AND_OLD_IMAGES, 4 gzip'd data files, manifests with
  MD5s) of N records, ingested into a lake that already holds the table's full export (1k items).
  Reference: ``pyarrow.json.read_json`` of the same gzip'd files.
* debezium: one NDJSON file of N Debezium envelopes (c/u/d). Reference: ``pyarrow.json.read_json``.
* delta-cdf: a delta-rs table with ``delta.enableChangeDataFeed = true``: N/2 inserted rows in 5
  commits, then a MERGE updating N/4 and a DELETE of N/4 (CDC files). Reference: pyarrow reads of
  every Parquet file the change feed of those versions is made of (data and ``_change_data``).
* delta-cdf-mapped: the same table with column mapping (``delta.columnMapping.mode = name``), whose
  feed the adapter reads from the log (``weaver.ingest.delta_log``; delta-rs' ``load_cdf`` refuses
  it). Reference: the same pyarrow reads of its files.

Each repeat ingests into a fresh copy of the base lake (copy not timed) through
``weaver.ingest.ingest`` (parse, key encoding, item images, seq/ts/partition, validation, the
ingest_log/changelog/ledger writes) and times the reference read interleaved with it.
Ratio = ingest seconds / reference read seconds (medians).

Run: ``.venv/bin/python bench/ingest.py [--quick]`` -> bench/results/ingest.json
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.ingest import Partitioning, ingest  # noqa: E402
from weaver.ingest.debezium import DebeziumFile  # noqa: E402
from weaver.ingest.delta_cdf import DeltaCDF  # noqa: E402
from weaver.ingest.dynamodb import DynamoDBExport  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402

T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def item(i: int, n: int) -> dict:
    return {"pk": {"S": f"cust#{i:07d}"}, "qty": {"N": str(n)}, "note": {"S": "x" * 40}, "price": {"N": f"{n}.25"}}


def _export(d: Path, eid: str, files: list[list[dict]], summary: dict) -> Path:
    (d / "data").mkdir(parents=True)
    entries = []
    for i, lines in enumerate(files):
        raw = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode(), compresslevel=6)
        (d / "data" / f"{i}.json.gz").write_bytes(raw)
        entries.append({"itemCount": len(lines), "md5Checksum": base64.b64encode(hashlib.md5(raw).digest()).decode(),
                        "etag": "e", "dataFileS3Key": f"p/AWSDynamoDB/{eid}/data/{i}.json.gz"})
    (d / "manifest-files.json").write_text("".join(json.dumps(e) + "\n" for e in entries))
    (d / "manifest-summary.json").write_text(json.dumps({
        "version": "2023-08-01", "exportArn": f"arn:aws:dynamodb:us-east-1:1:table/bench/export/{eid}",
        "tableArn": "arn:aws:dynamodb:us-east-1:1:table/bench", "manifestFilesS3Key": f"p/AWSDynamoDB/{eid}/manifest-files.json",
        "outputFormat": "DYNAMODB_JSON", **summary}))
    return d


def build_dynamodb(root: Path, n: int) -> tuple[Path, Path, Path]:
    base = 1000
    full = _export(root / "full", "full", [[{"Item": item(i, 0)} for i in range(base)]],
                   {"exportType": "FULL_EXPORT", "exportTime": iso(T0)})
    rng = random.Random(1)
    keys = rng.sample(range(n * 5), n)  # an incremental export holds one record per changed item
    recs = []
    for j, k in enumerate(keys):
        rec = {"Metadata": {"WriteTimestampMicros": {"N": str(us(T0) + 1 + j * 50)}}, "Keys": {"pk": {"S": f"cust#{k:07d}"}}}
        if j % 10:
            rec["NewImage"] = item(k, j)
        recs.append(rec)
    inc = _export(root / "inc", "inc", [recs[i::4] for i in range(4)],
                  {"exportType": "INCREMENTAL_EXPORT", "exportFromTime": iso(T0), "outputView": "NEW_AND_OLD_IMAGES",
                   "exportToTime": iso(T0 + timedelta(microseconds=1 + n * 50))})
    lake = root / "lake-dynamodb"
    ingest(load_settings(lake=str(lake)), DynamoDBExport(full, keys="pk"), partitioning=Partitioning(partitions=8))
    return inc, lake, full


def build_debezium(root: Path, n: int) -> Path:
    rng = random.Random(2)
    live: set[int] = set()
    path = root / "events.json"
    with path.open("w") as f:
        for j in range(n):
            k = rng.randrange(int(n * 0.8))
            op = "d" if k in live and rng.random() < 0.1 else ("u" if k in live else "c")
            (live.discard if op == "d" else live.add)(k)
            row = {"id": k, "sku": f"sku-{k}", "qty": j, "price": f"{j}.50"}
            t = us(T0) + j * 1000
            f.write(json.dumps({"before": {"id": k} if op != "c" else None, "after": None if op == "d" else row,
                                "op": op, "ts_ms": t // 1000,
                                "source": {"lsn": 1000 + j * 8, "ts_ms": t // 1000, "ts_us": t, "txId": j,
                                           "snapshot": "false", "db": "shop", "schema": "public", "table": "items",
                                           "sequence": json.dumps([str(1000 + j * 8), str(1000 + j * 8)])}}) + "\n")
    return path


def build_delta(root: Path, n: int, mapped: bool = False) -> str:
    from deltalake import DeltaTable, write_deltalake

    uri = str(root / ("orders-mapped" if mapped else "orders"))
    conf = {"delta.enableChangeDataFeed": "true", **({"delta.columnMapping.mode": "name"} if mapped else {})}
    half = n // 2
    for c in range(5):
        lo, hi = c * half // 5, (c + 1) * half // 5
        t = pa.table({"id": pa.array(range(lo, hi), pa.int64()), "sku": [f"sku-{i}" for i in range(lo, hi)],
                      "qty": pa.array(range(lo, hi), pa.int64())})
        write_deltalake(uri, t, mode="append", configuration=conf if c == 0 else None)
    upd = pa.table({"id": pa.array(range(0, half, 2), pa.int64()), "sku": [f"new-{i}" for i in range(0, half, 2)],
                    "qty": pa.array(range(0, half, 2), pa.int64())})
    (DeltaTable(uri).merge(upd, "t.id = s.id", source_alias="s", target_alias="t")
     .when_matched_update_all().execute())
    DeltaTable(uri).delete(f"id % 2 = 1 AND id < {half}")
    return uri


def ref_json(paths: list[Path]) -> int:
    rows = 0
    for p in paths:
        stream = pa.input_stream(str(p), compression="gzip" if p.suffix == ".gz" else None)
        rows += pj.read_json(stream).num_rows
    return rows


def ref_delta(uri: str) -> int:
    files = [p for p in Path(uri).rglob("*.parquet")]
    return sum(pq.read_table(p).num_rows for p in files)


def run_case(name: str, make_adapter, base_lake: Path | None, ref, repeats: int, work: Path) -> dict:
    ingest_s, ref_s, written = [], [], None
    for r in range(repeats):
        lake = work / f"{name}-{r}"
        if base_lake is not None:
            shutil.copytree(base_lake, lake)
        t0 = time.perf_counter()
        res = ingest(load_settings(lake=str(lake)), make_adapter(), partitioning=Partitioning(partitions=8, tag="S"))
        ingest_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref_rows = ref()
        ref_s.append(time.perf_counter() - t0)
        written = res.changes_written
        shutil.rmtree(lake)
    med_i, med_r = statistics.median(ingest_s), statistics.median(ref_s)
    return {"changes_written": written, "records_read": res.records_read, "reference_rows": ref_rows,
            "ingest_s": round(med_i, 3), "reference_read_s": round(med_r, 4),
            "changes_per_s": round(written / med_i), "reference_rows_per_s": round(ref_rows / med_r),
            "ingest_runs_s": [round(x, 3) for x in ingest_s], "reference_runs_s": [round(x, 4) for x in ref_s],
            "ratio": round(med_i / med_r, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small smoke run; does not overwrite the results file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = ap.parse_args()
    n, repeats = (2000, 1) if args.quick else (args.changes, args.repeats)
    mach = _common.machine("pyarrow", "deltalake")
    with tempfile.TemporaryDirectory(prefix="weaver-bench-ingest-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        inc, dlake, _ = build_dynamodb(work / "ddb", n)
        events = build_debezium(work, n)
        delta = build_delta(work, n)
        mapped = build_delta(work, n, mapped=True)
        build_s = time.perf_counter() - t0
        cases = {
            "dynamodb-export": run_case("ddb", lambda: DynamoDBExport(inc, keys="pk"), dlake,
                                        lambda: ref_json(sorted((inc / "data").glob("*.gz"))), repeats, work),
            "debezium": run_case("dbz", lambda: DebeziumFile(events, keys="id"), None,
                                 lambda: ref_json([events]), repeats, work),
            "delta-cdf": run_case("cdf", lambda: DeltaCDF(delta, keys="id"), None, lambda: ref_delta(delta),
                                  repeats, work),
            "delta-cdf-mapped": run_case("cdfm", lambda: DeltaCDF(mapped, keys="id"), None, lambda: ref_delta(mapped),
                                         repeats, work),
        }
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "bench": "ingest", "machine": mach, "git_commit": commit,
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "params": {"changes": n, "repeats": repeats, "quick": args.quick, "initial_partitions": 8},
        "ratios": {f"ingest_vs_pyarrow_read_{k}": v["ratio"] for k, v in cases.items()},
        "figures": {"build_s": round(build_s, 2), **{k: v for k, v in cases.items()}},
    }
    print(json.dumps({**result["ratios"], **{f"changes_per_s_{k}": v["changes_per_s"] for k, v in cases.items()}},
                     indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
