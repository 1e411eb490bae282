"""Order-preserving key encoding: a table's key attributes as one string whose byte order is the key order.

The contract's `key` is a string compared byte-wise (Arrow, Delta statistics, partition ranges
``[key_lo, key_hi)``). A source's key is typed (DynamoDB S/N/B, Postgres int/text/bytea/...,
composite hash + range keys). :func:`encode_key` maps a tuple of typed values to a string such
that ``encode_key(a) < encode_key(b)`` (as UTF-8 bytes, which is also Python's code point
order) exactly when ``a < b`` component by component. Each component is self-delimiting and no
component's encoding is a prefix of another's, so concatenating them orders tuples
lexicographically (hash key first, then range key).

Components (tag letter, then body; see docs/ingestion.md for examples):

* binary ``B``: lowercase hex of the bytes, then ``.`` (``.`` sorts below every hex digit, so a
  shorter prefix sorts first).
* number ``N``: ``N0`` negative, ``N1`` zero, ``N2`` positive. With the value written as
  ``0.d1d2...dn x 10^e`` (d1 != 0, trailing zeros dropped): positive = ``N2`` + four-digit
  ``e + 5000`` + digits + ``.``; negative = ``N0`` + four-digit ``9999 - (e + 5000)`` + each digit
  complemented (``9 - d``) + ``~`` (``~`` sorts above every digit, so a longer magnitude sorts
  first among negatives). Exponents outside [-5000, 4999] are refused.
* string ``S``: the text with U+0000 escaped as U+0000 U+00FF, then U+0000 (the terminator
  sorts below every character; the escape's second character sorts above every tag letter).
* instant ``T``: UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width, so text order is time order).

Tags sort ``B < N < S < T``; a key attribute has one type per table, so cross-type order only
has to be deterministic. Anything else (null, float NaN/inf, lists, maps, booleans) has no key
order here and raises :class:`UnorderableKeyError`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Sequence

from weaver.core.errors import InvalidParameterError
from weaver.ingest.errors import UnorderableKeyError
from weaver.ingest.values import from_dynamodb

_EXP_BIAS = 5000
_EXP_MAX = 9999


def encode_key(values: Sequence[Any]) -> str:
    """The order-preserving string of a key tuple (hash key first, then range key)."""
    if not values:
        raise UnorderableKeyError("a key needs at least one attribute")
    return "".join(encode_component(v) for v in values)


def encode_component(v: Any) -> str:
    """One self-delimiting key component (see the module docstring for the layout)."""
    if isinstance(v, bool) or v is None:
        raise UnorderableKeyError(f"key value {v!r} ({type(v).__name__}) has no key order; keys are strings, numbers, binary or instants")
    if isinstance(v, str):
        return "S" + v.replace("\x00", "\x00\xff") + "\x00"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "B" + bytes(v).hex() + "."
    if isinstance(v, uuid.UUID):
        return "S" + str(v) + "\x00"  # fixed-width lowercase hex: text order is Postgres' uuid order
    if isinstance(v, datetime):
        if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:
            raise UnorderableKeyError(f"key instant {v.isoformat()} has no timezone; its order is ambiguous")
        return "T" + v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, date):
        return "T" + v.strftime("%Y-%m-%d") + "T00:00:00.000000Z"
    if isinstance(v, (int, float, Decimal)):
        return _number(v)
    raise UnorderableKeyError(f"key value {v!r} of type {type(v).__name__} has no key order in the encoding")


def _number(v: int | float | Decimal) -> str:
    try:
        d = v if isinstance(v, Decimal) else Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    except (InvalidOperation, ValueError) as exc:
        raise UnorderableKeyError(f"key number {v!r} is not a finite decimal") from exc
    if not d.is_finite():
        raise UnorderableKeyError(f"key number {v!r} is not finite (NaN and infinities have no key order)")
    sign, digits, _ = d.as_tuple()
    ds = list(digits)
    while ds and ds[-1] == 0:
        ds.pop()
    if not ds:
        return "N1"
    e = d.adjusted() + 1  # value = 0.d1..dn * 10^e with d1 != 0
    biased = e + _EXP_BIAS
    if not 0 <= biased <= _EXP_MAX:
        raise UnorderableKeyError(f"key number {v!r} is outside the encodable range (|exponent| <= {_EXP_BIAS})")
    body = "".join(str(x) for x in ds)
    if sign == 0:
        return f"N2{biased:04d}{body}."
    comp = "".join(str(9 - x) for x in ds)
    return f"N0{_EXP_MAX - biased:04d}{comp}~"


def decode_key(text: str) -> tuple:
    """Inverse of :func:`encode_key` (numbers come back as Decimal, instants as aware datetimes)."""
    out: list[Any] = []
    i = 0
    while i < len(text):
        tag = text[i]
        if tag == "S":
            j = i + 1
            buf = []
            while True:
                c = text[j]
                if c == "\x00":
                    if j + 1 < len(text) and text[j + 1] == "\xff":
                        buf.append("\x00")
                        j += 2
                        continue
                    break
                buf.append(c)
                j += 1
            out.append("".join(buf))
            i = j + 1
        elif tag == "B":
            j = text.index(".", i)
            out.append(bytes.fromhex(text[i + 1:j]))
            i = j + 1
        elif tag == "T":
            out.append(datetime.strptime(text[i + 1:i + 28], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc))
            i += 28
        elif tag == "N":
            s = text[i + 1]
            if s == "1":
                out.append(Decimal(0))
                i += 2
                continue
            e = int(text[i + 2:i + 6])
            end = text.index("." if s == "2" else "~", i + 6)
            body = text[i + 6:end]
            if s == "0":
                e = _EXP_MAX - e
                body = "".join(str(9 - int(c)) for c in body)
            # Built from its digits: exact at any precision (no Decimal context rounding).
            out.append(Decimal((0 if s == "2" else 1, tuple(int(c) for c in body), e - _EXP_BIAS - len(body))))
            i = end + 1
        else:
            raise UnorderableKeyError(f"{text!r} is not an encoded key (unknown tag {tag!r} at {i})")
    return tuple(out)


#: Printable ASCII, the range "equal ranges" divide (first character after the first tag).
_LO, _HI = 0x20, 0x7F


def equal_ranges(n: int, tag: str = "S") -> list[str]:
    """N-1 boundaries cutting the encoded key space into N equal ranges.

    The space divided is the first character after the first component's type tag, over
    printable ASCII; keys sharing a long common prefix land in one range, for which a
    boundaries file (:func:`boundaries_from_values`) is the better choice.
    """
    if not 1 <= n <= _HI - _LO:
        raise InvalidParameterError(f"--partitions must be in [1, {_HI - _LO}]")
    if tag not in "BNST" or len(tag) != 1:
        raise InvalidParameterError(f"unknown key type tag {tag!r}; expected B, N, S or T")
    width = _HI - _LO
    return [tag + chr(_LO + (i * width) // n) for i in range(1, n)]


def boundaries_from_values(values: Iterable[Any]) -> list[str]:
    """Encoded boundaries from a list of key values (a scalar per single-attribute key, a list for
    composite keys; DynamoDB typed values ``{"S": ...}`` / ``{"N": ...}`` / ``{"B": ...}`` too)."""
    out = []
    for v in values:
        comps = v if isinstance(v, list) else [v]
        comps = [from_dynamodb(c, where="boundaries file") if isinstance(c, dict) else
                 (Decimal(repr(c)) if isinstance(c, float) else c) for c in comps]
        out.append(encode_key(comps))
    if out != sorted(set(out)):
        raise InvalidParameterError("boundaries must be strictly increasing and distinct")
    return out
