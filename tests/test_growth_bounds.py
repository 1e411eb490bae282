"""Issue 11 (points 1, 4, 5): advice and the woven check read what the increment needs, not the history.

Expected rows come from the brute-force fold of tests/oracle.py over the raw change rows; the
bounds are observed on the real read paths (the narrow change-log view every metrics-style read
builds, and ChangeLog.read every restore tail goes through).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from tests.lakes import (H, PARTS, T0, Lake, add_weave, owner, prediction, put_predictions, random_changes,
                         write_lake)
from tests.oracle import fold

N, SPLIT_SEQ = 600, 300
SIZE_T, WRITE_T = 61, 13 / 3600.0  # bytes, writes per second: some children cross, some do not


def _hour_ceil(t: datetime) -> datetime:
    f = t.replace(minute=0, second=0, microsecond=0)
    return f if f == t else f + H


def _lake(root, *, snap_seqs=(), **settings_kw) -> Lake:
    """The recovery lake's layout (P1 splits into P2, P3 at SPLIT_SEQ; deletes), optionally with base snapshots."""
    from weaver.core.settings import Settings

    changes = random_changes(random.Random(11), N, SPLIT_SEQ)
    split_ts = changes[SPLIT_SEQ - 1]["ts"]
    parts = [{"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": parent,
              "created_seq": SPLIT_SEQ if parent else 0, "created_ts": split_ts if parent else T0,
              "retired_seq": SPLIT_SEQ if pid == "P1" else None, "retired_ts": split_ts if pid == "P1" else None}
             for pid, lo, hi, parent in PARTS]
    splits = [{"parent_id": "P1", "split_seq": SPLIT_SEQ, "split_ts": split_ts, "split_key": "k7",
               "left_id": "P2", "right_id": "P3", "reason": "size"}]
    assert all(c["partition_id"] == owner(c["key"], c["seq"], SPLIT_SEQ) for c in changes)
    write_lake(root, {"changes": changes, "partitions": parts, "splits": splits}, list(snap_seqs))
    return Lake(Settings(lake=str(root), **settings_kw), changes, {pid: (lo, hi) for pid, lo, hi, _ in PARTS})


def _in(k: str, lo: str, hi: str | None) -> bool:
    return k >= lo and (hi is None or k < hi)


def _balanced(keys: list[str], weights: list[float]) -> str | None:
    """Brute force: the key k = keys[i], i >= 1, minimising |weight(< k) - weight(>= k)| (first on ties)."""
    if len(keys) < 2:
        return None
    total = sum(weights)
    return keys[min(range(1, len(keys)), key=lambda i: (abs(2 * sum(weights[:i]) - total), i))]


def _oracle_advice(lake: Lake, pred: dict, active: list[str]) -> dict:
    """The advice row's cut and sizes for one partition, by brute force from the raw changes."""
    run = pred["run_ts"]
    item = {c["seq"]: len(c["key"].encode()) + (c["value_bytes"] or 0) for c in lake.changes}
    last_seq = {}
    for c in lake.changes:
        if c["ts"] <= run:
            last_seq[c["key"]] = c["seq"]

    def live(lo, hi):
        state = fold(lake.changes, key_lo=lo, key_hi=hi, at=run)
        return {k: item[last_seq[k]] for k in sorted(state)}

    def size(lo, hi):
        return sum(live(lo, hi).values())

    lo, hi = lake.ranges[pred["partition_id"]]
    items = live(lo, hi)
    keys = list(items)
    recent = sorted(c["key"] for c in lake.changes if run - H < c["ts"] <= run and _in(c["key"], lo, hi))
    cuts = {}
    k_size = _balanced(keys, [items[k] for k in keys])
    if k_size is not None:
        cuts["size"] = k_size
    if recent and len(keys) >= 2:
        uniq = sorted(set(recent))
        k = _balanced(uniq, [recent.count(u) for u in uniq]) if len(uniq) >= 2 else uniq[0]
        cuts["load"] = min(max(k, keys[1]), keys[-1])

    def shares(k):
        if pred["reason"] == "throughput":
            a, b = sum(1 for x in recent if x < k), sum(1 for x in recent if x >= k)
        else:
            a, b = sum(v for x, v in items.items() if x < k), sum(v for x, v in items.items() if x >= k)
        return (a / (a + b), b / (a + b)) if a + b else (0.5, 0.5)

    by, k = min(cuts.items(), key=lambda kv: (max(shares(kv[1])), kv[0] != "size"))
    left, right = shares(k)
    sizes = {p: size(*lake.ranges[p]) for p in active}
    after = {p: v for p, v in sizes.items() if p != pred["partition_id"]}
    after.update(left=size(lo, k), right=size(k, hi))
    return {"action": "raise_capacity" if max(left, right) >= 0.9 else "pre_split", "split_key": k, "key_by": by,
            "expected_left_share": round(left, 6), "expected_right_share": round(right, 6),
            "expected_peak_utilization": round(max(left, right), 6), "expected_hours_to_recross": None,
            "largest_before_bytes": max(sizes.values()), "largest_after_bytes": max(after.values())}


@pytest.fixture
def seq_spy(monkeypatch):
    """Every narrow change-log view built (weaver.predict.metrics._view): the seqs of the rows read
    and the largest key it holds (rows and base items)."""
    from weaver.predict import metrics

    seen: list = []
    real = metrics._view

    def spy(seq, ts, pid, key, op, vb, base=None):
        keys = key.to_pylist() + (base[0].to_pylist() if base is not None else [])
        seen.append((seq.to_numpy(), max(keys, default=None)))
        return real(seq, ts, pid, key, op, vb, base=base)

    monkeypatch.setattr(metrics, "_view", spy)
    return seen


@pytest.mark.parametrize("batch", [0, 1], ids=["one-fold", "fold-per-partition"])
def test_advice_reads_only_the_log_after_the_checkpoint_and_equals_the_brute_force_fold(tmp_path, seq_spy, batch):
    from weaver.predict import build_metrics
    from weaver.predict.metrics import checkpoints
    from weaver.whatif import advise, read_advice, score_advice

    lake = _lake(tmp_path / "lake", size_threshold_bytes=SIZE_T, write_threshold_per_s=WRITE_T,
                 forecast_batch_partitions=batch)
    s = lake.settings
    run = _hour_ceil(lake.ts_of(SPLIT_SEQ)) + 3 * H
    window = timedelta(hours=4)
    assert lake.changes[-1]["ts"] > run + window + H
    build_metrics(s, end=run - 2 * H)  # the DAG's metrics task: a checkpoint two buckets back
    (ck,) = checkpoints(s)
    assert 0 < ck.as_of_seq < lake.seq_at(run - H)
    active = ["P0", "P2", "P3"]
    preds = []
    # Two models' predictions of P0 in the same run: each gets its own advice (its own reason).
    for pid, prob, reason, model in (("P0", 0.9, "size", "path"), ("P2", 0.95, "throughput", "path"),
                                     ("P3", 0.5, "size", "path"), ("P0", 0.8, "throughput", "arima")):
        p = prediction(pid, run_ts=run, window=window, probability=prob, model=model)
        p.update(reason=reason, predicted_split_ts=None, split_ts_p10=None, split_ts_p90=None)
        preds.append(p)
    put_predictions(s, preds)
    seq_spy.clear()
    rows = {r["prediction_id"]: r for r in advise(s, at=run).to_pylist()}

    # The bound: only changes after the checkpoint's seq were read, and none after run_ts.
    assert seq_spy and all(len(x) == 0 or (x.min() > ck.as_of_seq and x.max() <= lake.seq_at(run))
                           for x, _ in seq_spy), [(x.min(), x.max()) for x, _ in seq_spy if len(x)]
    # In groups of one partition, each group folds its own key range: P0's ['', k4) alone is read.
    tops = [top for x, top in seq_spy]
    assert (len(tops) >= 3 and any(t is not None and t < "k4" for t in tops)) if batch else len(tops) == 1, tops
    # The rows: the brute-force fold of the whole log.
    assert set(rows) == {p["prediction_id"] for p in preds}
    p3 = rows[preds[2]["prediction_id"]]
    assert (p3["action"], p3["split_key"], p3["largest_before_bytes"]) == ("wait", None, None)
    for pred in (preds[0], preds[1], preds[3]):
        want = _oracle_advice(lake, pred, active)
        got = {k: rows[pred["prediction_id"]][k] for k in want}
        assert got == want, (pred["partition_id"], pred["reason"])

    # Scoring at the window's end reads [the checkpoint at or before the run, window_end] of the
    # advised partitions' key ranges only (P0 ['', k4), P2 [k4, k7); P3 was told to wait).
    build_metrics(s, end=run + window)
    seq_spy.clear()
    assert score_advice(s, at=run + window)["scored"] == 4
    assert seq_spy and all(len(x) == 0 or (x.min() > ck.as_of_seq and x.max() <= lake.seq_at(run + window)
                                           and top < "k7") for x, top in seq_spy)
    outcomes = set()
    for r in read_advice(s).to_pylist():
        if r["partition_id"] == "P3":
            assert (r["backtest"], r["actual_split"]) == ("no_split", False)
            continue
        lo, hi = lake.ranges[r["partition_id"]]
        crossed = False
        for b in range(4):
            bs = run + b * H
            for clo, chi in ((lo, r["split_key"]), (r["split_key"], hi)):
                state = fold(lake.changes, key_lo=clo, key_hi=chi, at=bs + H - timedelta(microseconds=1))
                nbytes = sum(len(k.encode()) + len(v) for k, v in state.items())
                writes = sum(1 for c in lake.changes if bs <= c["ts"] < bs + H and _in(c["key"], clo, chi))
                crossed |= nbytes >= SIZE_T or writes / 3600.0 >= WRITE_T
        assert (r["backtest"], r["actual_split"]) == ("child_crossed" if crossed else "avoided", False), r
        outcomes.add(r["backtest"])
    assert outcomes == {"child_crossed", "avoided"}  # both outcomes are exercised


def test_advice_with_every_prediction_below_the_threshold_reads_no_change_log(tmp_path, seq_spy):
    from weaver.whatif import advise

    lake = _lake(tmp_path / "lake", size_threshold_bytes=SIZE_T, write_threshold_per_s=WRITE_T)
    run = _hour_ceil(lake.ts_of(SPLIT_SEQ)) + 3 * H
    preds = []
    for pid in ("P0", "P2", "P3"):
        p = prediction(pid, run_ts=run, window=timedelta(hours=4), probability=0.5, model="path")
        p.update(reason="size")
        preds.append(p)
    put_predictions(lake.settings, preds)
    rows = advise(lake.settings, at=run).to_pylist()
    assert [(r["partition_id"], r["action"], r["split_key"]) for r in rows] == \
        [("P0", "wait", None), ("P2", "wait", None), ("P3", "wait", None)]
    assert seq_spy == []


def test_woven_check_restores_each_source_once_per_base_and_equals_the_oracle(tmp_path, monkeypatch):
    from weaver.checks import woven_check_frame
    from weaver.log.changelog import ChangeLog

    lake = _lake(tmp_path / "lake", snap_seqs=[100, 200, 400])
    ts = lake.ts_of
    a = add_weave(lake, "P0", "k2", 0.9, [ts(110), ts(130), ts(150), ts(170), ts(190)], prediction_id="pred-a")
    b = add_weave(lake, "P0", "k1", 0.8, [ts(120), ts(180)], prediction_id="pred-b")
    c = add_weave(lake, "P2", "k5", 0.7, [ts(310), ts(350), ts(420), ts(480)], prediction_id="pred-c")
    bad = add_weave(lake, "P3", "k8", 0.6, [ts(320), ts(400)], prediction_id="pred-bad", corrupt=True)
    tails: list[tuple] = []
    real = ChangeLog.read

    def spy(self, after_seq, upto_seq, key_lo=None, key_hi=None, columns=None, **kw):
        t = real(self, after_seq, upto_seq, key_lo, key_hi, columns, **kw)
        if columns is None:  # a tail of values (check_contiguous reads only seq)
            tails.append((after_seq, upto_seq, kw.get("ranges") or [(key_lo, key_hi)], t.num_rows))
        return t

    monkeypatch.setattr(ChangeLog, "read", spy)
    frame = woven_check_frame(lake.settings).to_dict("records")

    sampled = {a["weave_id"]: [ts(110), ts(150), ts(190)], b["weave_id"]: [ts(120), ts(180)],
               c["weave_id"]: [ts(310), ts(420), ts(480)], bad["weave_id"]: [ts(320), ts(400)]}
    weaves = {w["weave_id"]: w for w in (a, b, c, bad)}
    assert sorted((r["weave_id"], r["timepoint"].to_pydatetime()) for r in frame) == \
        sorted((w, tp) for w, tps in sampled.items() for tp in tps)
    for r in frame:
        w, tp = weaves[r["weave_id"]], r["timepoint"].to_pydatetime()
        expect = lake.expected(w["source_partition_id"], tp)
        assert (r["as_of_seq"], r["rows_restore"]) == (lake.seq_at(tp), len(expect))
        assert r["rows_left"] + r["rows_right"] == len(expect) and r["row_diff"] == 0
        errors = {k: r[k] for k in ("missing", "extra", "misrouted", "duplicates", "seq_mismatch")}
        assert errors == dict.fromkeys(errors, 0), r
        assert r["value_mismatch"] == (len(expect) if w is bad else 0), r

    # The bound: one filtered scan of the change log per span of overlapping seq ranges, for every
    # source and timepoint together. P0: base @100 to 190; P2: its parent's base @200 to 310, then
    # its own @400 to 480; P3: @200 to 320, then its own @400 (no tail). Each change of a source
    # range is read once: no restore per timepoint, no tail per partition.
    sources = [lake.ranges[p] for p in ("P0", "P2", "P3")]
    assert [(lo, hi) for lo, hi, _, _ in tails] == \
        [(100, lake.seq_at(ts(190))), (200, lake.seq_at(ts(320))), (400, lake.seq_at(ts(480)))]
    for lo, hi, ranges, n in tails:
        assert sorted(ranges, key=str) == sorted(sources, key=str)
        assert n == sum(1 for ch in lake.changes if lo < ch["seq"] <= hi and any(_in(ch["key"], *r) for r in sources))


def test_woven_check_in_groups_of_one_source_holds_one_tail_and_equals_the_oracle(tmp_path, monkeypatch):
    """restore_many holds the tails of RESTORE_MANY_GROUP sources at a time (all 1,339 sources'
    tails at once passed 12 GB and pyarrow's 2 GiB offsets). With several groups their tails come
    from ONE streaming pass per span of all groups' merged seq spans (a scan per group decoded the
    same rows once per group), spilled to a local file per group. With groups of one, each group's
    tail holds exactly its source's changes over its own spans, and the frame still equals the
    brute-force fold."""
    from weaver.checks import woven_check_frame
    from weaver.log.changelog import ChangeLog
    from weaver.pitr import restore as restore_mod

    lake = _lake(tmp_path / "lake", snap_seqs=[100, 200, 400])
    ts = lake.ts_of
    a = add_weave(lake, "P0", "k2", 0.9, [ts(110), ts(150), ts(190)], prediction_id="pred-a")
    c = add_weave(lake, "P2", "k5", 0.7, [ts(310), ts(420), ts(480)], prediction_id="pred-c")
    d = add_weave(lake, "P3", "k8", 0.6, [ts(320), ts(400)], prediction_id="pred-d")
    scans: list = []
    real_read, real_group = ChangeLog.read, restore_mod._GroupTails.read
    held: list[tuple[int, set]] = []

    def spy(self, after_seq, upto_seq, key_lo=None, key_hi=None, columns=None, **kw):
        if columns is None:
            scans.append(kw.get("ranges") or [(key_lo, key_hi)])
        return real_read(self, after_seq, upto_seq, key_lo, key_hi, columns, **kw)

    def group_read(self, g, lineage):
        t = real_group(self, g, lineage)
        held.append((g, set(t.column("seq").to_pylist())))
        return t

    monkeypatch.setattr(ChangeLog, "read", spy)
    monkeypatch.setattr(restore_mod._GroupTails, "read", group_read)
    monkeypatch.setattr(restore_mod, "RESTORE_MANY_GROUP", 1)
    frame = woven_check_frame(lake.settings).to_dict("records")
    weaves = {w["weave_id"]: w for w in (a, c, d)}
    assert len(frame) == 8
    for r in frame:
        w, tp = weaves[r["weave_id"]], r["timepoint"].to_pydatetime()
        expect = lake.expected(w["source_partition_id"], tp)
        assert (r["as_of_seq"], r["rows_restore"], r["row_diff"]) == (lake.seq_at(tp), len(expect), 0)
        errors = {k: r[k] for k in ("missing", "extra", "misrouted", "duplicates", "seq_mismatch", "value_mismatch")}
        assert errors == dict.fromkeys(errors, 0), r
    assert scans == []  # no filtered scan per group: the shared pass read them
    # Groups in key order (P0, P2, P3), each with its source's changes over its own spans only:
    # P0 base @100 to 190; P2 its parent's base @200 to 310, then its own @400 to 480; P3 @200 to 320.
    spans = {"P0": [(100, lake.seq_at(ts(190)))], "P2": [(200, lake.seq_at(ts(310))), (400, lake.seq_at(ts(480)))],
             "P3": [(200, lake.seq_at(ts(320)))]}
    assert [g for g, _ in held] == [0, 1, 2]
    for (_, seqs), p in zip(held, ("P0", "P2", "P3")):
        assert seqs == {ch["seq"] for ch in lake.changes
                        if _in(ch["key"], *lake.ranges[p]) and any(lo < ch["seq"] <= hi for lo, hi in spans[p])}, p

@hyp_settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.text(alphabet="ab\x00", min_size=1, max_size=4), min_size=1, max_size=40),
       bounds=st.lists(st.tuples(st.text(alphabet="ab\x00", max_size=3),
                                 st.one_of(st.none(), st.text(alphabet="ab\x00", min_size=1, max_size=3))),
                       min_size=1, max_size=5))
def test_group_tail_key_membership_equals_brute_force(keys, bounds):
    """restore_many's shared pass assigns a change to a group when its key lies in one of the
    group's ranges [lo, hi): the vectorised search (keys and bounds without NUL) and the exact Arrow
    comparison (any key, trailing NULs included, which numpy's fixed-width strings drop) both
    equal Python's comparison, key by key."""
    import numpy as np
    import pyarrow as pa

    from weaver.pitr.restore import _disjoint, _in_ranges, _in_ranges_exact

    ranges = [(lo, hi) for lo, hi in bounds if hi is None or lo < hi]
    if not ranges:
        return
    truth = [any(lo <= k and (hi is None or k < hi) for lo, hi in ranges) for k in keys]
    assert _in_ranges_exact(pa.chunked_array([keys], pa.string()), ranges).tolist() == truth
    plain = [i for i, k in enumerate(keys) if "\x00" not in k]
    if all("\x00" not in (b or "") for r in ranges for b in r) and plain:
        got = _in_ranges(np.asarray([keys[i] for i in plain], dtype=str), _disjoint(ranges))
        assert got.tolist() == [truth[i] for i in plain]
