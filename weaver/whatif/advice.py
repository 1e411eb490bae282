"""Proactive advice per prediction run: pre-split now at key K, wait, or raise capacity.

For every partition of a prediction run: ``wait`` when no split is predicted in the window
(probability below the confidence threshold); otherwise the candidate cut (size median or
load-balancing key, :mod:`weaver.whatif.keys`, from data up to the run only) whose busier child
takes the smaller share of the metric that drives the split (bytes for a size split, writes for a
throughput split). At the predicted split instant the parent sits at that threshold, so the
busier child's share *is* its expected utilization; when even the best key leaves a child at
``RAISE_AT`` or more (one hot key carries the load), splitting cannot help: ``raise_capacity``.
The time until the busier child would cross again extrapolates the forecast's own slope (the
parent reaches the threshold at the predicted split time; the child grows with its share).

Rows go to the Delta table ``advice`` (MERGE on advice_id = sha1("advice|" + prediction_id)), so
advice is time-travel-queryable; :func:`score_advice` later fills the backtest column from what
happened: for ``wait``, whether the partition really split in the window (``split_happened`` |
``no_split``; ``manual_split`` - neither, not scored - when an operator split it there, as the
backtest leaves such a window out); for the others, whether a child of the advised split would have
crossed a threshold in the window (``child_crossed``) or not (``avoided``), measured from the change
log, not from real splits, so a manual split does not change it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

from weaver.core import storage
from weaver.core.ids import advice_id
from weaver.core.errors import ContractViolation, InvalidConfidenceError, InvalidParameterError
from weaver.core.settings import Settings, check_confidence
from weaver.core.time import bucket_us, parse_timepoint, to_us
from weaver.log import Lineage, first_splits, window_split
from weaver.predict.forecasting import batches, key_span
from weaver.predict.metrics import fold_from, local_copies, range_history
from weaver.replay import KeyState, LogView
from weaver.weave import select_predictions
from weaver.whatif.impact import largest_of
from weaver.whatif.keys import SIZE, split_candidates

PRE_SPLIT, WAIT, RAISE_CAPACITY = "pre_split", "wait", "raise_capacity"
ACTIONS = (PRE_SPLIT, WAIT, RAISE_CAPACITY)
#: The backtest label of a `wait` whose window holds an operator's (manual) split: not scored.
MANUAL_SPLIT = "manual_split"
#: A busier child at this share of the driving threshold or more gains too little from a split.
RAISE_AT = 0.9


def _shares(cut, reason: str) -> tuple[float, float]:
    if reason == "throughput":
        a, b = cut.left_writes, cut.right_writes
    else:
        a, b = cut.left_bytes, cut.right_bytes
    tot = a + b
    return (a / tot, b / tot) if tot else (0.5, 0.5)


def advise_run(settings: Settings, predictions: pa.Table, *, confidence_threshold: float | None = None) -> pa.Table:
    """Advice rows (the `advice` schema) for one run's predictions; reads data up to the run only.

    Nothing is read when every row is a wait. Otherwise the partitions active at the run are taken
    in key-range groups of `forecast_batch_partitions` neighbours (the forecast's batches), each
    folded alone over its key span (:func:`advice_log` with ``ranges``; the groups share one local
    copy of the checkpoint and of the log read, :func:`weaver.predict.metrics.local_copies`): a
    group gives its partitions' sizes and its advised partitions' cuts. The largest partition
    before and after each advised split then comes from the sizes of all groups. Memory follows a
    group, not the table's live keys; the rows equal one fold over every key."""
    c = settings.confidence(confidence_threshold)
    preds = sorted(predictions.to_pylist(), key=lambda x: x["partition_id"])
    if not preds:
        return storage.empty(storage.ADVICE)
    run_ts = preds[0]["run_ts"]
    lineage = Lineage.load(settings)
    advised: dict[str, list[dict]] = {}  # partition -> its above-threshold predictions (one per model)
    for r in preds:
        try:
            # As for weaving (weaver.weave.plan.sequences_for): NaN never reaches the threshold and
            # > 1 always does; neither may become advice.
            check_confidence(r["probability"], what="probability")
        except InvalidConfidenceError as exc:
            raise ContractViolation(f"prediction {r['prediction_id']!r} of partition {r['partition_id']!r}: {exc}; "
                                    "a probability is a finite number in [0, 1] - re-run the forecast",
                                    partition_id=r["partition_id"]) from exc
        if r["probability"] >= c and r["reason"] is not None and r["partition_id"] in lineage.by_id:
            advised.setdefault(r["partition_id"], []).append(r)
    cuts: dict[str, tuple[dict, list[int]]] = {}  # by prediction_id: advice columns, children's bytes
    sizes: dict[str, int] = {}
    if advised:
        active = lineage.active_at_ts(run_ts)
        groups = batches(active, int(settings.forecast_batch_partitions))
        # An advised partition not active at the run (a hand-made prediction) is folded on its own.
        units = groups + [[lineage.by_id[pid]] for pid in sorted(set(advised) - {p.partition_id for p in active})]
        spans = [key_span(g) for g in units]
        with local_copies(spans[:len(groups)] if len(groups) > 1 else None):
            for g, span in zip(units, spans):
                log = advice_log(settings, run_ts, ranges=[span] if len(units) > 1 else None)
                state = KeyState(log)
                state.advance(log.n)
                for p in g:
                    if p.active_at_ts(run_ts):
                        sizes[p.partition_id] = _bytes(log, state, p.key_lo, p.key_hi)
                    for r in advised.get(p.partition_id, ()):
                        cut = _advised_cut(settings, r, p, log, state)
                        if cut is not None:
                            cuts[r["prediction_id"]] = cut
    rows = []
    for r in preds:
        row = {"advice_id": advice_id(r["prediction_id"]), "run_ts": r["run_ts"], "partition_id": r["partition_id"],
               "prediction_id": r["prediction_id"], "probability": float(r["probability"]), "reason": r["reason"],
               "predicted_split_ts": r["predicted_split_ts"], "window_end": r["window_end"], "action": WAIT,
               "split_key": None, "key_by": None, "expected_left_share": None, "expected_right_share": None,
               "expected_peak_utilization": None, "expected_hours_to_recross": None, "largest_before_bytes": None,
               "largest_after_bytes": None, "backtest": None, "actual_split": None, "scored_at": None}
        if r["prediction_id"] in cuts:
            cols, children = cuts[r["prediction_id"]]
            lp = largest_of(sizes, r["partition_id"], children)
            row.update(cols, largest_before_bytes=lp["before_bytes"], largest_after_bytes=lp["after_bytes"])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.ADVICE])


def _bytes(log: LogView, state: KeyState, lo: str, hi: str | None) -> int:
    return state.totals(log.key_index(lo), log.key_index(hi, upper=True))[0]


def _advised_cut(settings: Settings, r: dict, p, log: LogView, state: KeyState) -> tuple[dict, list[int]] | None:
    """The advice columns of an above-threshold prediction `r` of partition `p` and the two
    children's bytes at the run (None: no cut, a wait)."""
    run_ts = r["run_ts"]
    choice = split_candidates(settings, p, run_ts, log=log, state=state)
    if not choice.cuts:
        return None
    reason = r["reason"]
    best = min(choice.cuts.values(), key=lambda cut: (max(_shares(cut, reason)), cut.by != SIZE))
    left, right = _shares(best, reason)
    peak = max(left, right)
    thr = settings.write_threshold_per_s if reason == "throughput" else settings.size_threshold_bytes
    now = choice.recent_writes / settings.bucket.total_seconds() if reason == "throughput" else choice.size_bytes
    hours = None
    if r["predicted_split_ts"] is not None and r["predicted_split_ts"] > run_ts and now < thr:
        slope = (thr - now) / (r["predicted_split_ts"] - run_ts).total_seconds()
        hours = round((1.0 - peak) * thr / (peak * slope) / 3600.0, 3) if peak > 0 else None
    cols = {"action": RAISE_CAPACITY if peak >= RAISE_AT else PRE_SPLIT, "split_key": best.key, "key_by": best.by,
            "expected_left_share": round(left, 6), "expected_right_share": round(right, 6),
            "expected_peak_utilization": round(peak, 6), "expected_hours_to_recross": hours}
    return cols, [_bytes(log, state, p.key_lo, best.key), _bytes(log, state, best.key, p.key_hi)]


def advice_log(settings: Settings, run_ts: datetime, *,
               ranges: list[tuple[str, str | None]] | None = None) -> LogView:
    """The narrow change log advice at `run_ts` needs: every live item at `run_ts` and the changes
    of the last bucket up to it (the recent writes of a cut); with `ranges`, of those key ranges only.

    Bounded by the increment: the latest metrics checkpoint at or before ``run_ts - bucket``
    (the live items and their bytes, as the incremental metrics keep them) plus only the log
    after its seq with ``ts <= run_ts`` - the way the forecast reads its input. Without a usable
    checkpoint (checkpoints off, none yet, or a late change invalidated them) the whole log up
    to `run_ts` (:func:`weaver.predict.read_log`); both give the same sizes, items and writes.
    """
    bu = bucket_us(settings.bucket)
    log, _ck, _stale = fold_from(settings, to_us(run_ts) - bu + 1, upto=run_ts, ranges=ranges)
    return log


def advise(settings: Settings, *, at: datetime, run_ts: datetime | None = None,
           confidence_threshold: float | None = None, write: bool = True) -> pa.Table:
    """Advice for the prediction run latest at or before `at` (or `run_ts`); MERGEd into `advice`
    when `write` (rerunning the same run writes the same rows once), then earlier advice whose
    window has closed by `at` is scored (:func:`score_advice`).

    A change log that cannot be read (its Delta log lost, a data file gone or cut short) is a
    CorruptTableError before anything is written, even when every row is a wait (which reads no
    change) - :func:`weaver.core.storage.check_readable`."""
    at = parse_timepoint(at)
    storage.check_readable(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG)
    # Every model's rows of the run: advice is per prediction (advice_id from prediction_id).
    chosen, preds = select_predictions(settings, at=at, run_ts=parse_timepoint(run_ts) if run_ts else None,
                                       model=None)
    table = advise_run(settings, preds, confidence_threshold=confidence_threshold) if chosen else storage.empty(storage.ADVICE)
    if write and table.num_rows:
        storage.merge(storage.uri_for(settings, storage.ADVICE), storage.ADVICE, table, ["advice_id"])
        score_advice(settings, at=at)
    return table


def read_advice(settings: Settings, *, version: int | None = None) -> pa.Table:
    """The advice table (optionally as of a Delta version), sorted by (run_ts, partition_id).

    A version the table's log does not hold (not written yet, or cleaned up) is an
    InvalidParameterError naming the latest (`storage.open_table`), not a broken table.
    """
    uri = storage.uri_for(settings, storage.ADVICE)
    t = storage.read(uri, storage.ADVICE, version=version, missing_ok=True)
    return t.sort_by([("run_ts", "ascending"), ("partition_id", "ascending")])


def score_advice(settings: Settings, *, at: datetime) -> dict:
    """Fill the backtest column of advice whose window closed by `at` (data up to window_end only)."""
    at = parse_timepoint(at)
    t = read_advice(settings)
    due = [r for r in t.to_pylist() if r["window_end"] <= at and r["backtest"] is None]
    if not due:
        return {"scored": 0}
    first = first_splits(storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS,
                                      missing_ok=True).to_pylist())
    lineage = Lineage.load(settings)
    bu = bucket_us(settings.bucket)
    # Only what the split advice needs: the advised partitions' key ranges over [the earliest such
    # run's bucket, the latest window end] - the latest metrics checkpoint at or before that bucket
    # plus the log after it (the whole log up to window_end only without a usable checkpoint).
    cut = [r for r in due if r["action"] != WAIT and r["split_key"] is not None]
    log = None
    if cut:
        ranges = sorted({(lineage.get(r["partition_id"]).key_lo, lineage.get(r["partition_id"]).key_hi)
                         for r in cut}, key=lambda x: (x[0], x[1] is None, x[1] or ""))
        log, _ck, _stale = fold_from(settings, (to_us(min(r["run_ts"] for r in cut)) // bu) * bu,
                                     upto=max(r["window_end"] for r in cut), ranges=ranges)
    # The children's histories: one pass over the log per (run, window) - every row of a run shares
    # them - for all of that run's cuts at once, not one pass per row (a catch-up scores thousands).
    hists: dict[str, list] = {}
    by_window: dict[tuple, list[dict]] = {}
    for r in cut:
        by_window.setdefault((r["run_ts"], r["window_end"]), []).append(r)
    for (run_ts, window_end), rs in by_window.items():
        children = []
        for r in rs:
            p = lineage.get(r["partition_id"])
            children += [(p.key_lo, r["split_key"]), (r["split_key"], p.key_hi)]
        out = range_history(log, children, start=run_ts, end=window_end, bucket=settings.bucket)
        for i, r in enumerate(rs):
            hists[r["advice_id"]] = out[2 * i:2 * i + 2]
    for r in due:
        hit, _ = window_split(first, r["partition_id"], r["run_ts"], r["window_end"])
        r["actual_split"] = hit is not False
        if r["action"] == WAIT or r["split_key"] is None:
            # An operator's split in the window (hit None): no outcome the wait could be right or
            # wrong about (the backtest's and calibration's rule), so neither label.
            r["backtest"] = MANUAL_SPLIT if hit is None else "split_happened" if hit else "no_split"
        else:
            crossed = False
            for h in hists[r["advice_id"]]:
                keep = (h["bucket_start"] >= (to_us(r["run_ts"]) // bu) * bu)
                crossed |= bool(np.any(h["size_bytes"][keep] >= settings.size_threshold_bytes)) or bool(
                    np.any(h["writes"][keep] / settings.bucket.total_seconds() >= settings.write_threshold_per_s))
            r["backtest"] = "child_crossed" if crossed else "avoided"
        r["scored_at"] = at
    storage.merge(storage.uri_for(settings, storage.ADVICE), storage.ADVICE,
                  pa.Table.from_pylist(due, schema=storage.SCHEMAS[storage.ADVICE]), ["advice_id"])
    counts: dict[str, int] = {}
    for r in due:
        counts[r["backtest"]] = counts.get(r["backtest"], 0) + 1
    return {"scored": len(due), **counts}
