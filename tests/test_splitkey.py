"""Split keys on hand-made states: byte medians and write-balancing keys, worked out by hand."""

from __future__ import annotations

from hypothesis import given, strategies as st

from weaver.predict import balanced_key, in_range, size_split_key, throughput_split_key


def test_size_key_is_byte_median():
    # bytes: a=10, b=10, c=10, d=70 -> left of d is 30 vs 70, left of c is 20 vs 80: d balances best
    assert size_split_key(["a", "b", "c", "d"], [10, 10, 10, 70]) == "d"
    # equal items: the middle one
    assert size_split_key(["a", "b", "c", "d"], [5, 5, 5, 5]) == "c"
    # one huge item first: the cut must still leave it alone on the left
    assert size_split_key(["a", "b", "c"], [1000, 1, 1]) == "b"


def test_ties_go_to_the_smaller_key():
    # left of b: 1 vs 2 (|2-3|=1); left of c: 2 vs 1 (|4-3|=1) -> b
    assert balanced_key(["a", "b", "c"], [1, 1, 1]) == "b"


def test_too_few_keys():
    assert size_split_key([], []) is None
    assert size_split_key(["a"], [10]) is None
    assert throughput_split_key(["a", "a"], ["a"]) is None
    assert throughput_split_key([], ["a", "b"]) is None


def test_throughput_key_balances_writes():
    live = ["k1", "k2", "k3", "k4", "k5", "k6"]
    # 6 writes on k2, 1 on k5, 5 on k6: left of k5 = 6 vs 6
    writes = ["k2"] * 6 + ["k5"] + ["k6"] * 5
    assert throughput_split_key(writes, live) == "k5"


def test_throughput_key_clamped_inside_live_keys():
    live = ["k1", "k2", "k3"]
    # every write on the first live key: any cut at or below it would leave the left child empty
    assert throughput_split_key(["k1"] * 9, live) == "k2"
    # writes only on the last key: the cut is the last key (right child keeps it)
    assert throughput_split_key(["k3"] * 9, live) == "k3"


def test_deterministic_and_order_free():
    live = [f"k{i:02d}" for i in range(30)]
    w = [live[i % 7] for i in range(50)]
    assert throughput_split_key(w, live) == throughput_split_key(list(reversed(w)), live)


def test_in_range():
    assert in_range("m", "", None)
    assert not in_range("", "", None)  # equal to key_lo: the left child would be empty
    assert in_range("b", "a", "c") and not in_range("c", "a", "c") and not in_range(None, "a", "c")


@given(st.dictionaries(st.text(alphabet="abcdefgh", min_size=1, max_size=4), st.integers(1, 1000), min_size=2))
def test_size_key_splits_into_nonempty_sides_closest_to_half(items):
    keys = sorted(items)
    w = [items[k] for k in keys]
    k = size_split_key(keys, w)
    left = sum(items[x] for x in keys if x < k)
    right = sum(items[x] for x in keys if x >= k)
    assert left > 0 and right > 0
    total = left + right
    # brute force: no other cut is more balanced
    best = min(abs(2 * sum(w[:i]) - total) for i in range(1, len(keys)))
    assert abs(left - right) == best
