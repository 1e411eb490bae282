"""Planning a weaving run: which sequences, which timepoints (with their seqs), which bases.

For every prediction at or above the confidence threshold, a *woven sequence* pretends the
predicted split of partition P at ``split_key`` k happened at ``predicted_split_ts`` s. At each
timepoint T of the sequence (s, s + cadence, ... <= window_end) it stores restore(P, T) routed to
two hypothetical children. A timepoint is woven only once the change log has reached it; an
extended sequence starts from its own last woven timepoint, a new one from base snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import ContractViolation, InvalidConfidenceError, InvalidParameterError, InvalidTimepointError, TableNotFoundError
from weaver.core.ids import ACTIVE, PREDICTED, child_ids_for, weave_id_for
from weaver.core.settings import Settings, check_confidence
from weaver.core.time import format_duration
from weaver.log.changelog import ChangeLog
from weaver.log.lineage import Lineage
from weaver.pitr import Piece, catalog_index, plan_restore, read_snapshot_catalog
from weaver.predict.models import MODELS


#: The most timepoints one woven sequence may have (its span from the split to its window's end,
#: on the woven cadence). Each timepoint stores a whole copy of the partition, so the rows follow
#: timepoints x partition rows: a 24 h window at 1 s would be 86,401 copies. 10,000 leaves room
#: for every sensible question - a what-if's longest span (31 days) at 5 minutes is 8,929 - and
#: refuses a cadence given in the wrong unit before the plan is even listed.
MAX_TIMEPOINTS = 10_000


def check_timepoints(start: datetime, end: datetime, cadence: timedelta, *, what: str) -> int:
    """The number of timepoints from `start` to `end` (both included) on `cadence`, counted without
    listing them; InvalidParameterError past :data:`MAX_TIMEPOINTS`, naming the count, the cap and
    the finest cadence that fits (nothing is read or written before this)."""
    n = (end - start) // cadence + 1 if end >= start else 0
    if n > MAX_TIMEPOINTS:
        fits = timedelta(seconds=-(-(end - start) // timedelta(seconds=MAX_TIMEPOINTS - 1)))
        raise InvalidParameterError(
            f"{what}: the woven cadence {_duration(cadence)} from {start.isoformat()} to {end.isoformat()} "
            f"would give {n:,} timepoints, more than the {MAX_TIMEPOINTS:,} one woven sequence may have; choose a "
            f"coarser cadence (--cadence / WEAVER_WOVEN_CADENCE, at least {format_duration(fits)}; the default is "
            "1h) or a shorter span")
    return n


def _duration(d: timedelta) -> str:
    """`d` as an option takes it (``1h``, ``90s``; ``0.5s`` below a whole second)."""
    return format_duration(d) if d % timedelta(seconds=1) == timedelta(0) else f"{d.total_seconds():g}s"


@dataclass
class Sequence:
    """One woven sequence as this run sees it (a catalog row plus P's range and the run's plan)."""

    weave_id: str
    prediction_id: str
    source_partition_id: str
    key_lo: str
    key_hi: str | None
    split_key: str
    split_ts: datetime
    confidence: float
    window_start: datetime
    window_end: datetime
    status: str
    created_at: datetime
    last_timepoint: datetime | None = None
    last_seq: int | None = None
    actual_split_key: str | None = None
    actual_split_ts: datetime | None = None
    updated_at: datetime | None = None
    origin: str = PREDICTED
    is_new: bool = False
    # Filled by planning:
    timepoints: list[datetime] = field(default_factory=list)
    tp_seqs: list[int] = field(default_factory=list)
    pieces: list = field(default_factory=list)  # weaver.pitr.Piece, for a sequence's first timepoints

    @property
    def child_ids(self) -> tuple[str, str]:
        return child_ids_for(self.source_partition_id, self.weave_id)

    def candidate_timepoints(self, cadence: timedelta, limit: datetime) -> list[datetime]:
        """Timepoints after the last woven one (or from split_ts) on the cadence, up to `limit`.
        A cadence giving the whole sequence more than MAX_TIMEPOINTS is refused first."""
        check_timepoints(self.split_ts, self.window_end, cadence, what=f"weave {self.weave_id} of partition "
                                                                        f"{self.source_partition_id!r}")
        t = self.split_ts if self.last_timepoint is None else self.last_timepoint + cadence
        limit = min(limit, self.window_end)
        out = []
        while t <= limit:
            out.append(t)
            t += cadence
        return out

    def catalog_row(self, updated_at: datetime) -> dict:
        left, right = self.child_ids
        return {
            "weave_id": self.weave_id, "prediction_id": self.prediction_id,
            "source_partition_id": self.source_partition_id, "split_key": self.split_key,
            "split_ts": self.split_ts, "confidence": self.confidence, "window_start": self.window_start,
            "window_end": self.window_end, "child_ids": [left, right], "status": self.status,
            "created_at": self.created_at, "last_timepoint": self.last_timepoint, "last_seq": self.last_seq,
            "actual_split_key": self.actual_split_key, "actual_split_ts": self.actual_split_ts,
            "updated_at": updated_at, "origin": self.origin,
        }


def sequence_from_row(r: dict, lineage: Lineage) -> Sequence:
    """A woven sequence from its catalog row and its source partition's range."""
    p = lineage.get(r["source_partition_id"])
    return Sequence(
        weave_id=r["weave_id"], prediction_id=r["prediction_id"], source_partition_id=r["source_partition_id"],
        key_lo=p.key_lo, key_hi=p.key_hi, split_key=r["split_key"], split_ts=r["split_ts"],
        confidence=float(r["confidence"]), window_start=r["window_start"], window_end=r["window_end"],
        status=r["status"], created_at=r["created_at"], last_timepoint=r["last_timepoint"],
        last_seq=r["last_seq"], actual_split_key=r["actual_split_key"], actual_split_ts=r["actual_split_ts"],
        updated_at=r["updated_at"], origin=r["origin"])


def select_predictions(settings: Settings, *, at: datetime, run_ts: datetime | None = None,
                       model: str | None) -> tuple[datetime | None, pa.Table]:
    """Predictions of `model` from its latest run <= `at` (or from its run `run_ts`): (run_ts, rows).

    `model` must be named (None = every model's rows: advice, one row per prediction). The table
    holds several models' runs at one instant (``weaver backtest --model X`` backfills X's), so a
    weaving run names its model: it weaves one sequence per partition and run, never one per model.
    """
    uri = storage.uri_for(settings, storage.PREDICTIONS)
    if not storage.is_table(uri):
        raise TableNotFoundError(f"no predictions table at {uri}; run `weaver predict --at T` before weaving")
    of_model = [("model", "=", model)] if model is not None else []
    whose = f" of model {model!r}" if model is not None else ""
    runs = storage.read(uri, storage.PREDICTIONS, columns=["run_ts"], filters=of_model or None).column("run_ts")
    if model is not None and len(runs) == 0 and model not in MODELS:
        # A typo would otherwise weave nothing and look like a quiet run. A name outside MODELS is
        # accepted once the table holds its rows (predictions written by another forecaster).
        present = sorted(set(storage.read(uri, storage.PREDICTIONS, columns=["model"]).column("model").to_pylist()))
        raise InvalidParameterError(
            f"model {model!r} is unknown: no predictions of it here (models with predictions: {present}); "
            f"the forecast models are {', '.join(MODELS)}")
    if run_ts is not None:
        if run_ts > at:
            raise InvalidParameterError(
                f"--run-ts {run_ts.isoformat()} is after --at {at.isoformat()}: a run may weave only predictions "
                "made by then (no look-ahead)")
        chosen = run_ts
        if not pc.any(pc.equal(runs, pa.scalar(run_ts, storage.TS))).as_py():
            known = sorted({t for t in runs.to_pylist()})[-5:]
            others = sorted(set(storage.read(uri, storage.PREDICTIONS, columns=["model"], filters=[
                ("run_ts", "=", pa.scalar(run_ts, storage.TS))]).column("model").to_pylist()))
            hint = f"; that run holds predictions of {others} only (pass --model)" if others and model is not None else ""
            raise InvalidParameterError(
                f"no predictions{whose} with run_ts {run_ts.isoformat()}{hint}; latest runs{whose}: "
                f"{[t.isoformat() for t in known]}")
    else:
        eligible = runs.filter(pc.less_equal(runs, pa.scalar(at, storage.TS)))
        if len(eligible) == 0:
            return None, storage.empty(storage.PREDICTIONS)
        chosen = pc.max(eligible).as_py()
    rows = storage.read(uri, storage.PREDICTIONS, filters=[("run_ts", "=", pa.scalar(chosen, storage.TS)), *of_model])
    return chosen, rows


def sequences_for(predictions: pa.Table, lineage: Lineage, threshold: float, at: datetime) -> list[Sequence]:
    """New sequences for the predictions at or above `threshold`, each validated (nothing is
    written when one is malformed: ContractViolation names the prediction)."""
    out = []
    for r in predictions.to_pylist():
        pid, where = r["partition_id"], f"prediction {r['prediction_id']!r} of partition {r['partition_id']!r}"
        try:
            # NaN compares false with the threshold and > 1 passes it: neither may be woven or served.
            check_confidence(r["probability"], what="probability")
        except InvalidConfidenceError as exc:
            raise ContractViolation(f"{where}: {exc}; a probability is a finite number in [0, 1] - re-run "
                                    "the forecast", partition_id=pid) from exc
        if r["probability"] < threshold:
            continue
        p = lineage.by_id.get(pid)
        if p is None:
            raise ContractViolation(f"{where}: the partition is not in the partitions lineage; "
                                    "re-run the forecast on this lake", partition_id=pid)
        k, s = r["split_key"], r["predicted_split_ts"]
        if (k is None or s is None) and r.get("probability_raw") == 0:
            # No sample path crossed: there is no split to weave. Its probability is the calibration
            # map's floor (raw 0 maps above 0), so a threshold at or below that floor reaches it.
            continue
        if k is None or s is None:
            raise ContractViolation(f"{where}: probability {r['probability']:.2f} >= {threshold} but no split_key/"
                                    "predicted_split_ts; the forecast must give both for a likely split",
                                    partition_id=pid)
        if not (p.key_lo < k and (p.key_hi is None or k < p.key_hi)):
            raise ContractViolation(f"{where}: split_key {k!r} is not strictly inside the partition's range "
                                    f"[{p.key_lo!r}, {p.key_hi!r}); both children must be non-empty ranges",
                                    partition_id=pid)
        if not (r["window_start"] <= s <= r["window_end"]):
            raise ContractViolation(f"{where}: predicted_split_ts {s.isoformat()} lies outside its window "
                                    f"[{r['window_start'].isoformat()}, {r['window_end'].isoformat()}]",
                                    partition_id=pid)
        wid = weave_id_for(r["prediction_id"])
        out.append(Sequence(weave_id=wid, prediction_id=r["prediction_id"], source_partition_id=pid,
                            key_lo=p.key_lo, key_hi=p.key_hi, split_key=k, split_ts=s,
                            confidence=float(r["probability"]), window_start=r["window_start"],
                            window_end=r["window_end"], status=ACTIVE, created_at=at, is_new=True))
    return out


def plan_timepoints(settings: Settings, seqs: list[Sequence], at: datetime) -> list[Sequence]:
    """Give each sequence the timepoints this run weaves (after its last one, on the cadence,
    <= min(at, window_end) and passed by the change log: t < its last ts) with their seqs; return
    those with any."""
    candidates = {s.weave_id: s.candidate_timepoints(settings.woven_cadence, at) for s in seqs}
    all_tps = sorted({t for tps in candidates.values() for t in tps})
    if not all_tps:
        return []
    max_ts, tp_seq = ChangeLog(settings).seqs_at(all_tps)
    seq_of = dict(zip(all_tps, tp_seq))
    todo = []
    for s in seqs:
        # Strictly before the log's last ts: later changes may still arrive with exactly that ts
        # (an ingest writer carries late events up to its tail's ts), so T is complete only once
        # the log holds a change after it.
        s.timepoints = [t for t in candidates[s.weave_id] if max_ts is not None and t < max_ts]
        s.tp_seqs = [seq_of[t] for t in s.timepoints]
        if s.timepoints:
            todo.append(s)
    return todo


def plan_bases(settings: Settings, lineage: Lineage, todo: list[Sequence]) -> None:
    """Base pieces: a new sequence starts from snapshots <= its first timepoint's seq (or empty at
    seq 0); an extended one from its own last woven timepoint."""
    news = [s for s in todo if s.last_timepoint is None]
    idx = catalog_index(read_snapshot_catalog(settings)) if news else {}
    for s in todo:
        if s.last_timepoint is None:
            s.pieces = plan_restore(idx, lineage, s.source_partition_id, s.tp_seqs[0])
        else:
            s.pieces = [Piece(s.key_lo, s.key_hi, None, None, int(s.last_seq))]


def check_segment(settings: Settings, lineage: Lineage, todo: list[Sequence]) -> None:
    """DESIGN §4.5 before writing: every seq the run replays, (min base, max timepoint seq], is in
    the log exactly once (reads only `seq`), and each of those changes is filed under a partition
    that owned its key and its seq (reads `partition_id` and `key` too, a batch at a time; a
    KeyOutOfRangeError names the offending seq) - so a misrouted change refuses the run before
    its rows are written, as a restore of that range would refuse it."""
    lo = min(p.base_seq for s in todo for p in s.pieces)
    hi = max(s.tp_seqs[-1] for s in todo)
    log = ChangeLog(settings)
    try:
        log.check_contiguous(lo, hi)
        log.check_owned(lo, hi, lineage)
    except InvalidTimepointError as exc:
        raise InvalidTimepointError(f"weaving: {exc}; take base snapshots (weaver snapshot) or weave a later "
                                    "window") from exc
