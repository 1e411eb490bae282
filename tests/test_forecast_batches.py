"""The forecast stage in batches of neighbouring partitions (issue 11 point 4) gives the whole-table
run's rows exactly, and its split keys equal a brute-force fold of the change log."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from tests.oracle import fold
from weaver.core import storage
from weaver.core.errors import InvalidParameterError
from weaver.core.settings import load_settings
from weaver.log.lineage import Lineage

H = timedelta(hours=1)


@pytest.fixture(scope="module")
def sim_lake(tmp_path_factory):
    """Two days, 4 initial partitions, a hot spot sweeping the key space (the path model's cross-partition
    context is not empty): 29 partitions alive at the run, split children side by side, deletes."""
    from weaver.simulate import SimConfig, simulate

    root = tmp_path_factory.mktemp("fbatch") / "lake"
    cfg = SimConfig(seed=5, partitions=4, days=2, base_rate=120.0, size_threshold_bytes=300_000,
                    write_threshold_per_s=0.3, shape="drift")
    simulate(str(root), cfg)
    return root, cfg


def _settings(lake, batch: int, **kw):
    return load_settings(lake=str(lake), forecast_workers=1, forecast_samples=40, forecast_batch_partitions=batch, **kw)


def _changes(lake) -> list[dict]:
    s = load_settings(lake=str(lake))
    t = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG,
                     columns=["seq", "ts", "key", "op", "value"])
    return t.to_pylist()


def _balanced(keys: list[str], weights: list[float]) -> str | None:
    """Brute force: the key (index >= 1) whose left side is closest to half; the first on ties."""
    if len(keys) < 2:
        return None
    total = sum(weights)
    best, best_i = None, None
    for i in range(1, len(keys)):
        d = abs(2 * sum(weights[:i]) - total)
        if best is None or d < best:
            best, best_i = d, i
    return keys[best_i]


def _oracle_keys(changes, p, at, bucket) -> tuple[str | None, str | None]:
    state = fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=at)
    live = sorted(state)
    size_key = _balanced(live, [len(k.encode()) + len(state[k]) for k in live])
    recent = [c["key"] for c in changes if at - bucket < c["ts"] <= at and c["key"] >= (p.key_lo or "")
              and (p.key_hi is None or c["key"] < p.key_hi)]
    if len(live) < 2 or not recent:
        return size_key, None
    uniq = sorted(set(recent))
    k = _balanced(uniq, [recent.count(u) for u in uniq]) if len(uniq) >= 2 else uniq[0]
    return size_key, min(max(k, live[1]), live[-1])


def _lake_with(sim_lake, tmp_path, metrics: bool):
    root, cfg = sim_lake
    lake = tmp_path / "lake"
    shutil.copytree(root, lake)
    at = cfg.start + timedelta(days=cfg.days) - 2 * H - timedelta(minutes=17)
    if metrics:  # the DAG's metrics task ran: checkpoints exist, the batches fold from one
        from weaver.predict import build_metrics

        build_metrics(_settings(lake, 0), end=at.replace(minute=0))
    return lake, at


@pytest.mark.parametrize("metrics", [True, False], ids=["checkpointed", "from-the-log"])
def test_batched_run_equals_one_batch_and_the_oracle(sim_lake, tmp_path, metrics, monkeypatch):
    from weaver.predict import forecasting as f
    from weaver.predict import metrics as m

    copied = []  # the batches' change-log reads come from the run's local copies (read once)
    monkeypatch.setattr(m._LocalLog, "read", lambda self, *a, _r=m._LocalLog.read: copied.append(1) or _r(self, *a))

    lake, at = _lake_with(sim_lake, tmp_path, metrics)
    lineage = Lineage.load(_settings(lake, 0))
    active = lineage.active_at_ts(at)
    children = [p for p in active if p.parent_id]
    siblings = {p.parent_id for p in children if sum(q.parent_id == p.parent_id for q in children) == 2}
    assert len(active) >= 6 and siblings, "the lake must have split children side by side"
    groups = f.batches(active, 3)
    assert len(groups) >= 3
    # A batch boundary falls between two children of one split (else the test proves little).
    assert any(a[-1].parent_id == b[0].parent_id and a[-1].parent_id in siblings for a, b in zip(groups, groups[1:]))
    for model in ("path", "arima"):
        one = f.predict(_settings(lake, 0), at=at, model=model, write=False)
        copied.clear()
        many = f.predict(_settings(lake, 3), at=at, model=model, write=False)
        assert many.to_pylist() == one.to_pylist(), model
        assert len(copied) >= len(groups), model
        assert one.num_rows == len(active)
        fitted = [r for r in one.to_pylist() if r["skip_reason"] is None]
        assert fitted, model  # some partitions were really forecast
    # Split keys of every partition, batch by batch, against a brute-force fold of the log.
    changes = _changes(lake)
    params = f.run_params(_settings(lake, 3), at=at, model="path")
    first = f.log_first_bucket(_settings(lake, 3), at, int(params.bucket.total_seconds() * 1e6))
    seen = []
    for g in groups:
        run = f.gather(_settings(lake, 3), params, lineage=lineage, partitions=g, first_us=first)
        seen += [pin.partition.partition_id for pin in run.partitions]
        for pin in run.partitions:
            assert (pin.size_key, pin.throughput_key) == _oracle_keys(changes, pin.partition, at, params.bucket), \
                pin.partition.partition_id
    assert seen == [p.partition_id for p in active]
    whole = f.gather(_settings(lake, 0), params, lineage=lineage)
    assert any("hot" in c for c in f.job_context(whole).values()), "the hot spot must reach the path model's jobs"
    rows = {r["partition_id"]: r for r in many.to_pylist()}
    for p in active:
        r = rows[p.partition_id]
        if r["split_key"] is not None:
            size_key, tp_key = _oracle_keys(changes, p, at, params.bucket)
            assert r["split_key"] == ((tp_key or size_key) if r["reason"] == "throughput" else size_key)


def test_staged_batched_run_is_idempotent(sim_lake, tmp_path):
    from weaver.predict import forecasting as f

    lake, at = _lake_with(sim_lake, tmp_path, True)
    a = f.predict(_settings(lake, 2), at=at, model="path", stage=True)
    b = f.predict(_settings(lake, 2), at=at, model="path", stage=True)
    assert a.to_pylist() == b.to_pylist()
    staged = storage.read(storage.uri_for(_settings(lake, 2), storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED)
    assert staged.num_rows == a.num_rows  # MERGE on prediction_id: written once


@pytest.mark.parametrize("field", ["forecast_batch_partitions", "metrics_batch_partitions"])
def test_negative_batch_size_is_refused(tmp_path, monkeypatch, field):
    with pytest.raises(InvalidParameterError, match=field):
        load_settings(lake=str(tmp_path / "lake"), **{field: -1})
    monkeypatch.setenv("WEAVER_" + field.upper(), "-3")  # the same through the environment
    with pytest.raises(InvalidParameterError, match=field):
        load_settings(lake=str(tmp_path / "lake"))
    assert not (tmp_path / "lake").exists()


def test_batches_cut_neighbours_in_key_order():
    from weaver.predict.forecasting import batches, key_span

    class P:
        def __init__(self, lo, hi):
            self.key_lo, self.key_hi = lo, hi

    ps = [P("", "b"), P("b", "d"), P("d", "k"), P("k", None)]
    got = batches(ps, 3)
    assert [[p.key_lo for p in g] for g in got] == [["", "b", "d"], ["k"]]
    assert key_span(got[0]) == ("", "k") and key_span(got[1]) == ("k", None)
    assert batches(ps, 0) == [ps] and batches([], 2) == []


def test_a_batch_whose_keys_start_late_keeps_the_tables_first_bucket(tmp_path):
    """No checkpoint, no metrics table: a batch's history starts at the table's first bucket, not at
    its own first change (b's keys are first written at hour 6: hours 0-5 are empty buckets of b)."""
    from tests.lakes import FORECAST_T0 as T0
    from tests.lakes import event_log, growing, part, write_lake
    from weaver.predict import forecasting as f

    ev = growing("a", "a", 20) + [e for e in growing("b", "n", 20) if e[0] >= T0 + 6 * H]
    lake = write_lake(tmp_path / "lake", event_log([part("a", "", "m"), part("b", "m", None)], ev),
                      policy={"size_threshold_bytes": 10_000_000, "write_threshold_per_s": 1.0, "bucket": "1h"})
    at = T0 + 20 * H + timedelta(minutes=10)
    s = _settings(lake, 1)
    params = f.run_params(s, at=at, model="path")
    first = f.log_first_bucket(s, at, 3_600_000_000)
    assert first == int(T0.timestamp()) * 1_000_000
    lineage = Lineage.load(s)
    whole = f.gather(s, params, lineage=lineage)
    parts = [f.gather(s, params, lineage=lineage, partitions=[p], first_us=first).partitions[0]
             for p in lineage.active_at_ts(at)]
    b = parts[1]
    assert b.partition.partition_id == "b"
    assert [int(x) for x in b.ds] == [int((T0 + (h + 1) * H).timestamp()) * 1_000_000 for h in range(20)]
    assert list(b.size[:6]) == [0.0] * 6 and list(b.size[6:]) == [10 * 1000.0 * (h - 5) for h in range(6, 20)]
    for w, p in zip(whole.partitions, parts):
        assert (list(w.ds), list(w.size), list(w.rate), w.size_key, w.throughput_key) == \
            (list(p.ds), list(p.size), list(p.rate), p.size_key, p.throughput_key)
    assert f.predict(s, at=at, model="path", write=False).to_pylist() == \
        f.predict(_settings(lake, 0), at=at, model="path", write=False).to_pylist()
