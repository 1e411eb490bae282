"""Item images: DynamoDB attribute-value JSON as the one value encoding of ingested changes.

`value` in the change log is the item image as UTF-8 JSON of DynamoDB attribute values
(``{"attr": {"S": "..."}, "n": {"N": "12.5"}, "b": {"B": "<base64>"}}``), keys sorted, no
whitespace. DynamoDB items are kept as exported; Postgres rows and Delta rows are mapped with
:func:`to_dynamodb` (numbers as decimal text, so no float rounding; instants as ISO-8601 text).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from weaver.ingest.errors import MalformedInputError

#: DynamoDB's number: decimal text of at most 38 significant digits, zero or of magnitude in
#: [1E-130, 1E+126). Exports write it canonically; anything else was not written by DynamoDB.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_DIGITS = 38
_NUMBER_EXP = (-130, 125)  # adjusted exponent range
_MAX_DEPTH = 32  # DynamoDB nests L and M at most 32 levels deep
_SETS = {"SS": "S", "NS": "N", "BS": "B"}


def check_item(item: Any, *, where: str, what: str) -> None:
    """Refuse (MalformedInputError) an item image that is not a map of valid attribute values.

    Images are stored as exported (:func:`encode_item`), so a value whose content does not match its
    tag (``{"S": 5}``, ``{"N": "abc"}``, an unknown tag) would reach the change log and every reader
    after it; it is refused where it is read instead, naming the attribute.
    """
    if not isinstance(item, dict):
        raise MalformedInputError(f"{where}: {what} is {_short(item)}, not a map of DynamoDB attribute values")
    for name, av in item.items():
        check_value(av, where=where, path=f"{what}.{name}")


def check_value(av: Any, *, where: str, path: str = "", depth: int = 0) -> None:
    """Refuse (MalformedInputError) `av` unless it is one DynamoDB attribute value whose content has
    its tag's type: S text; N a DynamoDB number; B base64 text; BOOL a boolean; NULL true; L a list and
    M a map of attribute values; SS / NS / BS non-empty lists of S / N / B contents."""
    at = f"{where}: attribute {path}" if path else where
    if not isinstance(av, dict) or len(av) != 1:
        raise MalformedInputError(f"{at}: {_short(av)} is not a DynamoDB attribute value like {{\"S\": \"text\"}}")
    (tag, v), = av.items()
    if tag in ("S", "N", "B"):
        problem = _scalar_problem(tag, v)
    elif tag == "BOOL":
        problem = None if isinstance(v, bool) else "is not true or false"
    elif tag == "NULL":
        problem = None if v is True else "must be true"
    elif tag in ("L", "M"):
        if depth >= _MAX_DEPTH:
            raise MalformedInputError(f"{at}: nested deeper than DynamoDB's {_MAX_DEPTH} levels")
        if tag == "L" and isinstance(v, list):
            for i, x in enumerate(v):
                check_value(x, where=where, path=f"{path}[{i}]", depth=depth + 1)
            return
        if tag == "M" and isinstance(v, dict):
            for k, x in v.items():
                check_value(x, where=where, path=f"{path}.{k}" if path else str(k), depth=depth + 1)
            return
        problem = "is not a list of attribute values" if tag == "L" else "is not a map of attribute values"
    elif tag in _SETS:
        if not isinstance(v, list) or not v:
            problem = "is not a non-empty list (DynamoDB sets are never empty)"
        else:
            problem = next((f"element {i}: {_short(x)} {p}" for i, x in enumerate(v)
                            if (p := _scalar_problem(_SETS[tag], x))), None)
    else:
        raise MalformedInputError(f"{at}: unknown DynamoDB attribute type {_short(tag)} in {_short(av)}; "
                                  "types are S, N, B, BOOL, NULL, L, M, SS, NS, BS")
    if problem:
        raise MalformedInputError(f"{at}: {{{tag!r}: {_short(v)}}} is not a valid {tag} value: {problem}")


def _scalar_problem(tag: str, v: Any) -> str | None:
    """Why `v` is not the content of an S, N or B value (None: it is)."""
    if not isinstance(v, str):
        return f"is {type(v).__name__}, not text"
    if tag == "N":
        if not _NUMBER.fullmatch(v):
            return "is not decimal text such as \"12.5\" or \"-1E3\""
        if len(v) <= _NUMBER_DIGITS and "e" not in v and "E" not in v:
            return None  # at most 38 characters, no exponent: within every bound (most numbers end here)
        try:
            d = Decimal(v)
            significant = len("".join(map(str, d.as_tuple().digits)).strip("0"))
            in_range = not d or _NUMBER_EXP[0] <= d.adjusted() <= _NUMBER_EXP[1]  # zero has no magnitude
        except ArithmeticError:  # an exponent past what Decimal holds
            significant, in_range = 0, False
        if significant > _NUMBER_DIGITS or not in_range:
            return (f"is outside DynamoDB's numbers (at most {_NUMBER_DIGITS} significant digits, "
                    "magnitude from 1E-130 to below 1E+126)")
    if tag == "B":
        try:
            base64.b64decode(v, validate=True)
        except ValueError as exc:
            return f"is not base64 ({exc})"
    return None


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def from_dynamodb(av: Any, *, where: str = "", path: str = "") -> Any:
    """A Python value from one DynamoDB attribute value (N -> Decimal, B -> bytes), checked first
    (:func:`check_value`): a malformed value raises MalformedInputError naming `where` and `path`."""
    check_value(av, where=where, path=path)
    return _python(av)


def checked_python(av: dict) -> Any:
    """The Python value of an attribute value :func:`check_value` (or :func:`check_item`) already
    accepted, without checking it again."""
    return _python(av)


def _python(av: dict) -> Any:
    (tag, v), = av.items()
    if tag == "S":
        return v
    if tag == "N":
        return Decimal(v)
    if tag == "B":
        return base64.b64decode(v, validate=True)
    if tag == "BOOL":
        return v
    if tag == "NULL":
        return None
    if tag == "L":
        return [_python(x) for x in v]
    if tag == "M":
        return {k: _python(x) for k, x in v.items()}
    if tag == "SS":
        return list(v)
    if tag == "NS":
        return [Decimal(x) for x in v]
    return [base64.b64decode(x, validate=True) for x in v]  # BS


def json_line(raw: bytes, where: str, **kwargs: Any) -> Any:
    """One JSON value from the bytes of an input line (or file); `kwargs` go to ``json.loads``.

    Anything unreadable - bytes that are not UTF-8, malformed JSON, an integer literal past
    Python's 4,300-digit limit, nesting past the recursion limit - is a MalformedInputError naming
    `where`, never a traceback.
    """
    try:
        return json.loads(raw.decode("utf-8"), **kwargs)
    except UnicodeDecodeError as exc:
        raise MalformedInputError(f"{where}: bytes that are not UTF-8 (at byte {exc.start + 1})") from exc
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
        raise MalformedInputError(f"{where}: malformed JSON ({exc.msg} at {at})") from exc
    except (ValueError, RecursionError) as exc:  # ValueError: an integer literal of more than 4300 digits
        reason = str(exc).split(";")[0]  # not Python's advice to raise its limit
        raise MalformedInputError(f"{where}: JSON that cannot be read ({reason})") from exc


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
