"""Every deterministic id of the lake, the woven child id format, and the status constants.

Ids are derived from what they name, so a rerun of the same data interval writes the same ids
and idempotent MERGE / replaceWhere writes keyed on them leave one copy (DESIGN §3).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

from weaver.core.errors import InvalidParameterError

#: A real partition id (a user's lake may name partitions freely within this alphabet).
PARTITION_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: A woven child: ``<source partition>~<first 8 hex of the weave id>~L|R`` ('~' never occurs in real ids).
WOVEN_CHILD_RE = re.compile(r"^(?P<source>[A-Za-z0-9_.\-]{1,64})~(?P<wid>[0-9a-f]{8})~(?P<side>[LR])$")
#: Either kind, as a JSON-Schema pattern (the API's partition_id parameter).
PARTITION_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}(~[0-9a-f]{8}~[LR])?$"

# --- woven sequence lifecycle (woven_catalog.status) ---
ACTIVE, CONFIRMED, REFUTED, EXPIRED = "active", "confirmed", "refuted", "expired"
#: Write-audit-publish: written by a run, not yet checked (STAGED) or failed its check (QUARANTINED).
STAGED, QUARANTINED = "staged", "quarantined"
STATUSES = (ACTIVE, CONFIRMED, REFUTED, EXPIRED, STAGED, QUARANTINED)
#: Sequences a run extends: a confirmed split stays the fastest recovery source in its window.
EXTENDABLE = frozenset({ACTIVE, CONFIRMED})
#: Weaves whose snapshots may have been vacuumed are not trusted as a recovery source.
UNUSABLE = frozenset({EXPIRED, STAGED, QUARANTINED})
#: Written but not published: never served, never extended, never listed as a source.
UNPUBLISHED = frozenset({STAGED, QUARANTINED})
# --- where a woven sequence comes from (woven_catalog.origin) ---
PREDICTED, MANUAL = "predicted", "manual"
ORIGINS = (PREDICTED, MANUAL)
#: The prediction_id of a manual weave: no prediction stands behind it.
MANUAL_PREDICTION_ID = "manual"


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def snapshot_id(partition_id: str, as_of_seq: int) -> str:
    """The id of a partition's base snapshot at `as_of_seq`: ``"{pid}@{seq}"``."""
    return f"{partition_id}@{as_of_seq}"


def weave_id_for(prediction_id: str) -> str:
    """The deterministic weave id of a prediction: ``sha1(prediction_id)[:16]``."""
    return _sha1(prediction_id)[:16]


def manual_weave_id(partition_id: str, split_key: str, split_ts: datetime, until: datetime) -> str:
    """The weave id of a user-chosen split: sha1 of ``"manual|{P}|{k}|{split_ts}|{until}"`` (UTC ISO),
    first 16 hex digits; asking for the same what-if twice names the same sequence."""
    iso = [t.astimezone(timezone.utc).isoformat() for t in (split_ts, until)]
    return _sha1(f"manual|{partition_id}|{split_key}|{iso[0]}|{iso[1]}")[:16]


def woven_child_id(source_partition_id: str, weave_id: str, side: str) -> str:
    """The id of a woven child: ``f"{P}~{weave_id[:8]}~L"`` (keys < split_key) or ``~R``."""
    if side not in ("L", "R"):
        raise InvalidParameterError(f"side must be 'L' or 'R', not {side!r}")
    return f"{source_partition_id}~{weave_id[:8]}~{side}"


def child_ids_for(partition_id: str, weave_id: str) -> tuple[str, str]:
    """Ids of the hypothetical children (left: keys < split_key, right: keys >= split_key)."""
    return woven_child_id(partition_id, weave_id, "L"), woven_child_id(partition_id, weave_id, "R")


def interval_id(start: datetime | None, end: datetime) -> str:
    """Deterministic id of a data interval (names its staged batch)."""
    return _sha1(f"{start.isoformat() if start else '-'}|{end.isoformat()}")[:16]


def recovery_id_for(partition_id: str, at: datetime) -> str:
    """Deterministic id of a recovery: the same (partition, instant) gives the same rows and id."""
    return _sha1(f"{partition_id}|{at.isoformat()}")[:16]



def prediction_id(run_ts: datetime, partition_id: str, model: str) -> str:
    """Deterministic id: sha1 of ``"{run_ts iso}|{partition_id}|{model}"``, first 16 hex digits."""
    iso = run_ts.astimezone(timezone.utc).isoformat()
    return hashlib.sha1(f"{iso}|{partition_id}|{model}".encode()).hexdigest()[:16]


def backtest_id(start: datetime, end: datetime, every: timedelta, model: str, window: timedelta,
                size_threshold: float, write_threshold: float, *, near_fraction: float, calibration: str,
                confidence_threshold: float, samples: int) -> str:
    """Deterministic id of a backtest: its span, cadence, model, window and thresholds, and what else
    changes its rows or its report (the near baseline's fraction, the calibration method, the
    confidence threshold, the sample paths per forecast)."""
    raw = f"{start.isoformat()}|{end.isoformat()}|{every.total_seconds()}|{model}|{window.total_seconds()}|" \
          f"{size_threshold}|{write_threshold}|near={near_fraction}|cal={calibration}|" \
          f"conf={confidence_threshold}|samples={samples}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def metrics_state_id(partition_id: str, as_of_ts: datetime, as_of_seq: int) -> str:
    """Deterministic id of one partition's row of a metrics checkpoint: sha1 of
    ``"metrics_state|{pid}|{as_of_ts iso}|{as_of_seq}"``, first 16 hex digits."""
    return _sha1(f"metrics_state|{partition_id}|{as_of_ts.astimezone(timezone.utc).isoformat()}|{as_of_seq}")[:16]


def advice_id(prediction_id: str) -> str:
    """Deterministic id of the advice given on a prediction: sha1 of ``"advice|{prediction_id}"``[:16]."""
    return _sha1(f"advice|{prediction_id}")[:16]
