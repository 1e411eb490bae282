"""Time: the one timepoint parser, durations, and the epoch-anchored microsecond grid.

Every instant that crosses a boundary (CLI flag, API parameter, DAG param, function argument) goes
through :func:`parse_timepoint`: ISO-8601 text or a datetime, refused without a timezone, returned
in UTC. Buckets sit on a UTC grid anchored at the Unix epoch, so every run agrees on them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from weaver.core.errors import InvalidParameterError, InvalidTimepointError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000
#: One microsecond, the contract's timestamp resolution.
MICROSECOND = timedelta(microseconds=1)



_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | timedelta) -> timedelta:
    """Parse ``90m``, ``24h``, ``7d`` (or pass a timedelta through)."""
    if isinstance(text, timedelta):
        value = text
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise InvalidParameterError(f"duration {text!r} is not like '30m', '24h' or '7d'")
        try:
            value = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:  # past timedelta's ~2.7 million years (or a float's range)
            raise InvalidParameterError(f"duration {text!r} is too long; durations reach at most "
                                        f"{timedelta.max.days} days") from None
    if value <= timedelta(0):
        raise InvalidParameterError(f"duration {text!r} must be positive")
    return value


def span_start(at: datetime, span: timedelta, what: str) -> datetime:
    """The instant `span` before `at` (a retention window's start), or InvalidParameterError
    naming `what` when it lies before the year 1: a ``--now`` of 0001-01-01 or a window of
    99999999d is an input to name, not an OverflowError from deep inside a vacuum."""
    try:
        return at - span
    except OverflowError:
        raise InvalidParameterError(f"{what} ({format_duration(span)}) before {at.isoformat()} would start before the "
                                    f"year 1; give a shorter {what} or a later instant") from None


def format_duration(value: timedelta) -> str:
    """``timedelta(hours=24)`` -> ``"1d"``: the largest whole unit, the inverse of parse_duration."""
    secs = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"


def parse_timepoint(text: str | datetime) -> datetime:
    """Parse an ISO-8601 instant that carries a timezone; return it in UTC.

    A naive time is refused: a restore 'at 14:00' in an unknown zone is a silent hours-wide error.
    """
    if isinstance(text, datetime):
        dt = text
    else:
        raw = str(text).strip()
        if raw.endswith("Z") or raw.endswith("z"):
            raw = raw[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise InvalidTimepointError(f"timepoint {text!r} is not ISO-8601 (e.g. 2026-01-03T14:00:00Z)") from exc
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise InvalidTimepointError(
            f"timepoint {text!r} has no timezone; add one, e.g. '{dt.isoformat()}Z' or '+00:00'"
        )
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 lies before year 1 in UTC
        raise InvalidTimepointError(f"timepoint {text!r} lies outside the years 1..9999 once shifted to UTC; "
                                    "pick an instant inside them") from exc


def to_us(ts: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if ts.tzinfo is None:
        raise InvalidParameterError(f"{ts!r} has no timezone; pass UTC instants")
    d = ts - EPOCH
    return (d.days * 86_400 + d.seconds) * _US + d.microseconds


def from_us(us: int) -> datetime:
    """The UTC instant `us` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=int(us))


def bucket_us(bucket: timedelta) -> int:
    """A bucket length in microseconds."""
    return int(round(bucket.total_seconds() * _US))


def bucket_floor(ts: datetime, bucket: timedelta) -> datetime:
    """Start of the bucket holding `ts` on the epoch-anchored grid."""
    b = bucket_us(bucket)
    return from_us((to_us(ts) // b) * b)
