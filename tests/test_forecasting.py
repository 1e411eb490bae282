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
from weaver.errors import InvalidParameterError
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


# --- edge cases ----------------------------------------------------------------------------------
SPLIT_H = 40


@pytest.fixture(scope="module")
def split_lake(tmp_path_factory) -> Path:
    """p inserts 10 items an hour, spread over its key range, for 40 h, then splits at 'a00000200'.

    After the split r keeps gaining 5 items an hour (as its range did inside p) and l only gets
    updates; c is constant (two same-size updates every hour). Size threshold 400 000 B.
    """
    root = tmp_path_factory.mktemp("edge") / "lake"
    split_ts = T0 + SPLIT_H * H
    ev = []
    for h in range(SPLIT_H):  # keys a000 .. a399 in a scattered order: both halves grow 5 000 B/h
        for j, ts in enumerate(spread(h, 10)):
            ev.append((ts, "p", key("a", ((h * 10 + j) * 7919) % 400), "PUT", VALUE))
    rng = np.random.default_rng(1)
    for h in range(SPLIT_H, 60):
        for j, ts in enumerate(spread(h, 5)):
            ev.append((ts, "r", key("a", 400 + (h - SPLIT_H) * 5 + j), "PUT", VALUE))
        for ts in spread(h, 3):
            ev.append((ts, "l", key("a", int(rng.integers(0, 200))), "PUT", VALUE))
    ev += [(T0 + timedelta(seconds=5 + j), "c", key("z", j), "PUT", VALUE) for j in range(10)]
    for h in range(1, 60):
        ev += [(ts, "c", key("z", h % 10), "PUT", VALUE) for ts in spread(h, 2)]
    n_before = sum(1 for e in ev if e[0] < split_ts)
    parts = [part("p", "", "z", retired=split_ts, retired_seq=n_before),
             part("l", "", "a00000200", created=split_ts, parent="p", created_seq=n_before),
             part("r", "a00000200", "z", created=split_ts, parent="p", created_seq=n_before),
             part("c", "z", None)]
    splits = [{"parent_id": "p", "split_seq": n_before, "split_ts": split_ts, "split_key": "a00000200",
               "left_id": "l", "right_id": "r", "reason": "size"}]
    return write_lake(root, parts, ev, splits=splits,
                      policy={"size_threshold_bytes": 400_000, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


def _by_pid(table):
    return {r["partition_id"]: r for r in table.to_pylist()}


def test_partition_retired_later_is_still_forecast_before(split_lake):
    """At 30 h, p is active (its retirement at 40 h has not happened yet); l and r do not exist."""
    from weaver.forecasting import predict

    rows = _by_pid(predict(settings_for(split_lake), at=T0 + 30 * H, model="arima", write=False))
    assert set(rows) == {"p", "c"}
    # 10 000 B/h: 300 000 B at 30 h, exactly 400 000 at 40 h, more at the end of hour 41
    assert rows["p"]["probability"] >= 0.8 and rows["p"]["reason"] == "size"
    assert abs(rows["p"]["predicted_split_ts"] - (T0 + 41 * H)) <= 3 * H


def test_born_minutes_ago_is_skipped(split_lake):
    from weaver.forecasting import predict

    at = T0 + SPLIT_H * H + timedelta(minutes=20)
    rows = _by_pid(predict(settings_for(split_lake), at=at, model="arima", write=False))
    assert set(rows) == {"l", "r", "c"}  # p retired at 40 h: no row
    for pid in ("l", "r"):
        assert rows[pid]["probability"] == 0.0
        assert rows[pid]["skip_reason"].startswith("born 20 min before the run")
        assert rows[pid]["predicted_split_ts"] is None and rows[pid]["split_key"] is None


def test_young_child_inherits_its_range_history(split_lake):
    """r is 5 h old but its key range has 45 h of history: it is forecast, not skipped.

    r's range [a00000200, z) gained 5 000 B/h inside p and keeps doing so: 225 000 B at 45 h,
    exactly 400 000 at 80 h, more at the end of hour 81 - outside a 24 h window, inside a 40 h
    one. l's range stays at 200 000 B.
    """
    from weaver.forecasting import predict

    s = settings_for(split_lake)
    rows = _by_pid(predict(s, at=T0 + 45 * H, model="arima", write=False))
    assert rows["r"]["skip_reason"] is None and rows["l"]["skip_reason"] is None
    assert rows["r"]["probability"] <= 0.2
    rows = _by_pid(predict(s, at=T0 + 45 * H, window=timedelta(hours=40), model="arima", write=False))
    assert rows["r"]["probability"] >= 0.8 and rows["r"]["reason"] == "size"
    assert abs(rows["r"]["predicted_split_ts"] - (T0 + 81 * H)) <= 4 * H
    assert rows["l"]["probability"] <= 0.3  # its growth stopped 5 h ago; a 40 h drift still reaches a few paths


def test_constant_series_and_too_little_history(split_lake):
    from weaver.forecasting import predict

    s = settings_for(split_lake).with_overrides(extra={"forecast_history": "24h"})
    rows = _by_pid(predict(s, at=T0 + 30 * H, write=False))
    assert rows["c"]["skip_reason"].startswith("constant series")
    assert rows["c"]["probability"] == 0.0
    short = settings_for(split_lake)
    rows = _by_pid(predict(short, at=T0 + 8 * H, write=False))  # 8 buckets < 12 needed
    assert all(r["skip_reason"].startswith("too little history: 8 complete buckets") for r in rows.values())
    assert all(r["probability"] == 0.0 for r in rows.values())


def test_before_the_log_and_no_partitions(split_lake, tmp_path):
    from weaver.forecasting import predict

    rows = predict(settings_for(split_lake), at=T0 - 5 * H, write=False)
    assert rows.num_rows == 0  # nothing was active yet


@pytest.mark.parametrize("kw", [
    {"model": "lstm"}, {"window": "10m"}, {"size_threshold": -1}, {"write_threshold": 0},
    {"at": datetime(2026, 3, 3)},
])
def test_bad_parameters_write_nothing(split_lake, kw):
    from weaver.forecasting import predict

    args = {"at": T0 + 30 * H, **kw}
    with pytest.raises(InvalidParameterError):
        predict(settings_for(split_lake), **args)
    assert not storage.is_table(storage.table_uri(str(split_lake), storage.PREDICTIONS))


def test_write_is_idempotent_and_parallel_equals_inline(split_lake, tmp_path):
    import shutil

    from weaver.forecasting import predict, read_predictions

    lake = tmp_path / "lake"
    shutil.copytree(split_lake, lake)
    at = T0 + 50 * H
    a = predict(settings_for(lake), at=at, model="arima")
    b = predict(load_settings(lake=str(lake), forecast_workers=2), at=at, model="arima")
    assert a.to_pylist() == b.to_pylist()
    stored = read_predictions(settings_for(lake))
    assert stored.num_rows == a.num_rows  # MERGE on prediction_id: the rerun wrote the same rows once
    from weaver.forecasting import check_predictions

    assert check_predictions(stored, Lineage.load(settings_for(lake)), )["success"]


@pytest.mark.slow
@pytest.mark.spark
def test_spark_apply_in_pandas_matches_inline(split_lake, spark):
    """The cluster path (applyInPandas over partitions) returns what in-process fits return."""
    from weaver import _models
    from weaver.forecasting import gather, run_jobs, run_params

    s = settings_for(split_lake)
    params = run_params(s, at=T0 + 50 * H, model="arima")
    run = gather(s, params)
    jobs = [_models.Job(p.partition.partition_id, p.ds, p.size, p.rate, run.horizon, params.size_threshold,
                        params.write_threshold, 50, 7, "arima") for p in run.partitions if p.skip_reason is None]
    assert len(jobs) >= 2
    inline = run_jobs(jobs, s, engine="process")
    on_spark = run_jobs(jobs, s, engine="spark", spark=spark)
    for a, b in zip(inline, on_spark):
        assert (a.partition_id, a.probability, a.reason, a.p10, a.p50, a.p90) == \
               (b.partition_id, b.probability, b.reason, b.p10, b.p50, b.p90)
