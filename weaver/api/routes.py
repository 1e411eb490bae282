"""The endpoints (DESIGN §6): woven snapshots, recoveries, predictions, partitions, health."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response

from weaver.api.cache import RecoveryCache
from weaver.api.http import (
    AUTH,
    _choose_format,
    _jsonable,
    _page_rows,
    _prediction_key,
    _rows_response,
    _timepoint,
    recovery_slot,
)
from weaver.api.schemas import (
    _ROWS_HEADERS,
    API_VERSION,
    ARROW_MEDIA,
    CURSOR_DOC,
    ROW_CURSOR_DOC,
    DATE_TIME,
    DEFAULT_PAGE,
    ERRORS,
    JSON_MEDIA,
    MAX_LIST_PAGE,
    MAX_PAGE,
    NDJSON_MEDIA,
    TIMEPOINT_EXAMPLE,
    Health,
    PartitionPage,
    PredictionPage,
    RecoveryRequest,
    WhatIfRequest,
    WovenPage,
    _rows_responses,
)
from weaver.core import storage
from weaver.core.ids import EXTENDABLE, PARTITION_PATTERN, UNPUBLISHED
from weaver.core.settings import Settings
from weaver.pipeline import gate_weaves
from weaver.log import Lineage
from weaver.recover import RecoveryResult, recover, resolve, woven_snapshot
from weaver.weave import read_woven_catalog
from weaver.whatif import plan_whatif, read_advice, whatif_weave

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["meta"])
def healthz(request: Request) -> Health:
    """Liveness (no authentication, no lake access)."""
    return Health(status="ok", version=API_VERSION, auth="bearer" if request.app.state.settings.api_token else "disabled")

@router.get("/v1/woven-snapshots", dependencies=AUTH, tags=["woven"], response_class=Response,
         responses=_rows_responses(WovenPage))
def woven_snapshots(
    request: Request,
    partition_id: str = Query(..., pattern=PARTITION_PATTERN, max_length=80,
                              description="Real partition id or woven child id `<P>~<weave8>~L|R`."),
    timepoint: str = Query(..., max_length=64, json_schema_extra=DATE_TIME, description="ISO-8601 instant with a timezone; the woven "
                           "snapshot with the latest timepoint <= it is returned.",
                           examples=[TIMEPOINT_EXAMPLE]),
    confidence_threshold: float | None = Query(None, ge=0.0, le=1.0),
    weave_id: str | None = Query(None, pattern=r"^[0-9a-f]{8,16}$", description="Restrict to one weave."),
    as_of_version: int | None = Query(None, ge=0, description="Transaction time: the woven tier as it stood at "
                                      "this Delta version of woven_snapshots."),
    as_of: str | None = Query(None, max_length=64, json_schema_extra=DATE_TIME,
                              description="Transaction time: the woven tier as it stood at this instant "
                                          "(ISO-8601 with a timezone; the latest version committed by then). "
                                          "Ignored when as_of_version is given."),
    format: Literal["ndjson", "arrow", "json"] | None = Query(None, description="Overrides Accept."),
    cursor: str | None = Query(None, min_length=1, max_length=512, description=ROW_CURSOR_DOC),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
) -> Response:
    """Rows of one woven snapshot: as of the latest timepoint <= `timepoint` among weaves with
    confidence >= `confidence_threshold` covering the partition's key range (no tail replay)."""
    s: Settings = request.app.state.settings
    at = _timepoint(timepoint)
    c = s.confidence(confidence_threshold)
    # Both given: the version names one state exactly, so it wins (documented on the parameter).
    as_of_ts = _timepoint(as_of, "as_of") if as_of is not None and as_of_version is None else None
    target, snap, rows = woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=weave_id,
                                        as_of_version=as_of_version, as_of=as_of_ts)
    page, nxt = _page_rows(rows, cursor, min(limit, s.api_max_page_rows))
    meta = {"partition_id": target.partition_id, "weave_id": snap.weave_id,
            "prediction_id": snap.prediction_id, "source_partition_id": snap.source_partition_id,
            "split_key": snap.split_key, "timepoint": snap.timepoint.isoformat(), "as_of_seq": snap.as_of_seq,
            "confidence": snap.confidence, "status": snap.status}
    body = {**meta, "woven_partition_ids": list(snap.children)}
    return _rows_response(_choose_format(request, format, "ndjson"), page, nxt, meta, body)

@router.post("/v1/recoveries", dependencies=AUTH, tags=["recovery"], response_class=Response,
          responses={200: {"description": "`format=json` (default): the summary. `ndjson`/`arrow`: "
                                          "the recovered rows, one page, summary in X-Weaver-* headers.",
                           "headers": _ROWS_HEADERS,
                           "content": {JSON_MEDIA: {"schema": {"$ref": "#/components/schemas/RecoverySummary"}},
                                       NDJSON_MEDIA: {"schema": {"type": "string"}},
                                       ARROW_MEDIA: {"schema": {"type": "string", "format": "binary"}}}},
                     **ERRORS})
def recoveries(
    request: Request,
    body: RecoveryRequest = Body(...),
    format: Literal["json", "ndjson", "arrow"] | None = Query(None, description="Overrides Accept."),
    cursor: str | None = Query(None, min_length=1, max_length=512, description=ROW_CURSOR_DOC),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
) -> Response:
    """Recover a partition at an instant: woven snapshot + short tail when one qualifies, else
    base snapshot + replay. Same rows either way; the summary says which path served it."""
    s: Settings = request.app.state.settings
    at = _timepoint(body.timepoint)
    c = s.confidence(body.confidence_threshold)
    fmt = _choose_format(request, format, "json")
    # An unknown partition is a 404 even on a busy server: resolved before a slot is taken (the
    # lineage and catalog are memoized per Delta version, so recover() does not read them again).
    lineage = Lineage.load(s)
    resolve(s, body.partition_id, lineage=lineage, catalog=read_woven_catalog(s))

    def run() -> RecoveryResult:
        with recovery_slot(request.app):
            return recover(s, body.partition_id, at, confidence_threshold=c, mode=body.mode, lineage=lineage)

    cache: RecoveryCache = request.app.state.recovery_cache
    if body.mode == "point_in_time" and cache.budget:
        # The pages of one recovery share one result (a rollback writes its table: never cached).
        res = cache.get_or_compute(RecoveryCache.key(s, body.partition_id, at, c, body.mode), run)
    else:
        res = run()
    summary = res.summary()
    if fmt == "json" and cursor is None:
        return JSONResponse(summary)
    page, nxt = _page_rows(res.table, cursor, min(limit, s.api_max_page_rows))
    meta = {k: summary[k] for k in ("path", "source", "changes_replayed", "rows", "elapsed_ms", "weave_id",
                                    "timepoint", "recovery_id")}
    return _rows_response(fmt, page, nxt, meta, summary)

@router.get("/v1/predictions", dependencies=AUTH, tags=["predictions"], response_model=PredictionPage,
         responses=ERRORS)
def predictions(
    request: Request,
    partition_id: str | None = Query(None, pattern=PARTITION_PATTERN, max_length=80),
    run_from: str | None = Query(None, max_length=64, json_schema_extra=DATE_TIME, description="Only runs at or after (ISO-8601, tz)."),
    run_to: str | None = Query(None, max_length=64, json_schema_extra=DATE_TIME, description="Only runs at or before (ISO-8601, tz)."),
    min_probability: float = Query(0.0, ge=0.0, le=1.0),
    cursor: str | None = Query(None, min_length=1, max_length=512, description=CURSOR_DOC),
    limit: int = Query(100, ge=1, le=MAX_LIST_PAGE),
) -> dict:
    """Split predictions, ordered by (run_ts, partition_id, prediction_id).

    The cursor is the sort key of the last item, `<run_ts as %Y-%m-%dT%H:%M:%S.%fZ>|<partition_id>|<prediction_id>`.
    """

    s: Settings = request.app.state.settings
    lo = _timepoint(run_from, "run_from") if run_from is not None else None
    hi = _timepoint(run_to, "run_to") if run_to is not None else None
    if partition_id is not None:
        Lineage.load(s).get(partition_id)  # 404 for an unknown partition, not an empty page
    # Only numeric/time predicates are pushed down (see weaver.weave.files.WovenTable.scan on string_view files).
    filters: list = [("probability", ">=", min_probability)]
    if lo is not None:
        filters.append(("run_ts", ">=", pa.scalar(lo, storage.TS)))
    if hi is not None:
        filters.append(("run_ts", "<=", pa.scalar(hi, storage.TS)))
    t = storage.read(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS, filters=filters,
                     missing_ok=True)
    if partition_id is not None:
        t = t.filter(pc.equal(t.column("partition_id"), partition_id))
    rows = sorted(t.to_pylist(), key=_prediction_key)
    if cursor is not None:
        rows = [r for r in rows if _prediction_key(r) > cursor]
    page = rows[:limit]
    nxt = _prediction_key(page[-1]) if len(rows) > limit else None
    return {"items": [_jsonable(r) for r in page], "next_cursor": nxt}

@router.get("/v1/partitions", dependencies=AUTH, tags=["partitions"], response_model=PartitionPage,
         responses=ERRORS)
def partitions(
    request: Request,
    kind: Literal["all", "real", "woven"] = Query("all"),
    active_only: bool = Query(False, description="Real: not retired; woven: weave status active/confirmed."),
    cursor: str | None = Query(None, min_length=1, max_length=512, description=CURSOR_DOC),
    limit: int = Query(100, ge=1, le=MAX_LIST_PAGE),
) -> dict:
    """Real partitions (lineage) and woven children (from the woven catalog), ordered by id."""

    s: Settings = request.app.state.settings
    items: list[dict] = []
    lineage = Lineage.load(s)
    if kind in ("all", "real"):
        for p in lineage:
            if active_only and p.retired_seq is not None:
                continue
            items.append({"partition_id": p.partition_id, "kind": "real", "key_lo": p.key_lo,
                          "key_hi": p.key_hi, "parent_id": p.parent_id, "created_ts": p.created_ts,
                          "retired_ts": p.retired_ts, "active": p.retired_seq is None})
    if kind in ("all", "woven"):
        for r in read_woven_catalog(s).to_pylist():
            src = lineage.by_id.get(r["source_partition_id"])
            if src is None:
                continue
            if r["status"] in UNPUBLISHED:
                continue  # staged or quarantined: not yet (or never) published
            active = r["status"] in EXTENDABLE
            if active_only and not active:
                continue
            left, right = r["child_ids"][0], r["child_ids"][1]
            for cid, lo, hi in ((left, src.key_lo, r["split_key"]), (right, r["split_key"], src.key_hi)):
                items.append({"partition_id": cid, "kind": "woven", "key_lo": lo, "key_hi": hi,
                              "parent_id": src.partition_id, "active": active, "weave_id": r["weave_id"],
                              "confidence": r["confidence"], "status": r["status"], "split_ts": r["split_ts"]})
    items.sort(key=lambda i: i["partition_id"])
    if cursor is not None:
        items = [i for i in items if i["partition_id"] > cursor]
    page = items[:limit]
    nxt = page[-1]["partition_id"] if len(items) > limit else None
    return {"items": [_jsonable(i) for i in page], "next_cursor": nxt}


@router.post("/v1/whatif", dependencies=AUTH, tags=["whatif"], responses=ERRORS)
def whatif(request: Request, body: WhatIfRequest = Body(...)) -> dict:
    """Weave "what if `partition_id` had split at `split_key` at `at`?" into the woven tier
    (origin manual, confidence 1.0). Validated before Spark starts (4xx, nothing written); the
    weave runs in this process' Spark session; the same question again writes nothing."""
    s: Settings = request.app.state.settings
    at = _timepoint(body.at, "at")
    until = _timepoint(body.until, "until") if body.until is not None else None
    plan_whatif(s, body.partition_id, at, split_key=body.split_key, until=until, key_by=body.key_by)
    # No session: the run's size picks the engine, so a what-if under the threshold starts no JVM
    # inside the API process (weaver.weave.engine).
    r = whatif_weave(None, s, body.partition_id, at, split_key=body.split_key,
                     until=until, key_by=body.key_by, stage=True)
    if r.get("staged"):
        gate_weaves(s)  # write-audit-publish: a failed `woven` check quarantines it and answers 409
    return _jsonable(r)


@router.get("/v1/advice", dependencies=AUTH, tags=["whatif"], responses=ERRORS)
def advice(
    request: Request,
    partition_id: str | None = Query(None, pattern=PARTITION_PATTERN, max_length=80),
    run_ts: str | None = Query(None, max_length=64, json_schema_extra=DATE_TIME,
                               description="Only the advice of this prediction run (default: every run)."),
    action: Literal["pre_split", "wait", "raise_capacity"] | None = Query(None),
    as_of_version: int | None = Query(None, ge=0, description="The advice table as of this Delta version "
                                      "(transaction time: what was advised then)."),
) -> dict:
    """Proactive advice per prediction run and partition (pre_split at a key, wait, raise_capacity)
    with its expected effect and, once the window closed, its backtest against what happened."""
    s: Settings = request.app.state.settings
    rt = _timepoint(run_ts, "run_ts") if run_ts is not None else None
    if partition_id is not None:
        Lineage.load(s).get(partition_id)  # 404 for an unknown partition, not an empty list
    rows = read_advice(s, version=as_of_version).to_pylist()
    rows = [r for r in rows if (partition_id is None or r["partition_id"] == partition_id)
            and (rt is None or r["run_ts"] == rt) and (action is None or r["action"] == action)]
    return {"items": [_jsonable(r) for r in rows]}
