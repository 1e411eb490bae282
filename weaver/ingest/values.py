"""Item images: DynamoDB attribute-value JSON as the one value encoding of ingested changes.

`value` in the change log is the item image as UTF-8 JSON of DynamoDB attribute values
(``{"attr": {"S": "..."}, "n": {"N": "12.5"}, "b": {"B": "<base64>"}}``), keys sorted, no
whitespace. DynamoDB items are kept as exported; Postgres rows and Delta rows are mapped with
:func:`to_dynamodb` (numbers as decimal text, so no float rounding; instants as ISO-8601 text).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from weaver.ingest.errors import MalformedInputError

_SCALAR_TAGS = ("S", "N", "B", "BOOL", "NULL")


def from_dynamodb(av: Any, *, where: str = "") -> Any:
    """A Python value from one DynamoDB attribute value (N -> Decimal, B -> bytes)."""
    if not isinstance(av, dict) or len(av) != 1:
        raise MalformedInputError(f"{where}: {av!r} is not a DynamoDB attribute value like {{\"S\": \"text\"}}")
    (tag, v), = av.items()
    try:
        if tag == "S":
            return str(v)
        if tag == "N":
            return Decimal(str(v))
        if tag == "B":
            return base64.b64decode(v, validate=True)
        if tag == "BOOL":
            return bool(v)
        if tag == "NULL":
            return None
        if tag == "L":
            return [from_dynamodb(x, where=where) for x in v]
        if tag == "M":
            return {k: from_dynamodb(x, where=where) for k, x in v.items()}
        if tag == "SS":
            return [str(x) for x in v]
        if tag == "NS":
            return [Decimal(str(x)) for x in v]
        if tag == "BS":
            return [base64.b64decode(x, validate=True) for x in v]
    except (ValueError, ArithmeticError, TypeError) as exc:
        raise MalformedInputError(f"{where}: attribute value {av!r} is not valid for type {tag}: {exc}") from exc
    raise MalformedInputError(f"{where}: unknown DynamoDB attribute type {tag!r}")


def to_dynamodb(v: Any) -> dict:
    """The DynamoDB attribute value of a Python (Postgres / Delta) value."""
    if v is None:
        return {"NULL": True}
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, (int, Decimal)):
        return {"N": str(v)}
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return {"S": repr(v)}  # DynamoDB numbers are finite: keep the reading, not a number
        return {"N": repr(v)}
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"B": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, datetime):
        return {"S": (v.astimezone(timezone.utc) if v.tzinfo else v).isoformat()}
    if isinstance(v, (date, time)):
        return {"S": v.isoformat()}
    if isinstance(v, timedelta):
        return {"N": str(v.total_seconds())}
    if isinstance(v, uuid.UUID):
        return {"S": str(v)}
    if isinstance(v, dict):
        return {"M": {str(k): to_dynamodb(x) for k, x in v.items()}}
    if isinstance(v, (list, tuple)):
        return {"L": [to_dynamodb(x) for x in v]}
    return {"S": str(v)}


def encode_item(item: dict) -> bytes:
    """The stated binary encoding of an item image (canonical UTF-8 JSON of attribute values)."""
    return json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_item(value: bytes) -> dict:
    """Inverse of :func:`encode_item`."""
    return json.loads(value.decode("utf-8"))


def encode_row(row: dict) -> bytes:
    """A plain row (column -> Python value) as an item image."""
    return encode_item({k: to_dynamodb(v) for k, v in row.items()})
