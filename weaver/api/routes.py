"""The endpoints (DESIGN §6): woven snapshots, recoveries, predictions, partitions, health."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

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
    pinned_cursor,
    read_cursor,
    recovery_slot,
    request_digest,
    token_problem,
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
    MAX_ROW_CURSOR,
    NDJSON_MEDIA,
    TIMEPOINT_EXAMPLE,
    TOO_MANY,
    WOVEN_HEADERS,
    Health,
    PartitionPage,
    PredictionPage,
    RecoveryRequest,
    WhatIfRequest,
    WovenPage,
    _rows_responses,
)
from weaver.core import storage
from weaver.core.deltafiles import delta_files
from weaver.core.errors import (
    CorruptTableError,
    InvalidParameterError,
    InvalidTimepointError,
    NoDataError,
    TableNotFoundError,
    UnknownWeaveError,
)
from weaver.core.ids import EXTENDABLE, PARTITION_PATTERN, UNPUBLISHED
from weaver.core.settings import Settings
from weaver.core.time import to_us
from weaver.pipeline import gate_weaves
from weaver.log import Lineage
from weaver.recover import (
    RecoveryResult,
    Target,
    WovenSnapshot,
    recover,
    resolve,
    woven_snapshot,
)
from weaver.weave import WovenTable, find_weave, read_woven_catalog
from weaver.weave.catalog import open_woven_as_of
from weaver.whatif import plan_whatif, read_advice, whatif_weave

_LOG = logging.getLogger("weaver.api")

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["meta"])
def healthz(request: Request) -> Health:
    """Liveness (no authentication, no lake access)."""
    return Health(status="ok", version=API_VERSION,
                  auth="disabled" if token_problem(request.app.state.settings.api_token) else "bearer")


_HEX_ID = re.compile(r"[0-9a-f]{1,64}")


class _WovenPin(NamedTuple):
    """What served a woven-snapshot walk's first page: the rows of (`weave_id`, `timepoint`) in
    woven_snapshots at Delta `version`. A version's rows never change, so every page reads the same
    snapshot; `digest` is the request's (:func:`weaver.api.http.request_digest`)."""

    version: int
    weave_id: str
    tp_us: int
    digest: str

    def encode(self) -> str:
        # Weaver's weave ids are hex and go as they are; any other catalog string goes as 'x' + its hex.
        wid = self.weave_id if _HEX_ID.fullmatch(self.weave_id) else "x" + self.weave_id.encode().hex()
        return f"w{self.version}.{wid}.{self.tp_us}.{self.digest}"

    @classmethod
    def decode(cls, pin: str, digest: str) -> "_WovenPin":
        m = re.fullmatch(r"w([0-9]{1,19})\.(x?)([0-9a-f]{1,128})\.(-?[0-9]{1,20})\.([0-9a-f]{12})", pin)
        if m is None or m.group(5) != digest:
            raise InvalidParameterError("this cursor belongs to another request (endpoint, partition_id, timepoint, "
                                        "confidence_threshold, weave_id, as_of_version or as_of differ): pass the "
                                        "first page's parameters with it, or start again without a cursor")
        wid = m.group(3)
        if m.group(2):
            try:
                wid = bytes.fromhex(wid).decode()
            except ValueError:  # odd length, or not UTF-8
                raise InvalidParameterError("this cursor is not one this server gave; start again without a "
                                            "cursor") from None
        return cls(int(m.group(1)), wid, int(m.group(4)), digest)


def _woven_request(s: Settings, partition_id: str, at: datetime, weave_id: str | None
                   ) -> tuple[Lineage, pa.Table, Target, str | None]:
    """The checks :func:`weaver.recover.woven_snapshot` makes before it reads the tier, in its
    order (unknown partition, a child before its split, unknown weave): lineage, woven catalog,
    target and full weave id. Both reads are memoized per Delta version."""
    lineage, catalog = Lineage.load(s), read_woven_catalog(s)
    target = resolve(s, partition_id, lineage=lineage, catalog=catalog)
    target.check_exists_at(at)
    return lineage, catalog, target, find_weave(catalog, weave_id)["weave_id"] if weave_id is not None else None


def _woven_now(s: Settings, partition_id: str, at: datetime, c: float, weave_id: str | None
               ) -> tuple[Target, WovenSnapshot, pa.Table, int]:
    """:func:`weaver.recover.woven_snapshot` on the current tier, plus the woven_snapshots version
    the rows were read at (the lookup and the read share one file index, so they read one version)."""
    return woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=weave_id, with_version=True)


def _woven_first(s: Settings, partition_id: str, at: datetime, c: float, weave_id: str | None,
                 as_of_version: int | None, as_of: datetime | None) -> tuple[Target, WovenSnapshot, pa.Table, int]:
    """A walk's first page: the woven snapshot serving the request and the version it was read at."""
    if as_of_version is None and as_of is None:
        return _woven_now(s, partition_id, at, c, weave_id)
    if as_of is not None:
        _woven_request(s, partition_id, at, weave_id)  # the request's own errors first, as woven_snapshot
        if not storage.is_table(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)):
            woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=weave_id, as_of=as_of)  # raises
        # The version committed by then, named once: a later commit cannot change what the pages read.
        as_of_version = open_woven_as_of(s, timestamp=as_of).version()
    return woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=weave_id,
                          as_of_version=as_of_version, with_version=True)


def _woven_pinned(s: Settings, partition_id: str, at: datetime, c: float, pin: _WovenPin
                  ) -> tuple[Target, WovenSnapshot, pa.Table, int]:
    """The rows of the snapshot `pin` names, read at its version: from the current tier while it is
    still that version, else by time travel to it. Once that version or its files are gone (log
    cleanup, vacuum after the weave expired), the walk cannot go on: NoDataError, never other rows."""
    def same(found) -> bool:
        return found[1].weave_id == pin.weave_id and to_us(found[1].timepoint) == pin.tp_us

    now = WovenTable.open(s)
    if now is not None and now.table.version == pin.version:
        try:
            found = _woven_now(s, partition_id, at, c, pin.weave_id)
            if found[3] == pin.version and same(found):
                return found
        except (NoDataError, UnknownWeaveError):
            pass  # expired since (no longer served from the current tier): time travel decides
    try:
        found = woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=pin.weave_id,
                               as_of_version=pin.version, with_version=True)
    except InvalidTimepointError:
        raise
    except (NoDataError, UnknownWeaveError, InvalidParameterError, CorruptTableError, TableNotFoundError) as exc:
        _LOG.info("pinned woven snapshot %s@%s (version %s) unreadable: %s", pin.weave_id, pin.tp_us, pin.version, exc)
        found = None
    if found is None or not same(found):
        raise NoDataError(f"the woven snapshot this cursor walks (weave {pin.weave_id}, woven_snapshots version "
                          f"{pin.version}) can no longer be read: its version or files were cleaned up (log "
                          "retention, vacuum of an expired weave) since the first page; start again without a "
                          "cursor")
    return found


@router.get("/v1/woven-snapshots", dependencies=AUTH, tags=["woven"], response_class=Response,
         responses=_rows_responses(WovenPage, WOVEN_HEADERS))
def woven_snapshots(
    request: Request,
    partition_id: str = Query(..., pattern=PARTITION_PATTERN, max_length=80,
                              description="Real partition id or woven child id `<P>~<weave8>~L|R`."),
    timepoint: str = Query(..., max_length=64, json_schema_extra=DATE_TIME, description="RFC 3339 instant with a "
                           "timezone; the woven snapshot with the latest timepoint <= it is returned.",
                           examples=[TIMEPOINT_EXAMPLE]),
    confidence_threshold: float | None = Query(None, ge=0.0, le=1.0),
    weave_id: str | None = Query(None, pattern=r"^[0-9a-f]{8,16}$", description="Restrict to one weave."),
    as_of_version: int | None = Query(None, ge=0, description="Transaction time: the woven tier as it stood at "
                                      "this Delta version of woven_snapshots."),
    as_of: str | None = Query(None, max_length=64, json_schema_extra=DATE_TIME,
                              description="Transaction time: the woven tier as it stood at this instant "
                                          "(RFC 3339 with a timezone; the latest version committed by then). "
                                          "Not together with as_of_version."),
    format: Literal["ndjson", "arrow", "json"] | None = Query(None, description="Overrides Accept."),
    cursor: str | None = Query(None, max_length=MAX_ROW_CURSOR, description=ROW_CURSOR_DOC),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
) -> Response:
    """Rows of one woven snapshot: as of the latest timepoint <= `timepoint` among weaves with
    confidence >= `confidence_threshold` covering the partition's key range (no tail replay).
    The pages of one walk read the snapshot and version that served its first page."""
    s: Settings = request.app.state.settings
    at = _timepoint(timepoint)
    c = s.confidence(confidence_threshold)
    as_of_ts = _timepoint(as_of, "as_of") if as_of is not None else None
    if as_of_ts is not None and as_of_version is not None:
        # As `weaver query` / `weaver recover`: two transaction times, one of which would be ignored
        # (after the partition and weave checks, in woven_snapshot's order).
        _woven_request(s, partition_id, at, weave_id)
        raise InvalidParameterError("give as_of_version or as_of, not both")
    digest = request_digest("woven", partition_id, at.isoformat(), c, weave_id, as_of_version,
                            as_of_ts.isoformat() if as_of_ts else None)
    cur = read_cursor(cursor)
    if cur is not None and cur.pin is not None:
        target, snap, rows, version = _woven_pinned(s, partition_id, at, c, _WovenPin.decode(cur.pin, digest))
    else:
        target, snap, rows, version = _woven_first(s, partition_id, at, c, weave_id, as_of_version, as_of_ts)
    page, last = _page_rows(rows, cur.after if cur else None, min(limit, s.api_max_page_rows))
    pin = _WovenPin(version, snap.weave_id, to_us(snap.timepoint), digest).encode()
    meta = {"partition_id": target.partition_id, "weave_id": snap.weave_id,
            "prediction_id": snap.prediction_id, "source_partition_id": snap.source_partition_id,
            "split_key": snap.split_key, "timepoint": snap.timepoint.isoformat(), "as_of_seq": snap.as_of_seq,
            "confidence": snap.confidence, "status": snap.status, "woven_version": version}
    body = {**meta, "woven_partition_ids": list(snap.children)}
    return _rows_response(_choose_format(request, format, "ndjson"), page,
                          None if last is None else pinned_cursor(pin, last), meta, body)


#: A recovery walk's pin when its instant is complete (the change log holds a later change): no
#: change can still arrive at or before it, so its state is final.
_COMPLETE = "c"


def _log_state(s: Settings, at: datetime) -> str:
    """What a recovery at `at` depends on in the change log, for its pages' pin: `_COMPLETE` when
    the log already holds a change after `at` (seq grows with ts, DESIGN §4.5: later changes come
    after it), else the log's Delta version (a commit may still add changes at or before `at`).

    From the process's kept handle (about a millisecond): the per-file `max.ts` statistics, which
    writers keep to the millisecond, hence the millisecond to spare; a file without one is ignored,
    which can only make an instant look incomplete."""
    files = delta_files(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG, missing_ok=True)
    if files is None:
        return "v-1"
    if "api:max_ts" not in files.memo:
        files.memo["api:max_ts"] = max((t for t in files.column("max.ts") if t is not None), default=None)
    top = files.memo["api:max_ts"]
    return _COMPLETE if top is not None and at + timedelta(milliseconds=1) < top else f"v{files.version}"


def _recovery_pin(log_state: str, digest: str) -> str:
    return f"r{log_state}.{digest}"


def _read_recovery_pin(pin: str, digest: str) -> str:
    """The change-log state a recovery cursor pinned (refused when it belongs to another request)."""
    m = re.fullmatch(r"r(c|v-?[0-9]{1,19})\.([0-9a-f]{12})", pin)
    if m is None or m.group(2) != digest:
        raise InvalidParameterError("this cursor belongs to another request (endpoint, partition_id, timepoint, "
                                    "confidence_threshold or mode differ): send the first page's body with it, or "
                                    "start again without a cursor")
    return m.group(1)


@router.post("/v1/recoveries", dependencies=AUTH, tags=["recovery"], response_class=Response,
          responses={200: {"description": "`format=json` (default): the summary, whose `next_cursor` starts the "
                                          "walk of the rows; given a `cursor`, the summary and that page's rows "
                                          "(`items`). `ndjson`/`arrow`: the recovered rows, one page, summary in "
                                          "X-Weaver-* headers.",
                           "headers": _ROWS_HEADERS,
                           "content": {JSON_MEDIA: {"schema": {"$ref": "#/components/schemas/RecoverySummary"}},
                                       NDJSON_MEDIA: {"schema": {"type": "string"}},
                                       ARROW_MEDIA: {"schema": {"type": "string", "format": "binary"}}}},
                     **ERRORS, **TOO_MANY})
def recoveries(
    request: Request,
    body: RecoveryRequest = Body(...),
    format: Literal["json", "ndjson", "arrow"] | None = Query(None, description="Overrides Accept."),
    cursor: str | None = Query(None, max_length=MAX_ROW_CURSOR, description=ROW_CURSOR_DOC),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
) -> Response:
    """Recover a partition at an instant: woven snapshot + short tail when one qualifies, else
    base snapshot + replay. Same rows either way; the summary says which path served it. The
    pages of one walk read one state of the change log at the instant."""
    s: Settings = request.app.state.settings
    at = _timepoint(body.timepoint)
    c = s.confidence(body.confidence_threshold)
    fmt = _choose_format(request, format, "json")
    digest = request_digest("recovery", body.partition_id, at.isoformat(), c, body.mode)
    cur = read_cursor(cursor)
    pinned = _read_recovery_pin(cur.pin, digest) if cur is not None and cur.pin is not None else None
    # Read before the recovery: a commit landing during it then shows as a change on a later page.
    log_state = pinned if pinned is not None else _log_state(s, at)
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
    if pinned is not None and pinned != _COMPLETE and _log_state(s, at) != pinned:
        # Read after the recovery: unchanged since the first page means this page read that state.
        raise NoDataError(f"the change log has had commits since this walk's first page and {at.isoformat()} is "
                          "not before its last change, so the state at it may have changed (an earlier page may "
                          "not match this one); start again without a cursor")
    pin = _recovery_pin(log_state, digest)
    summary = res.summary()
    if fmt == "json" and cur is None:
        nxt = pinned_cursor(pin, None) if res.rows else None
        return JSONResponse({**summary, "next_cursor": nxt}, headers={"X-Next-Cursor": nxt} if nxt else None)
    page, last = _page_rows(res.table, cur.after if cur else None, min(limit, s.api_max_page_rows))
    meta = {k: summary[k] for k in ("path", "source", "changes_replayed", "rows", "elapsed_ms", "weave_id",
                                    "timepoint", "recovery_id")}
    return _rows_response(fmt, page, None if last is None else pinned_cursor(pin, last), meta, summary, "items")

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
