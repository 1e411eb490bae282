"""Split prediction on hand-built lakes with known answers (DESIGN §5), edge cases, no look-ahead.

The lakes are written row by row here (change log, lineage, splits) - not by the simulator - so
every expected figure follows from the construction: a partition that grows by exactly
10 000 bytes an hour crosses an 800 000-byte threshold at a known hour, a flat partition never
changes size, a partition whose writes jump close to the write threshold is a throughput risk.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from weaver import storage
from weaver.changelog import Lineage
from weaver.errors import ExpectationFailedError, InvalidParameterError
from weaver.settings import load_settings

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
ITEM = 1000  # bytes per item: 9-byte key + 991-byte value
VALUE = ITEM - 9


# --- hand-built lakes ----------------------------------------------------------------------------
def key(prefix: str, i: int) -> str:
    return f"{prefix}{i:08d}"  # 9 bytes


def write_lake(root: Path, partitions: list[dict], events: list[tuple], *, splits: list[dict] = (),
               policy: dict | None = None) -> Path:
    """Write a contract lake. `events` are (ts, partition_id, key, op, value_bytes); seq follows ts."""
    events = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    rows = {"seq": [], "ts": [], "partition_id": [], "key": [], "op": [], "value": [], "value_bytes": []}
    for i, (ts, pid, k, op, nb) in enumerate(events, start=1):
        rows["seq"].append(i)
        rows["ts"].append(ts)
        rows["partition_id"].append(pid)
        rows["key"].append(k)
        rows["op"].append(op)
        rows["value"].append(b"v" * nb if op == "PUT" else None)
        rows["value_bytes"].append(nb if op == "PUT" else 0)
    root.mkdir(parents=True, exist_ok=True)
    tables = {
        storage.CHANGELOG: pa.table(rows, schema=storage.SCHEMAS[storage.CHANGELOG]),
        storage.PARTITIONS: pa.Table.from_pylist(partitions, schema=storage.SCHEMAS[storage.PARTITIONS]),
        storage.SPLITS: pa.Table.from_pylist(list(splits), schema=storage.SCHEMAS[storage.SPLITS]),
    }
    for name, t in tables.items():
        storage.overwrite(storage.table_uri(str(root), name), name, t)
    if policy:
        p = root / "_weaver" / "lake.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(policy))
    return root


def part(pid: str, lo: str, hi: str | None, *, created: datetime = T0, parent: str | None = None,
         created_seq: int = 0, retired: datetime | None = None, retired_seq: int | None = None) -> dict:
    return {"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": parent, "created_seq": created_seq,
            "created_ts": created, "retired_seq": retired_seq, "retired_ts": retired}


def spread(hour: int, n: int, start: datetime = T0) -> list[datetime]:
    """n instants spread evenly inside hour `hour` (never on the boundary)."""
    base = start + hour * H
    return [base + timedelta(seconds=(j + 0.5) * 3600.0 / n) for j in range(n)] if n else []


def growing(pid: str, prefix: str, hours: int, per_hour: int = 10, start: datetime = T0) -> list[tuple]:
    """Inserts `per_hour` new 1000-byte items every hour: size = 10 000 * hours exactly."""
    ev, i = [], 0
    for h in range(hours):
        for ts in spread(h, per_hour, start):
            ev.append((ts, pid, key(prefix, i), "PUT", VALUE))
            i += 1
    return ev


def flat(pid: str, prefix: str, hours: int, items: int = 50, seed: int = 3) -> list[tuple]:
    """`items` keys written once, then 2..8 same-size updates an hour: size constant."""
    rng = np.random.default_rng(seed)
    ev = [(T0 + timedelta(seconds=1 + j), pid, key(prefix, j), "PUT", VALUE) for j in range(items)]
    for h in range(1, hours):
        for ts in spread(h, int(rng.integers(2, 9))):
            ev.append((ts, pid, key(prefix, int(rng.integers(0, items))), "PUT", VALUE))
    return ev


def burst(pid: str, prefix: str, hours: int, base: int, peak: int, burst_hours: int, items: int = 40,
          seed: int = 5) -> list[tuple]:
    """Same-size updates on `items` keys: `base`/hour (+-10%), the last `burst_hours` hours at `peak`."""
    rng = np.random.default_rng(seed)
    ev = [(T0 + timedelta(seconds=1 + j), pid, key(prefix, j), "PUT", VALUE) for j in range(items)]
    for h in range(1, hours):
        n = peak if h >= hours - burst_hours else int(base * rng.uniform(0.9, 1.1))
        for ts in spread(h, n):
            ev.append((ts, pid, key(prefix, int(rng.integers(0, items))), "PUT", VALUE))
    return ev


HOURS = 72
SIZE_T = 800_000  # growing partition: size 10 000 * h, so it exceeds 800 000 at the end of hour 81
WRITE_T = 100 / 3600.0  # 100 writes an hour


@pytest.fixture(scope="module")
def known_lake(tmp_path_factory) -> Path:
    """g: linear growth (crosses at T0+81h), f: flat, b: update burst to 95 writes/h (threshold 100/h)."""
    root = tmp_path_factory.mktemp("known") / "lake"
    parts = [part("g", "", "b"), part("b", "b", "f"), part("f", "f", None)]
    ev = growing("g", "a", HOURS) + flat("f", "f", HOURS) + burst("b", "b", HOURS, base=15, peak=95, burst_hours=4)
    return write_lake(root, parts, ev, policy={"size_threshold_bytes": SIZE_T, "write_threshold_per_s": WRITE_T,
                                              "bucket": "1h"})


def settings_for(root: Path, **kw):
    return load_settings(lake=str(root), forecast_workers=1, forecast_samples=200, **kw)


AT = T0 + HOURS * H  # the run sees hours 0 .. 71


@pytest.fixture(scope="module")
def prophet_run(known_lake):
    from weaver.forecasting import predict

    return {r["partition_id"]: r for r in predict(settings_for(known_lake), at=AT, write=False).to_pylist()}


# --- known answers -------------------------------------------------------------------------------
def test_linear_growth_predicted_with_timing(prophet_run):
    r = prophet_run["g"]
    assert r["skip_reason"] is None
    assert r["reason"] == "size"
    assert r["probability"] >= 0.9
    truth = T0 + 81 * H  # size at the end of hour 81 is 820 000 > 800 000; at hour 80 it is 800 000
    assert abs(r["predicted_split_ts"] - truth) <= 2 * H
    assert r["split_ts_p10"] <= r["predicted_split_ts"] <= r["split_ts_p90"]
    assert AT < r["split_ts_p10"] and r["split_ts_p90"] <= AT + 24 * H


def test_flat_partition_near_zero(prophet_run):
    r = prophet_run["f"]
    assert r["skip_reason"] is None  # the write rate varies: it is forecast, not skipped
    assert r["probability"] <= 0.05
    assert r["predicted_split_ts"] is None


def test_burst_predicted_as_throughput(prophet_run):
    r = prophet_run["b"]
    assert r["reason"] == "throughput"
    assert r["probability"] >= 0.5


def test_split_keys_known(prophet_run):
    # g holds 720 equal items a00000000 .. a00000719: the byte median is item 360.
    assert prophet_run["g"]["split_key"] == "a00000360"
    # f is not predicted to split; its key is still the size median of 50 equal items.
    assert prophet_run["f"]["split_key"] == "f00000025"
    # b's throughput key lies inside its 40 written keys
    assert "b00000001" <= prophet_run["b"]["split_key"] <= "b00000039"


def test_rows_contract(prophet_run, known_lake):
    from weaver.forecasting import prediction_id

    for pid, r in prophet_run.items():
        assert r["prediction_id"] == prediction_id(AT, pid, "prophet")
        assert r["window_start"] == AT and r["window_end"] == AT + 24 * H
        assert r["threshold"] == 0.75


@pytest.mark.slow
def test_arima_known_answers(known_lake):
    from weaver.forecasting import predict

    rows = {r["partition_id"]: r for r in predict(settings_for(known_lake), at=AT, model="arima",
                                                  write=False).to_pylist()}
    assert rows["g"]["reason"] == "size" and rows["g"]["probability"] >= 0.9
    assert abs(rows["g"]["predicted_split_ts"] - (T0 + 81 * H)) <= 3 * H
    assert rows["f"]["probability"] <= 0.05
    assert rows["b"]["reason"] == "throughput"
