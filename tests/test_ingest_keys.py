"""Key encoding: byte order of the encoded string == order of the typed key (hypothesis).

The oracle is Python's own comparison of the typed values (str code points, Decimal, bytes,
tuples lexicographically); the encoding's order is compared as UTF-8 bytes, as Arrow and Delta do.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from weaver.ingest.errors import UnorderableKeyError
from weaver.ingest.keys import boundaries_from_values, decode_key, encode_key, equal_ranges

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
numbers = st.one_of(
    st.integers(min_value=-10**40, max_value=10**40),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e120"), max_value=Decimal("1e120"),
                places=None),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
blobs = st.binary(max_size=12)


def b(s: str) -> bytes:
    return s.encode("utf-8")


def dec(v) -> Decimal:
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def cmp(x, y) -> int:
    return (x > y) - (x < y)


@given(texts, texts)
def test_strings_keep_order(x, y):
    assert cmp(b(encode_key([x])), b(encode_key([y]))) == cmp(x, y)


@given(numbers, numbers)
@hsettings(max_examples=300)
def test_numbers_keep_order(x, y):
    assert cmp(b(encode_key([x])), b(encode_key([y]))) == cmp(dec(x), dec(y))


@given(blobs, blobs)
def test_binary_keeps_order(x, y):
    assert cmp(b(encode_key([x])), b(encode_key([y]))) == cmp(x, y)


@given(st.tuples(texts, numbers), st.tuples(texts, numbers))
@hsettings(max_examples=300)
def test_composite_hash_range_keys_keep_tuple_order(x, y):
    # Shared hash keys are common in real tables: force some equal hash keys.
    for a, c in ((x, y), ((x[0], x[1]), (x[0], y[1]))):
        want = cmp((a[0], dec(a[1])), (c[0], dec(c[1])))
        assert cmp(b(encode_key(list(a))), b(encode_key(list(c)))) == want


@given(st.tuples(blobs, texts), st.tuples(blobs, texts))
def test_composite_binary_string_keys_keep_tuple_order(x, y):
    assert cmp(b(encode_key(list(x))), b(encode_key(list(y)))) == cmp(x, y)


@given(st.tuples(texts, numbers))
def test_roundtrip(x):
    got = decode_key(encode_key(list(x)))
    assert got[0] == x[0] and got[1] == dec(x[1])


def test_documented_examples():
    # The examples of docs/ingestion.md, character for character.
    assert encode_key(["user#42"]) == "Suser#42\x00"
    assert encode_key([42]) == "N2500242."
    assert encode_key([-42]) == "N0499757~"
    assert encode_key([0]) == "N1"
    assert encode_key([Decimal("0.05")]) == "N249995."
    assert encode_key([b"\x01\xff"]) == "B01ff."
    assert encode_key(["user#42", 7]) == "Suser#42\x00N25001" + "7."
    assert encode_key([datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)]) == "T2026-01-02T03:04:05.000006Z"
    assert encode_key([-1]) < encode_key([0]) < encode_key([Decimal("0.5")]) < encode_key([1]) < encode_key([10])


@pytest.mark.parametrize("bad", [None, True, float("nan"), float("inf"), [1], {"a": 1}, Decimal("1e6000"),
                                 datetime(2026, 1, 1)])
def test_unorderable_values_are_refused_by_name(bad):
    with pytest.raises(UnorderableKeyError):
        encode_key([bad])


def test_equal_ranges_and_boundaries_file():
    bounds = equal_ranges(4)
    assert len(bounds) == 3 and bounds == sorted(bounds) and all(x.startswith("S") for x in bounds)
    assert boundaries_from_values(["g", {"S": "p"}]) == ["Sg\x00", "Sp\x00"]
    assert boundaries_from_values([["a", 5]]) == [encode_key(["a", 5])]
