"""Where a predicted split would cut a partition's key range (DESIGN §5). Pure and deterministic.

- size split: the key at the median of cumulative bytes of the partition's current live items;
- throughput split: the key that balances recent writes (per key counts) between the two sides.

Both choose among the candidate keys the one whose left side (keys ``< k``) is closest to half
of the total weight, ties going to the smaller key, and keep both children non-empty: the key is
clamped into ``(first live key, last live key]`` so each side holds at least one live item.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def balanced_key(keys: Sequence[str], weights: Sequence[float]) -> str | None:
    """The key k among sorted distinct `keys` (index >= 1) minimising |weight(< k) - weight(>= k)|."""
    n = len(keys)
    if n < 2:
        return None
    w = np.asarray(weights, dtype=float)
    total = float(w.sum())
    left = np.concatenate([[0.0], np.cumsum(w)[:-1]])  # weight strictly left of keys[i]
    imbalance = np.abs(2.0 * left[1:] - total)  # candidates i = 1 .. n-1
    i = int(np.argmin(imbalance)) + 1  # argmin takes the first (smallest key) on ties
    return str(keys[i])


def size_split_key(live_keys: Sequence[str], item_bytes: Sequence[int]) -> str | None:
    """Size split: the key at the median of cumulative bytes (keys sorted ascending)."""
    return balanced_key(live_keys, item_bytes)


def throughput_split_key(write_keys: Sequence[str], live_keys: Sequence[str]) -> str | None:
    """Throughput split: the key balancing recent writes, clamped so both children keep live items.

    `write_keys` holds one entry per recent write (duplicates count); `live_keys` the partition's
    live keys, sorted. Falls back to None when fewer than two live keys exist.
    """
    if len(live_keys) < 2 or len(write_keys) == 0:
        return None
    uniq, counts = np.unique(np.asarray(list(write_keys), dtype=object), return_counts=True)
    k = balanced_key(list(uniq), counts) if len(uniq) >= 2 else str(uniq[0])
    lo, hi = str(live_keys[1]), str(live_keys[-1])
    # One hot key alone gives no cut inside the written keys; clamp into the live interior.
    return min(max(k, lo), hi)


def in_range(key: str | None, key_lo: str, key_hi: str | None) -> bool:
    """True when a split key lies strictly inside (key_lo, key_hi): both children non-empty ranges."""
    if key is None:
        return False
    return key > key_lo and (key_hi is None or key < key_hi)
