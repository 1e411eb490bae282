"""The query API (DESIGN §6): woven snapshots, recoveries, predictions, partitions.

One FastAPI app, built by :func:`create_app` with the settings read once. It runs standalone
(``weaver serve``, uvicorn) and inside Airflow 3's API server (``plugins/weaver_plugin.py``,
``fastapi_apps``). Airflow does not authenticate plugin apps, so the app enforces its own bearer
token in both places; with no token configured every ``/v1`` request is refused (503) unless the
app was built with ``insecure=True`` (``weaver serve --insecure-local``, loopback only).

Rows (``key``, ``value``) are paged by key: ``limit`` rows with key > ``cursor``; the next cursor
(the page's last key) is in ``X-Next-Cursor`` (and ``next_cursor`` in JSON). Formats: NDJSON (``value`` base64),
Arrow IPC stream, or a JSON page, chosen by ``format`` or the ``Accept`` header.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from datetime import datetime, timezone
from typing import Any, Iterator, Literal

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from weaver import storage
from weaver.errors import InvalidParameterError, WeaverError
from weaver.settings import Settings, check_confidence, load_settings, parse_timepoint

API_VERSION = "1.0.0"
DEFAULT_PAGE = 10_000
MAX_PAGE = 100_000
MAX_LIST_PAGE = 1_000
ARROW_MEDIA = "application/vnd.apache.arrow.stream"
NDJSON_MEDIA = "application/x-ndjson"
JSON_MEDIA = "application/json"
FORMATS = {"ndjson": NDJSON_MEDIA, "arrow": ARROW_MEDIA, "json": JSON_MEDIA}
PARTITION_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}(~[0-9a-f]{8}~[LR])?$"
TIMEPOINT_EXAMPLE = "2026-01-02T12:00:00Z"
CURSOR_DOC = ("Exclusive lower bound of the sort key: pass the previous page's X-Next-Cursor / next_cursor "
              "(omit for the first page).")
DATE_TIME = {"format": "date-time"}


# --- models (OpenAPI) ----------------------------------------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="Name of the error (a weaver.errors class, or a protocol error).")
    message: str = Field(description="What went wrong and what to do.")
    detail: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    auth: Literal["bearer", "disabled"]


class Row(BaseModel):
    key: str
    value: str | None = Field(description="The value, base64-encoded (null never occurs in a state).")


class WovenPage(BaseModel):
    partition_id: str
    weave_id: str
    prediction_id: str
    source_partition_id: str
    split_key: str
    timepoint: datetime
    as_of_seq: int
    confidence: float
    status: str
    woven_partition_ids: list[str]
    rows: list[Row]
    next_cursor: str | None


class RecoveryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition_id: str = Field(pattern=PARTITION_PATTERN, max_length=80,
                              description="A real partition id or a woven child id `<P>~<weave8>~L|R`.")
    timepoint: str = Field(max_length=64, description="ISO-8601 instant with a timezone.", json_schema_extra=DATE_TIME,
                           examples=[TIMEPOINT_EXAMPLE])
    confidence_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                               description="Woven snapshots below it are never used "
                                                           "(default: the server's setting).")
    mode: Literal["point_in_time", "rollback"] = Field(
        "point_in_time", description="`rollback` also writes the state as a new Delta table "
                                     "(`<lake>/recoveries/<recovery_id>`); sources are never modified.")


class RecoverySummary(BaseModel):
    partition_id: str
    at: datetime
    path: Literal["woven", "standard"]
    source: str
    changes_replayed: int
    rows: int
    elapsed_ms: float
    weave_id: str | None
    timepoint: datetime | None
    confidence: float | None
    mode: Literal["point_in_time", "rollback"]
    recovery_id: str | None
    output: str | None


class PredictionItem(BaseModel):
    prediction_id: str
    run_ts: datetime
    partition_id: str
    model: str
    window_start: datetime
    window_end: datetime
    probability: float
    reason: str | None
    predicted_split_ts: datetime | None
    split_ts_p10: datetime | None
    split_ts_p90: datetime | None
    split_key: str | None
    threshold: float
    skip_reason: str | None


class PredictionPage(BaseModel):
    items: list[PredictionItem]
    next_cursor: str | None


class PartitionItem(BaseModel):
    partition_id: str
    kind: Literal["real", "woven"]
    key_lo: str
    key_hi: str | None
    parent_id: str | None
    created_ts: datetime | None = None
    retired_ts: datetime | None = None
    active: bool
    weave_id: str | None = None
    confidence: float | None = None
    status: str | None = None
    split_ts: datetime | None = None


class PartitionPage(BaseModel):
    items: list[PartitionItem]
    next_cursor: str | None


def _err(desc: str) -> dict:
    return {"model": ErrorBody, "description": desc}


ERRORS = {400: _err("Malformed input (timepoint, confidence, cursor, ...)."),
          401: _err("Missing or wrong bearer token."),
          404: _err("Unknown partition or weave, or nothing to return."),
          409: _err("The lake breaks the data contract (nothing was written)."),
          422: _err("Request does not match the schema."),
          503: _err("The server has no API token configured.")}

_ROWS_HEADERS = {
    "X-Next-Cursor": {"description": "Cursor of the next page (absent on the last page).",
                      "schema": {"type": "string"}},
    "X-Row-Count": {"description": "Rows in this page.", "schema": {"type": "integer"}},
}


def _rows_responses(json_model: type[BaseModel]) -> dict:
    return {200: {"description": "Rows sorted by key, one page.", "headers": _ROWS_HEADERS, "content": {
        NDJSON_MEDIA: {"schema": {"type": "string", "description": "One JSON object {key, value(base64)} a line."}},
        ARROW_MEDIA: {"schema": {"type": "string", "format": "binary"}},
        JSON_MEDIA: {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
    }}, **ERRORS}


# --- helpers -------------------------------------------------------------------------------------
def _page_rows(table: pa.Table, cursor: str | None, limit: int) -> tuple[pa.Table, str | None]:
    """The `limit` rows (sorted by key) with key > `cursor`, and the next cursor (the page's last key).

    A cursor is an exclusive lower bound, so any string is a valid cursor (no state on the server).
    """
    if cursor is not None and table.num_rows:
        table = table.filter(pc.greater(table.column("key"), cursor))
    page = table.slice(0, limit)
    nxt = page.column("key")[-1].as_py() if table.num_rows > limit else None
    return page, nxt


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _timepoint(value: str | None, name: str = "timepoint") -> datetime:
    """An RFC 3339 / ISO-8601 instant with a timezone, in UTC (InvalidTimepointError otherwise).

    Instants Python cannot represent (year 0000, or beyond year 9999 once shifted to UTC) are
    clamped to the earliest/latest representable instant: they lie before/after any data, and a
    well-formed timepoint should get an answer, not an error. A leap second reads as :59.999999.
    """
    if value is None:
        raise InvalidParameterError(f"{name} is required (ISO-8601 with a timezone, e.g. {TIMEPOINT_EXAMPLE})")
    m = _RFC3339.match(value)
    if m:
        year, sec = int(m.group(1)), int(m.group(6))
        if year == 0:
            return datetime.min.replace(tzinfo=timezone.utc)
        frac = m.group(7) or ""
        if sec == 60:
            sec, frac = 59, ".999999"
        value = f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{sec:02d}{frac[:7]}{m.group(8)}"
    try:
        return parse_timepoint(value)
    except OverflowError:
        return (datetime.min if value.startswith("0001") else datetime.max).replace(tzinfo=timezone.utc)


def _choose_format(request: Request, fmt: str | None, default: str) -> str:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "")
    for name, media in (("arrow", ARROW_MEDIA), ("ndjson", NDJSON_MEDIA), ("json", JSON_MEDIA)):
        if media in accept:
            return name
    return default


def _rows_json(page: pa.Table) -> list[dict]:
    keys = page.column("key").to_pylist()
    vals = page.column("value").to_pylist()
    return [{"key": k, "value": None if v is None else base64.b64encode(v).decode()} for k, v in zip(keys, vals)]


def _ndjson(page: pa.Table) -> Iterator[bytes]:
    for batch in page.to_batches(max_chunksize=2048):
        t = pa.Table.from_batches([batch], schema=page.schema)
        yield ("\n".join(json.dumps(r, separators=(",", ":")) for r in _rows_json(t)) + "\n").encode() \
            if t.num_rows else b""


def _arrow(page: pa.Table, meta: dict[str, str]) -> Iterator[bytes]:
    schema = page.schema.with_metadata({k.encode(): v.encode() for k, v in meta.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        for batch in page.to_batches(max_chunksize=65_536):
            w.write_batch(batch)
    yield sink.getvalue().to_pybytes()


def _rows_response(fmt: str, page: pa.Table, nxt: str | None, meta: dict[str, Any], json_body: dict | None
                   ) -> Response:
    headers = {"X-Row-Count": str(page.num_rows)}
    if nxt:
        headers["X-Next-Cursor"] = nxt
    for k, v in meta.items():
        if v is not None:
            headers["X-Weaver-" + k.replace("_", "-").title()] = str(v)
    if fmt == "json":
        return JSONResponse({**(json_body or {}), "rows": _rows_json(page), "next_cursor": nxt}, headers=headers)
    if fmt == "arrow":
        return StreamingResponse(_arrow(page, {k: str(v) for k, v in meta.items() if v is not None}),
                                 media_type=ARROW_MEDIA, headers=headers)
    return StreamingResponse(_ndjson(page), media_type=NDJSON_MEDIA, headers=headers)


def _prediction_key(r: dict) -> str:
    # Fixed-width UTC time first, so the string order is the chronological order.
    return f"{r['run_ts'].strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{r['partition_id']}|{r['prediction_id']}"


def _jsonable(d: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}


def serve_host(settings: Settings, host: str, insecure_local: bool) -> str:
    """The interface `weaver serve` may bind: refuses to run without a token unless
    `insecure_local`, which forces loopback."""
    if insecure_local:
        return "127.0.0.1"
    if not settings.api_token:
        raise InvalidParameterError("no API token configured: set WEAVER_API_TOKEN (clients send "
                                    "`Authorization: Bearer <token>`), or run `weaver serve --insecure-local` "
                                    "for an unauthenticated server on 127.0.0.1")
    return host


# --- app -----------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, *, insecure: bool = False) -> FastAPI:
    """The API app; `settings` are read once here (load_settings() when None).

    With no ``settings.api_token``, every /v1 request gets 503 unless `insecure` (local use only).
    """
    settings = settings if settings is not None else load_settings()
    token = settings.api_token
    app = FastAPI(title="Temporal Weaver API", version=API_VERSION,
                  description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    app.state.settings = settings
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer $WEAVER_API_TOKEN`")

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            if insecure:
                return
            raise _Refused(503, "ApiTokenNotConfigured",
                           "this server has no API token; set WEAVER_API_TOKEN where it runs "
                           "(or use `weaver serve --insecure-local` on loopback)")
        if creds is None or creds.scheme.lower() != "bearer":
            raise _Refused(401, "Unauthorized", "send `Authorization: Bearer <token>` (the WEAVER_API_TOKEN)")
        if not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise _Refused(401, "Unauthorized", "the bearer token is wrong")

    def known_params_only(request: Request) -> None:
        # A misspelt (`timepiont=`) or repeated parameter would otherwise be ignored silently.
        from fastapi.dependencies.utils import get_flat_dependant

        route = request.scope.get("route")
        if route is None:
            return
        allowed = {p.alias for p in get_flat_dependant(route.dependant).query_params}
        unknown = sorted(set(request.query_params.keys()) - allowed)
        if unknown:
            raise InvalidParameterError(f"unknown query parameter(s) {unknown}; this endpoint takes {sorted(allowed)}")
        repeated = sorted({k for k in request.query_params.keys() if len(request.query_params.getlist(k)) > 1})
        if repeated:
            raise InvalidParameterError(f"query parameter(s) {repeated} given more than once; give each once")

    auth = [Depends(require_token), Depends(known_params_only)]

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.name, "message": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(WeaverError)
    async def _weaver_error(request: Request, exc: WeaverError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                for e in exc.errors()]
        msg = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errs) or "invalid request"
        return JSONResponse({"error": "RequestValidationError", "message": msg, "detail": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": "HTTPError", "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/healthz", response_model=Health, tags=["meta"])
    def healthz() -> Health:
        """Liveness (no authentication, no lake access)."""
        return Health(status="ok", version=API_VERSION, auth="bearer" if token else "disabled")

    @app.get("/v1/woven-snapshots", dependencies=auth, tags=["woven"], response_class=Response,
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
        format: Literal["ndjson", "arrow", "json"] | None = Query(None, description="Overrides Accept."),
        cursor: str | None = Query(None, min_length=1, max_length=512, description=CURSOR_DOC),
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    ) -> Response:
        """Rows of one woven snapshot: as of the latest timepoint <= `timepoint` among weaves with
        confidence >= `confidence_threshold` covering the partition's key range (no tail replay)."""
        from weaver.recovery import woven_snapshot

        s: Settings = request.app.state.settings
        at = _timepoint(timepoint)
        c = check_confidence(s.confidence_threshold if confidence_threshold is None else confidence_threshold)
        target, snap, rows = woven_snapshot(s, partition_id, at, confidence_threshold=c, weave_id=weave_id)
        page, nxt = _page_rows(rows, cursor, limit)
        meta = {"partition_id": target.partition_id, "weave_id": snap.weave_id,
                "prediction_id": snap.prediction_id, "source_partition_id": snap.source_partition_id,
                "split_key": snap.split_key, "timepoint": snap.timepoint.isoformat(), "as_of_seq": snap.as_of_seq,
                "confidence": snap.confidence, "status": snap.status}
        body = {**meta, "woven_partition_ids": list(snap.children)}
        return _rows_response(_choose_format(request, format, "ndjson"), page, nxt, meta, body)

    @app.post("/v1/recoveries", dependencies=auth, tags=["recovery"], response_class=Response,
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
        cursor: str | None = Query(None, min_length=1, max_length=512, description=CURSOR_DOC),
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    ) -> Response:
        """Recover a partition at an instant: woven snapshot + short tail when one qualifies, else
        base snapshot + replay. Same rows either way; the summary says which path served it."""
        from weaver.recovery import recover

        s: Settings = request.app.state.settings
        at = _timepoint(body.timepoint)
        c = check_confidence(s.confidence_threshold if body.confidence_threshold is None else body.confidence_threshold)
        fmt = _choose_format(request, format, "json")
        res = recover(s, body.partition_id, at, confidence_threshold=c, mode=body.mode)
        summary = res.summary()
        if fmt == "json" and cursor is None:
            return JSONResponse(summary)
        page, nxt = _page_rows(res.table, cursor, limit)
        meta = {k: summary[k] for k in ("path", "source", "changes_replayed", "rows", "elapsed_ms", "weave_id",
                                        "timepoint", "recovery_id")}
        return _rows_response(fmt, page, nxt, meta, summary)

    @app.get("/v1/predictions", dependencies=auth, tags=["predictions"], response_model=PredictionPage,
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
        from weaver.recovery import load_lineage

        s: Settings = request.app.state.settings
        lo = _timepoint(run_from, "run_from") if run_from is not None else None
        hi = _timepoint(run_to, "run_to") if run_to is not None else None
        if partition_id is not None:
            load_lineage(s).get(partition_id)  # 404 for an unknown partition, not an empty page
        # Only numeric/time predicates are pushed down (see recovery._scan on string_view files).
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

    @app.get("/v1/partitions", dependencies=auth, tags=["partitions"], response_model=PartitionPage,
             responses=ERRORS)
    def partitions(
        request: Request,
        kind: Literal["all", "real", "woven"] = Query("all"),
        active_only: bool = Query(False, description="Real: not retired; woven: weave status active/confirmed."),
        cursor: str | None = Query(None, min_length=1, max_length=512, description=CURSOR_DOC),
        limit: int = Query(100, ge=1, le=MAX_LIST_PAGE),
    ) -> dict:
        """Real partitions (lineage) and woven children (from the woven catalog), ordered by id."""
        from weaver.recovery import load_catalog, load_lineage

        s: Settings = request.app.state.settings
        items: list[dict] = []
        lineage = load_lineage(s)
        if kind in ("all", "real"):
            for p in lineage:
                if active_only and p.retired_seq is not None:
                    continue
                items.append({"partition_id": p.partition_id, "kind": "real", "key_lo": p.key_lo,
                              "key_hi": p.key_hi, "parent_id": p.parent_id, "created_ts": p.created_ts,
                              "retired_ts": p.retired_ts, "active": p.retired_seq is None})
        if kind in ("all", "woven"):
            for r in load_catalog(s).to_pylist():
                src = lineage.by_id.get(r["source_partition_id"])
                if src is None:
                    continue
                active = r["status"] in ("active", "confirmed")
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

    def openapi() -> dict:
        # Row endpoints answer several media types, so their JSON models are referenced by hand;
        # register those models (and their nested ones) as components.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            comps = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in (WovenPage, RecoverySummary):
                sch = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in sch.pop("$defs", {}).items():
                    comps.setdefault(name, sub)
                comps[model.__name__] = sch
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class _Refused(Exception):
    """Authentication refused (mapped to a JSON 401/503 by the app)."""

    def __init__(self, status: int, name: str, message: str):
        super().__init__(message)
        self.status, self.name, self.message = status, name, message


__all__ = ["create_app", "MAX_PAGE", "DEFAULT_PAGE"]
