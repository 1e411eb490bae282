"""The woven check frame counts each kind of damage exactly, against the brute-force fold.

A weave of P0 is written from the oracle fold at three timepoints, then damaged by hand: at the
second a row deleted (missing), a key added (extra), a value changed and one nulled
(value_mismatch), a row's as_of_seq changed (seq_mismatch) and a row moved to the other child
(misrouted); at the third a key repeated with its own value (duplicates) and a value changed. The
first stays whole. The tier is partitioned by weave_id, as the weave engines write it. Every count of every row is derived from the fold and the damage list, never
from the code under test: a timepoint without a repeated key is counted with Arrow kernels, one
with a repeated key row by row, and both must agree with the hand count.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tests.lakes import PARTS, Lake, add_weave, owner, random_changes, write_lake

N, SPLIT_SEQ = 240, 120
COUNTS = ("missing", "extra", "misrouted", "value_mismatch", "duplicates", "seq_mismatch")


@pytest.fixture()
def lake(tmp_path) -> Lake:
    from weaver.core.settings import Settings

    changes = random_changes(random.Random(5), N, SPLIT_SEQ)
    split_ts = changes[SPLIT_SEQ - 1]["ts"]
    parts = [{"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": parent,
              "created_seq": SPLIT_SEQ if parent else 0, "created_ts": split_ts if parent else changes[0]["ts"],
              "retired_seq": SPLIT_SEQ if pid == "P1" else None, "retired_ts": split_ts if pid == "P1" else None}
             for pid, lo, hi, parent in PARTS]
    splits = [{"parent_id": "P1", "split_seq": SPLIT_SEQ, "split_ts": split_ts, "split_key": "k7",
               "left_id": "P2", "right_id": "P3", "reason": "size"}]
    assert all(c["partition_id"] == owner(c["key"], c["seq"], SPLIT_SEQ) for c in changes)
    write_lake(tmp_path / "lake", {"changes": changes, "partitions": parts, "splits": splits}, [60])
    return Lake(Settings(lake=str(tmp_path / "lake")), changes, {pid: (lo, hi) for pid, lo, hi, _ in PARTS})


def test_every_kind_of_damage_is_counted_exactly_with_and_without_a_repeated_key(lake, monkeypatch):
    from deltalake import DeltaTable, write_deltalake

    from weaver.checks import frames

    from weaver.checks import validate, woven_check_frame
    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError

    ts = lake.ts_of
    t_whole, t_hurt, t_dup = ts(80), ts(150), ts(200)
    w = add_weave(lake, "P0", "k2", 0.9, [t_whole, t_hurt, t_dup], prediction_id="pred-counts")
    other = add_weave(lake, "P2", "k5", 0.8, [t_hurt, t_dup], prediction_id="pred-whole")  # left whole
    k = w["split_key"]
    want = {tp: lake.expected("P0", tp) for tp in (t_whole, t_hurt, t_dup)}
    lefts = {tp: sorted(x for x in want[tp] if x < k) for tp in want}
    rights = {tp: sorted(x for x in want[tp] if x >= k) for tp in want}
    # Enough keys on each side at the damaged timepoints for five distinct rows to damage.
    assert len(lefts[t_hurt]) >= 3 and len(rights[t_hurt]) >= 2 and lefts[t_dup] and rights[t_dup]

    uri = storage.uri_for(lake.settings, storage.WOVEN_SNAPSHOTS)
    # Laid out as both weave engines write the tier: partitioned by weave_id.
    write_deltalake(uri, DeltaTable(uri).to_pyarrow_table(), mode="overwrite", partition_by=["weave_id"],
                    schema_mode="overwrite")
    dt = DeltaTable(uri)
    assert dt.metadata().partition_columns == ["weave_id"]
    lit = lambda tp: f"'{tp.isoformat()}'"  # noqa: E731
    gone, moved, changed, nulled = lefts[t_hurt][0], lefts[t_hurt][1], rights[t_hurt][0], lefts[t_hurt][2]
    late = rights[t_hurt][1]
    dt.delete(f"timepoint = {lit(t_hurt)} AND key = '{gone}'")
    dt.update(predicate=f"timepoint = {lit(t_hurt)} AND key = '{moved}'",
              updates={"woven_partition_id": f"'{w['right']}'"})
    dt.update(predicate=f"timepoint = {lit(t_hurt)} AND key = '{changed}'", updates={"value": "X'00FF'"})
    dt.update(predicate=f"timepoint = {lit(t_hurt)} AND key = '{nulled}'", updates={"value": "NULL"})
    dt.update(predicate=f"timepoint = {lit(t_hurt)} AND key = '{late}'", updates={"as_of_seq": "as_of_seq + 1"})
    seq_hurt, seq_dup = lake.seq_at(t_hurt), lake.seq_at(t_dup)
    repeated, wrong = rights[t_dup][0], lefts[t_dup][0]
    dt.update(predicate=f"timepoint = {lit(t_dup)} AND key = '{wrong}'", updates={"value": "X'01'"})
    extra = {"weave_id": w["weave_id"], "woven_partition_id": w["right"], "source_partition_id": "P0",
             "timepoint": t_hurt, "as_of_seq": seq_hurt, "key": k + "~extra", "value": b"new"}
    again = {"weave_id": w["weave_id"], "woven_partition_id": w["right"], "source_partition_id": "P0",
             "timepoint": t_dup, "as_of_seq": seq_dup, "key": repeated, "value": want[t_dup][repeated]}
    write_deltalake(uri, pa.Table.from_pylist([extra, again], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                    mode="append", partition_by=["weave_id"])

    by_row: list[int] = []  # the timepoints counted row by row: only the one with a repeated key
    real = frames._counts_by_row
    monkeypatch.setattr(frames, "_counts_by_row", lambda at_tp, restored: by_row.append(at_tp.num_rows)
                        or real(at_tp, restored))
    frame = woven_check_frame(lake.settings, sample=0)
    assert by_row == [len(want[t_dup]) + 1]
    records = frame.to_dict("records")
    for r in (r for r in records if r["weave_id"] == other["weave_id"]):
        tp = r["timepoint"].to_pydatetime()
        n_other = len(lake.expected("P2", tp))
        assert (r["rows_restore"], r["rows_left"] + r["rows_right"], r["as_of_seq"]) == (n_other, n_other,
                                                                                        lake.seq_at(tp))
        assert {c: r[c] for c in COUNTS} == dict.fromkeys(COUNTS, 0), r
    assert sorted(r["timepoint"].to_pydatetime() for r in records if r["weave_id"] == other["weave_id"]) == \
        [t_hurt, t_dup]
    got = {r["timepoint"].to_pydatetime(): r for r in records if r["weave_id"] == w["weave_id"]}
    assert sorted(got) == [t_whole, t_hurt, t_dup]
    n = {tp: len(want[tp]) for tp in want}
    expect = {
        t_whole: dict(rows_left=len(lefts[t_whole]), rows_right=len(rights[t_whole]), rows_restore=n[t_whole],
                      **dict.fromkeys(COUNTS, 0), row_diff=0),
        # gone: -1 left; moved: -1 left +1 right, misrouted; extra: +1 right.
        t_hurt: dict(rows_left=len(lefts[t_hurt]) - 2, rows_right=len(rights[t_hurt]) + 2, rows_restore=n[t_hurt],
                     missing=1, extra=1, misrouted=1, value_mismatch=2, duplicates=0, seq_mismatch=1, row_diff=0),
        t_dup: dict(rows_left=len(lefts[t_dup]), rows_right=len(rights[t_dup]) + 1, rows_restore=n[t_dup],
                    missing=0, extra=0, misrouted=0, value_mismatch=1, duplicates=1, seq_mismatch=0, row_diff=1),
    }
    for tp, e in expect.items():
        r = got[tp]
        assert r["as_of_seq"] == lake.seq_at(tp) and r["weave_id"] == w["weave_id"]
        assert {c: r[c] for c in e} == e, (tp, r)
    with pytest.raises(ExpectationFailedError):
        validate("woven", frame, context="test")
