"""Hypothetical splits on demand: weave "what if P had split at key k at T?" into the woven tier.

A manual weave is a :class:`weaver.weave.Sequence` built from the user's split instead of from a
prediction, and goes through the same weaving run (:func:`weaver.weave.weave_sequences`), so every
woven-tier invariant (DESIGN §4.2) and oracle test holds for it. Its catalog row says
``origin = 'manual'``, ``prediction_id = 'manual'`` and ``confidence = 1.0``: the split is given,
not forecast - in the world the user asks about it happens for certain - so the confidence filter
never hides it, and it serves recovery like any woven snapshot (same rows by §4.2/§4.3).
The weave id is derived from (P, k, T, until), so asking the same question twice writes nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from weaver.core import storage
from weaver.core.errors import InvalidParameterError, InvalidTimepointError, TableNotFoundError, UnknownPartitionError
from weaver.core.ids import ACTIVE, EXTENDABLE, MANUAL, MANUAL_PREDICTION_ID, WOVEN_CHILD_RE, manual_weave_id
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint
from weaver.log import ChangeLog, Lineage
from weaver.predict import in_range
from weaver.weave import Sequence, check_timepoints, read_woven_catalog, sequence_from_row, weave_sequences
from weaver.whatif.keys import KEY_BY, KeyChoice, split_candidates

#: The longest span one what-if may ask for (a sequence of hourly timepoints; larger spans are a
#: backfill, not a question).
MAX_SPAN = timedelta(days=31)


def _span(d: timedelta) -> str:
    """`d` in words a reader takes in at a glance: ``"31 days"``, ``"40 days 12 hours"``; each unit
    down to the microsecond only when there are any (a span just over the limit must not read as it)."""
    secs, us = d.days * 86400 + d.seconds, d.microseconds
    parts = [(secs // 86400, "day"), (secs % 86400 // 3600, "hour"), (secs % 3600 // 60, "minute"),
             (secs % 60, "second"), (us, "microsecond")]
    return " ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n) or "0 seconds"


@dataclass
class WhatIf:
    """A validated what-if: the sequence to weave and how its split key was chosen."""

    sequence: Sequence
    key_by: str  # 'given' | 'size' | 'load'
    choice: KeyChoice | None
    log_end: datetime

    def summary(self) -> dict:
        s = self.sequence
        return {"weave_id": s.weave_id, "partition_id": s.source_partition_id, "split_key": s.split_key,
                "split_ts": s.split_ts.isoformat(), "until": s.window_end.isoformat(), "child_ids": list(s.child_ids),
                "origin": MANUAL, "confidence": s.confidence, "key_by": self.key_by,
                "candidates": self.choice.as_dict() if self.choice else None, "log_end": self.log_end.isoformat(),
                "existing": not s.is_new}


def plan_whatif(settings: Settings, partition_id: str, at: datetime | str, *, split_key: str | None = None,
                until: datetime | str | None = None, key_by: str = "auto", lineage: Lineage | None = None) -> WhatIf:
    """Validate a what-if and build its sequence; reads only, writes nothing.

    Named errors: UnknownPartitionError (not a real partition), InvalidTimepointError (no timezone,
    before the partition existed, after it was retired or after the change log ends),
    InvalidParameterError (split key not strictly inside the range, until before T, a span over
    MAX_SPAN or more than MAX_TIMEPOINTS timepoints on the woven cadence, key_by).
    """
    at = parse_timepoint(at)
    if key_by not in KEY_BY:
        raise InvalidParameterError(f"key_by {key_by!r} is not one of {', '.join(KEY_BY)}")
    if isinstance(partition_id, str) and WOVEN_CHILD_RE.match(partition_id):
        raise UnknownPartitionError(
            f"{partition_id!r} is a woven child: splitting a hypothetical child again (a cascade) is not built yet; "
            "weave a what-if of a real partition (see docs/design.md, 'Cascades')")
    if not storage.is_table(storage.uri_for(settings, storage.CHANGELOG)):
        raise TableNotFoundError(f"no change log under {settings.lake}; point --lake at a lake with a changelog table")
    lineage = lineage if lineage is not None else Lineage.load(settings)
    p = lineage.get(partition_id)
    if at < p.created_ts:
        raise InvalidTimepointError(f"{at.isoformat()} is before partition {p.partition_id!r} existed (created "
                                    f"{p.created_ts.isoformat()}); ask about an instant in its lifetime")
    if p.retired_ts is not None and at >= p.retired_ts:
        raise InvalidTimepointError(f"partition {p.partition_id!r} really split at {p.retired_ts.isoformat()}, before "
                                    f"{at.isoformat()}; ask about one of its children, or an earlier instant")
    log_end, _ = ChangeLog(settings).seqs_at([at])
    if log_end is None or at >= log_end:
        # Strict, as for every woven timepoint (weaver.weave.plan.plan_timepoints): changes may still
        # arrive with the log's last ts, so T is complete only once the log holds a change after it.
        raise InvalidTimepointError(f"{at.isoformat()} is not before the change log's last change "
                                    f"({log_end.isoformat() if log_end else 'empty log'}); a what-if is woven from "
                                    "data that has arrived - ask about an earlier instant")
    until = parse_timepoint(until) if until is not None else at + settings.window
    if until < at:
        raise InvalidParameterError(f"until {until.isoformat()} is before the split instant {at.isoformat()}")
    if until - at > MAX_SPAN:
        raise InvalidParameterError(f"until {until.isoformat()} is {_span(until - at)} after the split instant "
                                    f"{at.isoformat()}; at most {_span(MAX_SPAN)} per what-if (a longer span is a "
                                    "backfill)")
    check_timepoints(at, until, settings.woven_cadence, what=f"what-if of {p.partition_id!r}")
    choice = None
    if split_key is not None:
        hi = repr(p.key_hi) if p.key_hi is not None else "+inf"
        if not in_range(split_key, p.key_lo, p.key_hi):
            raise InvalidParameterError(
                f"split key {split_key!r} is not strictly inside the range of {p.partition_id!r}, [{p.key_lo!r}, "
                f"{hi}); both children must be non-empty ranges - omit --split-key to use the size "
                "median or load-balancing key")
        by = "given"
    else:
        choice = split_candidates(settings, p, at)
        cut = choice.chosen if key_by == "auto" else choice.cuts.get(key_by)
        if cut is None:
            raise InvalidParameterError(
                f"{p.partition_id!r} has no {key_by if key_by != 'auto' else ''} split key at {at.isoformat()} "
                f"({choice.items} live item(s), {choice.recent_writes} recent write(s)); give --split-key")
        split_key, by = cut.key, cut.by
    wid = manual_weave_id(p.partition_id, split_key, at, until)
    row = next((r for r in read_woven_catalog(settings).to_pylist() if r["weave_id"] == wid), None)
    if row is not None:
        seq = sequence_from_row(row, lineage)
        if seq.status not in EXTENDABLE:
            # Asked again after it expired (rows vacuumed) or was quarantined (rows failed their
            # audit): weave it again from the base snapshots, never from its own old rows.
            seq.status, seq.last_timepoint, seq.last_seq = ACTIVE, None, None
    else:
        seq = Sequence(weave_id=wid, prediction_id=MANUAL_PREDICTION_ID, source_partition_id=p.partition_id,
                       key_lo=p.key_lo, key_hi=p.key_hi, split_key=split_key, split_ts=at, confidence=1.0,
                       window_start=at, window_end=until, status=ACTIVE, created_at=datetime.now(timezone.utc),
                       origin=MANUAL, is_new=True)
    return WhatIf(seq, by, choice, log_end)


def whatif_weave(spark, settings: Settings, partition_id: str, at: datetime | str, *, split_key: str | None = None,
                 until: datetime | str | None = None, key_by: str = "auto", stage: bool = False) -> dict:
    """Weave a what-if (validated first: nothing is written on bad input) through the weaving run.

    Timepoints run from T on the woven cadence up to `until` (default T + window) as far as the
    change log has reached; later predicted weaving runs extend the sequence as data arrives.
    Returns the what-if's summary plus the run's counts (timepoints_written, rows_written, version).
    With `stage` (every entry point) the weave lands ``staged`` and is published by the `woven` check
    (:func:`weaver.pipeline.gate_weaves`), as predicted weaves are.
    """
    w = plan_whatif(settings, partition_id, at, split_key=split_key, until=until, key_by=key_by)
    lineage = Lineage.load(settings)
    run = weave_sequences(spark, settings, lineage, [w.sequence], at=w.sequence.window_end, stage=stage)
    return {**w.summary(), **run}



