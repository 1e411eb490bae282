"""The Spark folds of weaver/replay/spark.py, each transform on its own, on a few hand-built rows.

Every expected frame is written out by hand from the input rows above it (a handful of events,
two or three timepoints), never produced by running a fold, and compared with
pyspark.testing.assertDataFrameEqual (types included, row order ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from weaver.replay.spark import (
    filter_last_timepoint, filter_puts, filter_seq_span, with_last_state, with_next_seq, with_timepoints,
    with_weave_of_change, with_weave_of_snapshot_row, with_woven_partition, woven_rows,
)

pytestmark = pytest.mark.spark

T1 = datetime(2026, 1, 1, 3, tzinfo=timezone.utc)
T2 = datetime(2026, 1, 1, 4, tzinfo=timezone.utc)
T3 = datetime(2026, 1, 1, 5, tzinfo=timezone.utc)
EVENTS = "weave_id string, key string, seq long, op string, value binary"
WOVEN = ("weave_id string, woven_partition_id string, source_partition_id string, timepoint timestamp, "
         "as_of_seq long, key string, value binary")


def us(t: datetime) -> int:
    """Microseconds since the epoch, by hand (whole seconds only here)."""
    return int(t.timestamp()) * 1_000_000


@dataclass
class Piece:
    """A base piece of a sequence (what weaver.pitr.Piece carries)."""

    key_lo: str
    key_hi: str | None
    snapshot_id: str | None
    base_seq: int


@dataclass
class Plan:
    """A woven sequence with the attributes of weaver.replay.spark.WovenPlan."""

    weave_id: str
    source_partition_id: str
    split_key: str
    timepoints: list[datetime]
    tp_seqs: list[int]
    pieces: list = field(default_factory=list)
    last_timepoint: datetime | None = None
    last_seq: int | None = None

    @property
    def child_ids(self) -> tuple[str, str]:
        return f"{self.source_partition_id}~{self.weave_id}~L", f"{self.source_partition_id}~{self.weave_id}~R"


# --- the one-seq fold ----------------------------------------------------------------------------
def test_with_last_state_keeps_each_keys_last_event_by_seq_when_a_put(spark):
    events = spark.createDataFrame([
        ("p1", "a", 1, "PUT", b"a1"), ("p1", "a", 3, "PUT", b"a3"),
        ("p1", "b", 2, "PUT", b"b2"), ("p1", "b", 4, "DELETE", None),  # deleted last: absent
        ("p1", "c", 5, "DELETE", None),  # a delete of a key never put
        ("p1", "e", 7, "DELETE", None), ("p1", "e", 8, "PUT", b"e8"),  # put again after a delete
        ("p2", "a", 2, "PUT", b"x2"),  # the same key in another partition is its own state
        ("p2", "d", 6, "PUT", b"d6"), ("p2", "d", 5, "PUT", b"d5"),  # by seq, not by row order
    ], "partition_id string, key string, seq long, op string, value binary")
    expected = spark.createDataFrame([
        ("p1", "a", b"a3"), ("p1", "e", b"e8"), ("p2", "a", b"x2"), ("p2", "d", b"d6"),
    ], "partition_id string, key string, value binary")
    assertDataFrameEqual(events.transform(with_last_state), expected)


# --- the woven fold, step by step ----------------------------------------------------------------
def test_filter_seq_span_keeps_after_exclusive_upto_inclusive(spark):
    df = spark.createDataFrame([(s, f"k{s}") for s in range(1, 8)], "seq long, key string")
    expected = spark.createDataFrame([(3, "k3"), (4, "k4"), (5, "k5")], "seq long, key string")
    assertDataFrameEqual(df.transform(filter_seq_span(2, 5)), expected)


def test_with_next_seq_orders_each_weave_and_key_by_seq(spark):
    events = spark.createDataFrame([
        ("w1", "a", 6, "PUT", b"a6"), ("w1", "a", 1, "PUT", b"a1"), ("w1", "a", 4, "DELETE", None),
        ("w1", "b", 2, "PUT", b"b2"),
        ("w2", "a", 3, "PUT", b"w2a3"),  # another weave's "a": not followed by w1's events
    ], EVENTS)
    expected = spark.createDataFrame([
        ("w1", "a", 1, "PUT", b"a1", 4), ("w1", "a", 4, "DELETE", None, 6), ("w1", "a", 6, "PUT", b"a6", None),
        ("w1", "b", 2, "PUT", b"b2", None), ("w2", "a", 3, "PUT", b"w2a3", None),
    ], EVENTS + ", next_seq long")
    assertDataFrameEqual(events.transform(with_next_seq), expected)


def test_filter_puts_drops_deletes(spark):
    events = spark.createDataFrame([
        ("w1", "a", 1, "PUT", b"a1"), ("w1", "a", 2, "DELETE", None), ("w1", "b", 3, "PUT", b"b3"),
    ], EVENTS)
    expected = spark.createDataFrame([("w1", "a", 1, "PUT", b"a1"), ("w1", "b", 3, "PUT", b"b3")], EVENTS)
    assertDataFrameEqual(events.transform(filter_puts), expected)


def test_with_timepoints_one_row_per_timepoint_whose_seq_the_event_is_live_at(spark):
    """w1's timepoints T1, T2, T3 at seqs 3, 5, 8: an event is live at a timepoint when
    seq <= its seq < next_seq (no next_seq: every later one). w2 (one timepoint, T2 at seq 4)
    never meets w1's events, though its seq lies in their spans."""
    plans = [Plan("w1", "P", "k5", [T1, T2, T3], [3, 5, 8]), Plan("w2", "Q", "m", [T2], [4])]
    cols = "weave_id string, key string, seq long, next_seq long"
    df = spark.createDataFrame([
        ("w1", "a", 1, 4),  # live at seq 3 only
        ("w1", "b", 3, 5),  # an event AT a timepoint's seq belongs to it; its successor at seq 5 takes over there
        ("w1", "c", 4, None),  # the key's last event: live from seq 5 to the end
        ("w1", "d", 6, 7),  # replaced before the next timepoint: no timepoint
        ("w1", "e", 9, None),  # after the last timepoint
        ("w2", "a", 2, None),  # w2's own timepoint only
    ], cols)
    plan = "source_partition_id string, split_key string, left_id string, right_id string"
    expected = spark.createDataFrame([
        ("w1", "a", 1, 4, "P", "k5", "P~w1~L", "P~w1~R", T1, 3),
        ("w1", "b", 3, 5, "P", "k5", "P~w1~L", "P~w1~R", T1, 3),
        ("w1", "c", 4, None, "P", "k5", "P~w1~L", "P~w1~R", T2, 5),
        ("w1", "c", 4, None, "P", "k5", "P~w1~L", "P~w1~R", T3, 8),
        ("w2", "a", 2, None, "Q", "m", "Q~w2~L", "Q~w2~R", T2, 4),
    ], f"{cols}, {plan}, timepoint timestamp, as_of_seq long")
    got = df.transform(with_timepoints(plans))
    assertDataFrameEqual(got.select(*expected.columns), expected)
    assert sorted(got.columns) == sorted(expected.columns)


def test_with_woven_partition_routes_keys_below_split_key_left(spark):
    cols = "key string, split_key string, left_id string, right_id string"
    df = spark.createDataFrame([
        ("k05", "k07", "L", "R"), ("k07", "k07", "L", "R"),  # the split key itself goes right
        ("k1", "k07", "L", "R"),  # string order: "k1" > "k07"
        ("a", "b", "L2", "R2"), ("c", "b", "L2", "R2"),
    ], cols)
    expected = spark.createDataFrame([
        ("k05", "k07", "L", "R", "L"), ("k07", "k07", "L", "R", "R"), ("k1", "k07", "L", "R", "R"),
        ("a", "b", "L2", "R2", "L2"), ("c", "b", "L2", "R2", "R2"),
    ], cols + ", woven_partition_id string")
    assertDataFrameEqual(df.transform(with_woven_partition), expected)


# --- the whole woven fold on a tiny event set ----------------------------------------------------
def test_woven_rows_end_to_end(spark):
    """w1 weaves P at split key k5 at timepoints T1..T3 (seqs 2, 4, 6); w2 weaves Q at "m" at T2 (seq 4).

    w1's states, folded by hand: at seq 2 {k1: k1@0, k3: k3@1, k7: k7@2}; at seq 4 k1 is deleted
    and k3 rewritten: {k3: k3@4, k7: k7@2}; at seq 6 k5 is put and k7 deleted: {k3: k3@4, k5: k5@5};
    k9 (seq 7) comes after the last timepoint. w2 at seq 4: {k3: w2-k3, n: n@3} (a deleted at 4) -
    its k3 is not cut short by w1's k3 events.
    """
    plans = [Plan("w1", "P", "k5", [T1, T2, T3], [2, 4, 6]), Plan("w2", "Q", "m", [T2], [4])]
    events = spark.createDataFrame([
        ("w1", "k1", 0, "PUT", b"k1@0"), ("w1", "k7", 0, "PUT", b"k7@0"),  # base rows at the base seq
        ("w1", "k3", 1, "PUT", b"k3@1"), ("w1", "k7", 2, "PUT", b"k7@2"), ("w1", "k1", 3, "DELETE", None),
        ("w1", "k3", 4, "PUT", b"k3@4"), ("w1", "k5", 5, "PUT", b"k5@5"), ("w1", "k7", 6, "DELETE", None),
        ("w1", "k9", 7, "PUT", b"k9@7"),
        ("w2", "a", 1, "PUT", b"a@1"), ("w2", "k3", 2, "PUT", b"w2-k3"), ("w2", "n", 3, "PUT", b"n@3"),
        ("w2", "a", 4, "DELETE", None),
    ], EVENTS)
    expected = spark.createDataFrame([
        ("w1", "P~w1~L", "P", T1, 2, "k1", b"k1@0"),
        ("w1", "P~w1~L", "P", T1, 2, "k3", b"k3@1"),
        ("w1", "P~w1~R", "P", T1, 2, "k7", b"k7@2"),
        ("w1", "P~w1~L", "P", T2, 4, "k3", b"k3@4"),
        ("w1", "P~w1~R", "P", T2, 4, "k7", b"k7@2"),
        ("w1", "P~w1~L", "P", T3, 6, "k3", b"k3@4"),
        ("w1", "P~w1~R", "P", T3, 6, "k5", b"k5@5"),
        ("w2", "Q~w2~L", "Q", T2, 4, "k3", b"w2-k3"),
        ("w2", "Q~w2~R", "Q", T2, 4, "n", b"n@3"),
    ], WOVEN)
    assertDataFrameEqual(woven_rows(events, plans), expected)


# --- the inputs of the woven fold ------------------------------------------------------------------
def test_with_weave_of_change_copies_a_change_to_every_sequence_whose_piece_holds_it(spark):
    """w1: [ , k5) from empty at seq 0 and [k5, +inf) from snapshot P@3, up to seq 6;
    w2: [k3, k8) from empty at seq 2, up to seq 5."""
    plans = [Plan("w1", "P", "k4", [T1], [6], pieces=[Piece("", "k5", None, 0), Piece("k5", None, "P@3", 3)]),
             Plan("w2", "P", "k6", [T1], [5], pieces=[Piece("k3", "k8", None, 2)])]
    cols = "seq long, key string, op string, value binary"
    changes = spark.createDataFrame([
        (1, "k1", "PUT", b"1"),  # w1's first piece
        (2, "k6", "PUT", b"2"),  # before both bases (w1's P@3, w2's seq 2): in neither
        (3, "k9", "PUT", b"3"),  # at w1's base seq: already in the snapshot
        (4, "k6", "PUT", b"4"),  # in both
        (6, "k4", "PUT", b"6"),  # w1 only: past w2's last timepoint seq 5
        (7, "k1", "PUT", b"7"),  # past every sequence's end
    ], cols)
    expected = spark.createDataFrame([
        (1, "k1", "PUT", b"1", "w1"), (4, "k6", "PUT", b"4", "w1"), (4, "k6", "PUT", b"4", "w2"),
        (6, "k4", "PUT", b"6", "w1"),
    ], cols + ", weave_id string")
    assertDataFrameEqual(changes.transform(with_weave_of_change(plans)), expected)


def test_with_weave_of_snapshot_row_puts_base_rows_at_the_base_seq_cut_to_the_piece(spark):
    plans = [Plan("w1", "P", "k4", [T1], [6], pieces=[Piece("", "k5", None, 0), Piece("k5", None, "P@3", 3)]),
             Plan("w3", "P", "k2", [T1], [4], pieces=[Piece("", "k6", "P@3", 3)])]
    rows = spark.createDataFrame([
        ("P@3", "k2", b"v2"), ("P@3", "k5", b"v5"), ("P@3", "k7", b"v7"),
        ("Q@1", "k7", b"q7"),  # a snapshot no piece uses
    ], "snapshot_id string, key string, value binary")
    expected = spark.createDataFrame([
        ("w3", "k2", 3, "PUT", b"v2"), ("w1", "k5", 3, "PUT", b"v5"), ("w3", "k5", 3, "PUT", b"v5"),
        ("w1", "k7", 3, "PUT", b"v7"),
    ], EVENTS)
    assertDataFrameEqual(rows.transform(with_weave_of_snapshot_row(plans)), expected)


def test_filter_last_timepoint_turns_the_last_woven_state_into_puts_at_last_seq(spark):
    woven = spark.createDataFrame([
        ("w1", "P~w1~L", "P", T1, 2, "k1", b"old"),
        ("w1", "P~w1~L", "P", T2, 4, "k3", b"k3@4"), ("w1", "P~w1~R", "P", T2, 4, "k7", b"k7@2"),
        ("w2", "Q~w2~L", "Q", T2, 4, "k3", b"w2-k3"),  # not extended in this run
    ], WOVEN)
    ext = [Plan("w1", "P", "k5", [T3], [6], last_timepoint=T2, last_seq=4)]
    expected = spark.createDataFrame([("w1", "k3", 4, "PUT", b"k3@4"), ("w1", "k7", 4, "PUT", b"k7@2")], EVENTS)
    assertDataFrameEqual(woven.transform(filter_last_timepoint(ext)), expected)
