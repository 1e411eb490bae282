"""The API's wire models and documented constants (OpenAPI components, limits, media types)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from weaver.core.ids import PARTITION_PATTERN
from weaver.recover import WovenSnapshot



API_VERSION = "1.0.0"


DEFAULT_PAGE = 10_000


MAX_PAGE = 100_000


MAX_LIST_PAGE = 1_000


ARROW_MEDIA = "application/vnd.apache.arrow.stream"


NDJSON_MEDIA = "application/x-ndjson"


JSON_MEDIA = "application/json"


FORMATS = {"ndjson": NDJSON_MEDIA, "arrow": ARROW_MEDIA, "json": JSON_MEDIA}


TIMEPOINT_EXAMPLE = "2026-01-02T12:00:00Z"


CURSOR_DOC = ("Exclusive lower bound of the sort key: pass the previous page's X-Next-Cursor / next_cursor "
              "(omit for the first page).")
ROW_CURSOR_DOC = ("The previous page's X-Next-Cursor / next_cursor, as given (omit for the first page): it pins "
                  "what served the first page, so every page of the walk reads that one state. Any other string "
                  "is a plain key, percent-encoded (UTF-8): an exclusive lower bound on the current state (\"\" "
                  "included; a key starting with '%' is passed as '%25...').")
#: Longest row cursor: a key of up to 2 KiB percent-encoded (3 characters a byte) plus its pin.
MAX_ROW_CURSOR = 8_192


DATE_TIME = {"format": "date-time"}


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


#: The woven snapshot's own fields on the wire, typed by their one source (weaver.recover.WovenSnapshot).
WOVEN_FIELDS = ("weave_id", "prediction_id", "source_partition_id", "split_key", "timepoint", "as_of_seq",
                "confidence", "status")
_WOVEN_TYPES = get_type_hints(WovenSnapshot)
WovenPage = create_model(
    "WovenPage",
    partition_id=(str, ...),
    **{name: (_WOVEN_TYPES[name], ...) for name in WOVEN_FIELDS},
    woven_partition_ids=(list[str], ...),
    woven_version=(int, Field(description="The Delta version of woven_snapshots the rows were read at (as "
                                          "X-Weaver-Woven-Version): pass it as as_of_version to read this state "
                                          "again.")),
    rows=(list[Row], ...),
    next_cursor=(str | None, Field(description="The next page's cursor (as X-Next-Cursor), pinned to this "
                                               "snapshot and version; null on the last page.")),
)


class RecoveryRequest(BaseModel):
    # strict: "0.5" (a string) or true is not a confidence; a number is (an integer too)
    model_config = ConfigDict(extra="forbid", strict=True)

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


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    partition_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="A real partition id.")
    at: str = Field(max_length=64, description="Split instant T, ISO-8601 with a timezone, within the data.",
                    json_schema_extra=DATE_TIME, examples=[TIMEPOINT_EXAMPLE])
    split_key: str | None = Field(None, max_length=1024, description="Left child holds keys < it (default: the "
                                  "size median or load-balancing key at T, see key_by).")
    until: str | None = Field(None, max_length=64, json_schema_extra=DATE_TIME,
                              description="Last timepoint (default T + the window).")
    key_by: Literal["auto", "size", "load"] = Field("auto", description="Without split_key: which key.")


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
    next_cursor: str | None = Field(description="Without `cursor`: the cursor of the first page of rows (null "
                                                "when the state is empty); with it: the next page's (null on the "
                                                "last page). As X-Next-Cursor.")
    items: list[Row] | None = Field(None, description="Given a `cursor` only: this page's rows (value base64), "
                                                      "sorted by key.")


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
TOO_MANY = {429: {**_err("`api_max_recoveries` recoveries are already running (WEAVER_API_MAX_RECOVERIES)."),
                  "headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                              "schema": {"type": "integer"}}}}}


_ROWS_HEADERS = {
    "X-Next-Cursor": {"description": "Cursor of the next page (absent on the last page): `%~<pin>~<key>`, the "
                                     "pin naming what served the first page and the page's last key "
                                     "percent-encoded (UTF-8; printable ASCII but '%' and space unchanged), as "
                                     "every X-Weaver-* value is.",
                      "schema": {"type": "string"}},
    "X-Row-Count": {"description": "Rows in this page.", "schema": {"type": "integer"}},
}


WOVEN_HEADERS = {**_ROWS_HEADERS, "X-Weaver-Woven-Version": {
    "description": "The Delta version of woven_snapshots the rows were read at: as_of_version reads it again.",
    "schema": {"type": "integer"}}}


def _rows_responses(json_model: type[BaseModel], headers: dict | None = None) -> dict:
    return {200: {"description": "Rows sorted by key, one page.", "headers": headers or _ROWS_HEADERS, "content": {
        NDJSON_MEDIA: {"schema": {"type": "string", "description": "One JSON object {key, value(base64)} a line."}},
        ARROW_MEDIA: {"schema": {"type": "string", "format": "binary"}},
        JSON_MEDIA: {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
    }}, **ERRORS}
