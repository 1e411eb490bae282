"""Check frames: one row per checked item with the flags a Great Expectations suite asserts.

Checks that span rows or tables (seq contiguity, ownership, "left + right = restore") are computed
here into plain columns; the suites in ``expectations/`` then assert those columns. Nothing here
raises on bad data: the suite decides.
"""

from __future__ import annotations

import math
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.ids import EXPIRED
from weaver.core.settings import Settings
from weaver.log.lineage import Lineage
from weaver.pitr import restore_many
from weaver.predict.splitkey import in_range
from weaver.weave import WovenTable, read_woven_catalog


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
    # created/retired seqs as floats (NaN for none): fillna on the object column they come in as
    # is deprecated in pandas 2 (silent downcasting).
    c, r = pd.to_numeric(j["_c"]), pd.to_numeric(j["_r"])
    owner = known & (j["seq"] > c.fillna(0)) & (r.isna() | (j["seq"] <= r.fillna(0)))
    df["in_range"] = in_range.to_numpy(dtype=bool)
    df["owner_ok"] = owner.to_numpy(dtype=bool)
    df["value_bytes"] = df["value_bytes"].fillna(0)
    return df


def prediction_check_frame(predictions, lineage: Lineage, *, at: datetime | None = None):
    """A frame of per-row booleans that `expectations/predictions.json` asserts.

    One row per prediction, plus one row per (run, model) for every partition active at that
    run but missing from it (so "one row per active partition" can fail). Columns:
    ``prediction_id, run_ts, partition_id, probability, reason, threshold,
    quantiles_in_window`` (p10 <= median <= p90, all inside [window_start, window_end], or all
    null), ``split_key_in_range`` (null or strictly inside the partition's key range; a key
    equal to key_lo would leave the left child empty), ``one_row_per_active_partition``,
    ``skip_has_zero_probability``. With ``at``, the run at ``at`` is checked even when it has
    no rows at all (every partition active then is reported missing).
    """
    import pandas as pd

    df = predictions.to_pandas() if hasattr(predictions, "to_pandas") and not isinstance(predictions, pd.DataFrame) \
        else predictions.copy()
    out = pd.DataFrame({
        "prediction_id": df["prediction_id"], "run_ts": df["run_ts"], "partition_id": df["partition_id"],
        "probability": df["probability"].astype(float), "reason": df["reason"], "threshold": df["threshold"],
    })
    q = df[["window_start", "split_ts_p10", "predicted_split_ts", "split_ts_p90", "window_end"]]
    all_null = q[["split_ts_p10", "predicted_split_ts", "split_ts_p90"]].isna().all(axis=1)
    ordered = ((q["window_start"] <= q["split_ts_p10"]) & (q["split_ts_p10"] <= q["predicted_split_ts"])
               & (q["predicted_split_ts"] <= q["split_ts_p90"]) & (q["split_ts_p90"] <= q["window_end"]))
    out["quantiles_in_window"] = (all_null | ordered.fillna(False)).astype(bool)

    def key_ok(r) -> bool:
        k = r["split_key"]
        if k is None or (isinstance(k, float) and math.isnan(k)):
            return True
        p = lineage.by_id.get(r["partition_id"])
        return p is not None and in_range(k, p.key_lo, p.key_hi)

    out["split_key_in_range"] = [key_ok(r) for _, r in df.iterrows()] if len(df) else []
    out["split_key_in_range"] = out["split_key_in_range"].astype(bool)
    dup = df.duplicated(subset=["run_ts", "model", "partition_id"], keep=False)
    active_ok = []
    for _, r in df.iterrows():
        p = lineage.by_id.get(r["partition_id"])
        active_ok.append(bool(p is not None and p.active_at_ts(r["run_ts"].to_pydatetime())))
    out["one_row_per_active_partition"] = (pd.Series(active_ok, index=df.index, dtype=bool) & ~dup).astype(bool)
    skipped = df["skip_reason"].notna()
    out["skip_has_zero_probability"] = (~skipped | ((df["probability"] == 0) & df["predicted_split_ts"].isna()))
    out["skip_has_zero_probability"] = out["skip_has_zero_probability"].astype(bool)
    missing = []
    groups = [(run_ts, set(g["partition_id"])) for (run_ts, _), g in df.groupby(["run_ts", "model"])]
    if at is not None and not any(r.to_pydatetime() == at for r, _ in groups):
        groups.append((pd.Timestamp(at), set()))
    for run_ts, present in groups:
        for p in lineage.active_at_ts(run_ts.to_pydatetime()):
            if p.partition_id not in present:
                missing.append({"prediction_id": None, "run_ts": run_ts, "partition_id": p.partition_id,
                                "probability": 0.0, "reason": None, "threshold": 0.0, "quantiles_in_window": True,
                                "split_key_in_range": True, "one_row_per_active_partition": False,
                                "skip_has_zero_probability": True})
    if missing:
        out = pd.concat([out, pd.DataFrame(missing)], ignore_index=True)
    return out.reset_index(drop=True)


CHECK_COLUMNS = ["weave_id", "timepoint", "as_of_seq", "rows_left", "rows_right", "rows_restore", "missing",
                 "extra", "misrouted", "value_mismatch", "duplicates", "seq_mismatch", "row_diff"]


def woven_check_frame(settings: Settings, *, weave_ids: list[str] | None = None, sample: int | None = 3):
    """Per sampled (weave, timepoint): DESIGN §4.2 counted against the standard PITR restore.

    restore(P, T) comes from the standard PITR path, ``weaver.pitr.restore_many`` (base snapshot +
    Arrow replay, an engine independent of the weave's own replay), with the work done once: each
    source partition is restored from its nearest base once (per base) and advanced through its
    sorted sampled timepoints, and the change-log rows all sources need are read in one filtered
    scan - the same rows and as_of_seq as one ``restore_partition`` per timepoint.
    Columns: rows_left/right/restore; missing (in restore, not woven), extra (woven, not in
    restore), misrouted (on the wrong side of split_key, or under another child id), value_mismatch, duplicates (a key twice at one
    timepoint), seq_mismatch (as_of_seq != the restore's seq), row_diff (left + right - restore).
    Every count is 0 when the woven tier is correct. `sample` timepoints per weave, evenly spaced
    with the first and the last (None or 0: all); expired weaves are skipped.
    """
    import pandas as pd

    catalog = read_woven_catalog(settings)
    rows_out: list[dict] = []
    tier = WovenTable.open(settings) if catalog.num_rows else None
    if tier is None:
        return pd.DataFrame(rows_out, columns=CHECK_COLUMNS)
    lineage = Lineage.load(settings)
    rows = [r for r in catalog.to_pylist()
            if (weave_ids is None or r["weave_id"] in weave_ids) and r["status"] != EXPIRED]
    # The timepoints each weave holds, through the tier's per-weave file index: Parquet footers
    # where they are exact, one read of the other files (not a scan of the tier per weave).
    held = tier.timepoints_held([r["weave_id"] for r in rows])
    todo: list[tuple[dict, list]] = []  # (catalog row, sampled timepoints), in catalog order
    for r in rows:
        present = set(held.get(r["weave_id"], ()))
        if r["last_timepoint"] is not None:
            present.add(r["last_timepoint"])  # woven even when its state is empty
        if not present:
            continue
        todo.append((r, _sample(sorted(present), sample)))
    # One restore series per source partition: every sampled timepoint of every weave of it.
    by_source: dict[str, set] = {}
    for r, tps in todo:
        by_source.setdefault(r["source_partition_id"], set()).update(tps)
    per_weave: dict[int, list[dict]] = {}
    for source, results in restore_many(settings, by_source, lineage=lineage):
        restored = {x.at: x for x in results}
        for n, (r, tps) in enumerate(todo):
            if r["source_partition_id"] == source:
                per_weave[n] = _woven_rows_checked(tier, r, tps, restored)
    for n in range(len(todo)):
        rows_out.extend(per_weave[n])
    return pd.DataFrame(rows_out, columns=CHECK_COLUMNS)


def _woven_rows_checked(tier: WovenTable, r: dict, tps: list, restored_at: dict) -> list[dict]:
    """CHECK_COLUMNS rows of one weave at its sampled timepoints against the restores at them.

    The weave's rows at those timepoints come in one read of the files that can hold them (the
    tier's per-weave index). Counted with Arrow kernels (hash lookups of the woven keys in the
    restore's), per timepoint; a timepoint whose woven rows repeat a key is counted row by row
    (:func:`_counts_by_row`), so a duplicate's last value is the one compared, as there."""
    woven = tier.rows_of(r["weave_id"], tps, ["timepoint", "woven_partition_id", "as_of_seq", "key", "value"])
    left_id, right_id = r["child_ids"]
    k = r["split_key"]
    out = []
    for tp in tps:
        restored = restored_at[tp]
        at_tp = woven.filter(pc.equal(woven.column("timepoint"), pa.scalar(tp, storage.TS)))
        row = {"weave_id": r["weave_id"], "timepoint": tp, "as_of_seq": restored.as_of_seq}
        keys, side = at_tp.column("key"), at_tp.column("woven_partition_id")
        is_left, is_right = pc.equal(side, left_id), pc.equal(side, right_id)
        left, right = _count(is_left), _count(is_right)
        routed = pc.or_(pc.and_(is_left, pc.less(keys, k)), pc.and_(is_right, pc.greater_equal(keys, k)))
        seq_bad = _count(pc.not_equal(at_tp.column("as_of_seq"), restored.as_of_seq))
        unique = pc.count_distinct(keys).as_py() if at_tp.num_rows else 0
        if unique == at_tp.num_rows and _unique(restored.table.column("key")):
            rkeys, rvals = restored.table.column("key"), restored.table.column("value")
            pos = pc.index_in(keys, value_set=rkeys.combine_chunks())
            found = pc.is_valid(pos)
            mine_v = pc.filter(at_tp.column("value"), found)
            theirs = pc.take(rvals, pc.filter(pos, found))
            same = pc.or_kleene(pc.equal(theirs, mine_v), pc.and_(pc.is_null(theirs), pc.is_null(mine_v)))
            hits = len(mine_v)
            counts = {"missing": len(rkeys) - hits, "extra": at_tp.num_rows - hits,
                      "value_mismatch": hits - _count(same), "duplicates": 0}
            n_restore = len(rkeys)
        else:
            counts, n_restore = _counts_by_row(at_tp, restored.table)
        row.update({"rows_left": left, "rows_right": right, "rows_restore": n_restore, **counts,
                    "misrouted": at_tp.num_rows - _count(routed), "seq_mismatch": seq_bad,
                    "row_diff": left + right - n_restore})
        out.append({c: row[c] for c in CHECK_COLUMNS})
    return out


def _count(mask) -> int:
    """True values of a boolean array (nulls are not true)."""
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def _unique(keys) -> bool:
    return len(keys) == 0 or pc.count_distinct(keys).as_py() == len(keys)


def _counts_by_row(at_tp: pa.Table, restored: pa.Table) -> tuple[dict, int]:
    """missing / extra / value_mismatch / duplicates of woven rows that repeat a key (the last
    row's value counts), and the restore's distinct keys, row by row."""
    expect = dict(zip(restored.column("key").to_pylist(), restored.column("value").to_pylist()))
    got: dict[str, bytes] = {}
    dup = 0
    for key, value in zip(at_tp.column("key").to_pylist(), at_tp.column("value").to_pylist()):
        dup += key in got
        got[key] = value
    return {"missing": sum(1 for key in expect if key not in got),
            "extra": sum(1 for key in got if key not in expect),
            "value_mismatch": sum(1 for key, v in got.items() if key in expect and expect[key] != v),
            "duplicates": dup}, len(expect)


def _sample(items: list, n: int | None) -> list:
    if not n or n <= 0 or len(items) <= n:
        return items
    if n == 1:
        return [items[-1]]
    step = (len(items) - 1) / (n - 1)
    return sorted({items[round(i * step)] for i in range(n)})
