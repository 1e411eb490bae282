"""Completeness: a run at T may use the change log only up to its source's watermark.

An ingested source records `complete_to` with every batch: the instant up to which the lake holds
every change of that source (a DynamoDB window's end, the last commit seen in a Debezium stream,
the read time of a Delta table read to its latest version). It never moves back (a batch reporting
an earlier instant keeps the previous one), so a check that passed for T keeps passing. A run
whose data interval ends at T needs ``complete_to >= T``; otherwise silence in the log may be lag,
not quiet, and predicting from it would be predicting from missing data. The run waits, bounded by
``T + grace`` (a live run whose source is a little late), then fails naming the lag (a backfill
eleven months after the last ingest fails at once).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from weaver.ingest.base import Watermark
from weaver.ingest.errors import WatermarkBehindError
from weaver.ingest.writer import load_watermark


def check_watermark(settings, source: str, end: datetime) -> Watermark:
    """The source's watermark if the log is complete up to `end`, else WatermarkBehindError naming the lag."""
    wm = load_watermark(settings, source)
    if wm is None:
        raise WatermarkBehindError(
            f"source {source!r} was never ingested into {settings.lake}, so the change log says nothing up to "
            f"{end.isoformat()}; run `weaver ingest` for it first")
    if wm.complete_to < end:
        raise WatermarkBehindError(
            f"source {source!r} is complete only up to {wm.complete_to.isoformat()} (watermark {wm.watermark}) but "
            f"the run needs {end.isoformat()}: {_fmt(end - wm.complete_to)} behind; ingest the newer input, or rerun "
            "this interval once the source caught up")
    return wm


def poke_watermark(settings, source: str, end: datetime, grace: timedelta,
                   now: Optional[datetime] = None) -> bool:
    """One poke: True when complete up to `end`; False while behind but before `end + grace`;
    WatermarkBehindError (naming the lag) once `end + grace` has passed."""
    now = now or datetime.now(timezone.utc)
    try:
        check_watermark(settings, source, end)
        return True
    except WatermarkBehindError as exc:
        if now >= end + grace:
            raise WatermarkBehindError(f"{exc} (waited until {(end + grace).isoformat()}, the run's bound)") from None
        return False


def wait_for_watermark(settings, source: str, end: datetime, *, grace: timedelta, poke: timedelta,
                       sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poke until complete up to `end` (returns a summary) or the bound passes (raises)."""
    pokes = 0
    t0 = time.monotonic()
    while True:
        pokes += 1
        if poke_watermark(settings, source, end, grace):
            wm = load_watermark(settings, source)
            return {"source": source, "end": end.isoformat(), "complete_to": wm.complete_to.isoformat(),
                    "watermark": wm.watermark, "pokes": pokes, "waited_s": round(time.monotonic() - t0, 3)}
        sleep(poke.total_seconds())


def _fmt(d: timedelta) -> str:
    secs = int(d.total_seconds())
    days, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{h}h"] if h else []
    parts += [f"{m}m"] if m else []
    parts += [f"{s}s"] if s or not parts else []
    return " ".join(parts)
