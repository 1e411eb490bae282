"""HTTP plumbing shared by the routes: auth, strict query parameters, paging, formats, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timedelta, timezone
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

_LOG = logging.getLogger("weaver.api")


#: Printable ASCII but '%' (and space): left as is in a header value; the rest is percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def header_value(value: str) -> str:
    """`value` percent-encoded (RFC 3986, UTF-8) for an HTTP header, which carries Latin-1 only:
    printable ASCII other than '%' and space is unchanged, so most keys and ids read as they are."""
    return quote(value, safe=_HEADER_SAFE)


#: A pinned cursor starts with '%' and a character that is not a hex digit: :func:`header_value`
#: encodes every '%' of a key, so no plain (key) cursor the server gives can start so.
PIN_PREFIX = "%~"
#: The pin itself: what served a walk's first page, in a form each endpoint defines (no '~').
_PIN = re.compile(r"[0-9a-z.\-]{1,200}\Z")


@dataclass(frozen=True)
class Cursor:
    """Where a row walk stands: the rows with key > `after` (None: from the first row on). `pin`
    names what served the walk's first page (None: a plain key, read from the current state)."""

    after: str | None
    pin: str | None = None


def read_cursor(raw: str | None) -> Cursor | None:
    """The `cursor` parameter: a pinned cursor ``%~<pin>[~<key>]`` as the server gives it, or any
    other string as a plain key (an exclusive lower bound, "" included).

    Both arrive percent-encoded, as X-Next-Cursor / next_cursor give them (:func:`header_value`);
    the key is percent-decoded here. A pinned cursor without a key starts at the first row.
    """
    if raw is None:
        return None
    if not raw.startswith(PIN_PREFIX):
        return Cursor(unquote(raw))
    pin, sep, key = raw[len(PIN_PREFIX):].partition("~")
    if not _PIN.match(pin):
        raise InvalidParameterError(f"cursor {raw[:80]!r} starts with {PIN_PREFIX!r} but is not one this server "
                                    "gave; pass X-Next-Cursor / next_cursor as received (a key starting with '%' "
                                    "is passed as '%25...')")
    return Cursor(unquote(key) if sep else None, pin)


def pinned_cursor(pin: str, after: str | None) -> str:
    """The cursor of the rows with key > `after` (None: every row) of the state `pin` names.

    Never empty, whatever the key (an empty key gives ``%~<pin>~``), and header-safe as it is."""
    return PIN_PREFIX + pin + ("" if after is None else "~" + header_value(after))


def request_digest(*parts: object) -> str:
    """A short digest of a request's identity, carried in its cursors: a cursor passed with other
    parameters than the page that gave it is refused instead of serving another request's rows."""
    return hashlib.sha1("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:12]


def _page_rows(table: pa.Table, after: str | None, limit: int) -> tuple[pa.Table, str | None]:
    """The `limit` rows (sorted by key) with key > `after` (every row when None), and the page's
    last key when more rows follow (None on the last page; "" is a key like any other)."""
    if after is not None and table.num_rows:
        table = table.filter(pc.greater(table.column("key"), after))
    page = table.slice(0, limit)  # callers cap limit at settings.api_max_page_rows
    last = page.column("key")[-1].as_py() if table.num_rows > limit else None
    return page, last


#: RFC 3339 date-time (section 5.6): 'T' and 'Z' in either case, a fraction of at least one digit,
#: an offset 'Z' or +-hh:mm; ASCII digits only, nothing before or after.
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})?")


def _timepoint(value: str | None, name: str = "timepoint") -> datetime:
    """An RFC 3339 date-time (with its offset), in UTC; anything else is an InvalidTimepointError.

    Exactly RFC 3339: no other ISO-8601 form (week dates, basic format, minutes without seconds,
    '+0000'), no surrounding whitespace or control character, since a parameter read loosely here
    would be read differently by the client's own RFC 3339 parser. Instants Python cannot represent
    (year 0000, or beyond year 9999 once shifted to UTC) are clamped to the earliest/latest
    representable instant: they lie before/after any data, and a well-formed timepoint should get
    an answer, not an error. A leap second reads as :59.999999.
    """
    if value is None:
        raise InvalidParameterError(f"{name} is required (RFC 3339 with a timezone, e.g. {TIMEPOINT_EXAMPLE})")
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise InvalidTimepointError(f"{name} {value[:80]!r} is not an RFC 3339 date-time; give e.g. "
                                    f"{TIMEPOINT_EXAMPLE} or 2026-01-02T12:00:00.5+01:00")
    if m.group(8) is None:
        raise InvalidTimepointError(f"{name} {value!r} has no timezone; add one, e.g. '{value}Z' or '{value}+00:00'")
    year, month, day, hour, minute, sec = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or ".")[1:7].ljust(6, "0")
    off = m.group(8)
    off_h, off_m = (0, 0) if off in ("Z", "z") else (int(off[1:3]), int(off[4:6]))
    if not (1 <= month <= 12 and hour <= 23 and minute <= 59 and sec <= 60 and off_h <= 23 and off_m <= 59):
        raise InvalidTimepointError(f"{name} {value!r} has a field out of range (month 01-12, hour 00-23, "
                                    "minute 00-59, second 00-60, offset up to 23:59)")
    if sec == 60:
        sec, frac = 59, "999999"
    if year == 0:
        return datetime.min.replace(tzinfo=timezone.utc)
    sign = -1 if off.startswith("-") else 1
    try:
        local = datetime(year, month, day, hour, minute, sec, int(frac),
                         tzinfo=timezone(sign * timedelta(hours=off_h, minutes=off_m)))
    except ValueError as exc:  # a day the month does not have
        raise InvalidTimepointError(f"{name} {value!r} is not a calendar date: {exc}") from None
    try:
        return local.astimezone(timezone.utc)
    except OverflowError:  # outside years 1..9999 once shifted to UTC
        return (datetime.min if year == 1 else datetime.max).replace(tzinfo=timezone.utc)


_FORMAT_OF_MEDIA = {ARROW_MEDIA: "arrow", NDJSON_MEDIA: "ndjson", JSON_MEDIA: "json"}


def _choose_format(request: Request, fmt: str | None, default: str) -> str:
    """`format=` when given; else the `Accept` header's most preferred media type this API serves
    (RFC 9110: the highest `q`, then the header's order; `q=0` means "not this"; `*/*` and
    `application/*` mean the endpoint's default); else the default."""
    if fmt is not None:
        return fmt
    ranked = []
    for i, part in enumerate(request.headers.get("accept", "").split(",")):
        media, *params = [x.strip() for x in part.split(";")]
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0  # a malformed weight: that range is not counted
        media = media.lower()
        name = _FORMAT_OF_MEDIA.get(media) or (default if media in ("*/*", "application/*") else None)
        if name is not None and 0.0 < q <= 1.0:
            ranked.append((-q, i, name))
    return min(ranked)[2] if ranked else default


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


def _rows_response(fmt: str, page: pa.Table, nxt: str | None, meta: dict[str, Any], json_body: dict | None,
                   rows_field: str = "rows") -> Response:
    """One page of rows in `fmt`; `nxt` is the next page's cursor (None on the last page), the same
    in X-Next-Cursor and in JSON; JSON carries the rows under `rows_field`."""
    headers = {"X-Row-Count": str(page.num_rows)}
    if nxt is not None:
        headers["X-Next-Cursor"] = nxt
    for k, v in meta.items():
        if v is not None:
            headers["X-Weaver-" + k.replace("_", "-").title()] = header_value(str(v))
    if fmt == "json":
        return JSONResponse({**(json_body or {}), rows_field: _rows_json(page), "next_cursor": nxt}, headers=headers)
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


def token_problem(token: str | None) -> str | None:
    """Why `token` (WEAVER_API_TOKEN) cannot authenticate anyone, or None when it can.

    HTTP strips the whitespace around a header value, so a token of only whitespace, or with
    whitespace at either end, can never be sent back: such a server would refuse every request.
    """
    if token is None or token == "":
        return "no API token configured: set WEAVER_API_TOKEN"
    if not token.strip():
        return "WEAVER_API_TOKEN is only whitespace, which no client can send: set a real token"
    if token != token.strip():
        return ("WEAVER_API_TOKEN starts or ends with whitespace, which HTTP strips from the Authorization "
                "header (no client could send it): remove it")
    return None


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
    """The app's own bearer token (Airflow does not authenticate plugin apps, so the app does)."""
    token = request.app.state.settings.api_token
    problem = token_problem(token)
    if problem is not None:
        if request.app.state.insecure and not token:
            return
        raise _Refused(503, "ApiTokenNotConfigured",
                       f"this server cannot authenticate: {problem} where it runs "
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


async def single_valued_body(request: Request) -> None:
    """Refuse a JSON body that gives a member twice (``{"confidence_threshold": 0.9,
    "confidence_threshold": 0.1}``), whose earlier value a JSON parser drops silently. A body that
    is not JSON is left to the body's validation (422)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    raw = await request.body()
    if not raw:
        return

    def once(pairs: list[tuple[str, Any]]) -> dict:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise InvalidParameterError(f"the request body gives {k!r} more than once; give each member once")
            seen.add(k)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=once)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return


AUTH = [Depends(require_token), Depends(known_params_only), Depends(single_valued_body)]


def _server_roots(settings) -> list[tuple[str, str]]:
    """(server location, what a client is told instead): the woven root, then the lake root, each
    as configured and resolved, longest first - a message names `<lake>/changelog`, not where the
    server keeps it."""
    out: dict[str, str] = {}
    for value, name in ((settings.woven_root, "<woven>"), (settings.lake, "<lake>")):
        if not value:
            continue
        value = str(value)
        forms = {value.rstrip("/")}
        if "://" not in value:
            forms.add(str(Path(value).resolve()))
        for f in forms:
            if len(f) > 1:
                out.setdefault(f, name)
    return sorted(out.items(), key=lambda kv: -len(kv[0]))


def redact(message: str, roots: list[tuple[str, str]]) -> str:
    """`message` with the server's lake and woven roots replaced by `<lake>` / `<woven>` (the full
    message goes to the server's log): an error body never shows the server's file layout."""
    for path, name in roots:
        message = message.replace(path, name)
    return message


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON ``{"error", "message"}`` with its status (WeaverError: its own)."""
    app.state.recovery_slots = threading.BoundedSemaphore(app.state.settings.api_max_recoveries)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.name, "message": exc.message}, status_code=exc.status, headers=headers)

    roots = _server_roots(app.state.settings)

    @app.exception_handler(WeaverError)
    async def _weaver_error(request: Request, exc: WeaverError) -> JSONResponse:
        # 429 says when to come back (DESIGN §7: past the configured concurrency).
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequestsError) else None
        if exc.http_status >= 500:
            _LOG.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return JSONResponse({"error": type(exc).__name__, "message": redact(str(exc), roots)},
                            status_code=exc.http_status, headers=headers)

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
