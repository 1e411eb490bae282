"""HTTP plumbing shared by the routes: auth, strict query parameters, paging, formats, errors."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from weaver.api.schemas import ARROW_MEDIA, JSON_MEDIA, NDJSON_MEDIA, TIMEPOINT_EXAMPLE
from weaver.core.errors import InvalidParameterError, InvalidTimepointError, TooManyRequestsError, WeaverError
from weaver.core.time import parse_timepoint

_LOG = logging.getLogger("weaver.api")


#: Printable ASCII but '%' (and space): left as is in a header value; the rest is percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def header_value(value: str) -> str:
    """`value` percent-encoded (RFC 3986, UTF-8) for an HTTP header, which carries Latin-1 only:
    printable ASCII other than '%' and space is unchanged, so most keys and ids read as they are."""
    return quote(value, safe=_HEADER_SAFE)


def _page_rows(table: pa.Table, cursor: str | None, limit: int) -> tuple[pa.Table, str | None]:
    """The `limit` rows (sorted by key) with key > `cursor`, and the next cursor (the page's last key).

    A cursor is an exclusive lower bound, so any string is a valid cursor (no state on the server).
    It arrives percent-encoded, as X-Next-Cursor / next_cursor give it (:func:`header_value`), and
    is percent-decoded here; the next cursor is returned as the raw key.
    """
    if cursor is not None:
        cursor = unquote(cursor)
    if cursor is not None and table.num_rows:
        table = table.filter(pc.greater(table.column("key"), cursor))
    page = table.slice(0, limit)  # callers cap limit at settings.api_max_page_rows
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
    except (OverflowError, InvalidTimepointError) as exc:
        # parse_timepoint names an instant outside years 1..9999 in UTC (an OverflowError underneath).
        if not isinstance(exc, OverflowError) and not isinstance(exc.__cause__, OverflowError):
            raise
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
    nxt = header_value(nxt) if nxt else nxt  # the cursor form, in the header and in JSON alike
    if nxt:
        headers["X-Next-Cursor"] = nxt
    for k, v in meta.items():
        if v is not None:
            headers["X-Weaver-" + k.replace("_", "-").title()] = header_value(str(v))
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


class _Refused(Exception):
    """Authentication refused (mapped to a JSON 401/503 by the app)."""

    def __init__(self, status: int, name: str, message: str):
        super().__init__(message)
        self.status, self.name, self.message = status, name, message


# --- authentication and strict parameters (route dependencies) ------------------------------------
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer $WEAVER_API_TOKEN`")


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
    """The app's own bearer token (Airflow does not authenticate plugin apps, so the app does)."""
    token = request.app.state.settings.api_token
    if token is None:
        if request.app.state.insecure:
            return
        raise _Refused(503, "ApiTokenNotConfigured",
                       "this server has no API token; set WEAVER_API_TOKEN where it runs "
                       "(or use `weaver serve --insecure-local` on loopback)")
    if creds is None or creds.scheme.lower() != "bearer":
        raise _Refused(401, "Unauthorized", "send `Authorization: Bearer <token>` (the WEAVER_API_TOKEN)")
    if not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise _Refused(401, "Unauthorized", "the bearer token is wrong")


def known_params_only(request: Request) -> None:
    """Refuse a misspelt (`timepiont=`) or repeated query parameter, which would be ignored silently."""
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


AUTH = [Depends(require_token), Depends(known_params_only)]


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON ``{"error", "message"}`` with its status (WeaverError: its own)."""
    app.state.recovery_slots = threading.BoundedSemaphore(app.state.settings.api_max_recoveries)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.name, "message": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(WeaverError)
    async def _weaver_error(request: Request, exc: WeaverError) -> JSONResponse:
        # 429 says when to come back (DESIGN §7: past the configured concurrency).
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequestsError) else None
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=exc.http_status,
                            headers=headers)

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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug or an unreadable lake the code did not name: JSON like every other error, the
        # stack trace in the server's log only (never in the response).
        _LOG.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "InternalServerError",
                             "message": f"internal error ({type(exc).__name__}); the server's log has the details"},
                            status_code=500)


@contextmanager
def recovery_slot(app: FastAPI) -> Iterator[None]:
    """Hold one of the app's `api_max_recoveries` recovery slots, or refuse with 429 + Retry-After.

    A recovery reads snapshots and replays a tail in memory; past the configured concurrency a
    client is told to come back rather than queued (queued work would pile up memory and time out).
    """
    sem = app.state.recovery_slots
    if not sem.acquire(blocking=False):
        raise TooManyRequestsError(f"{app.state.settings.api_max_recoveries} recoveries are already running "
                                   "(WEAVER_API_MAX_RECOVERIES); retry after the Retry-After seconds")
    try:
        yield
    finally:
        sem.release()
