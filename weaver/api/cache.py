"""Recovered tables kept for paging: the next page of a recovery reuses the first page's result.

A client walks a large recovery page by page (`cursor`); without this each page would recover the
whole partition again, so reading n rows in pages of k would cost n/k recoveries. The key is the
request (partition, instant, confidence, mode) plus the Delta versions of every table a recovery's
answer depends on (:data:`KEY_TABLES`): a new commit to any of them makes a new key, so one page
holds rows of one state of the lake and a summary never names a source that is no longer the one
chosen (a new base snapshot in `snapshot_catalog`, a new woven timepoint in `woven_snapshots`). That
the pages of a walk hold rows of ONE state is the cursor's job (it pins the change log's state,
`weaver.api.http`), not this cache's: a later page after a commit is a new entry. Entries are evicted least
recently used, past a byte budget (`api_recovery_cache_mb`); a table larger than the budget is
served but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Callable

from weaver.core import storage
from weaver.core.deltafiles import delta_files
from weaver.core.settings import Settings
from weaver.recover import RecoveryResult


#: The tables whose commits can change a recovery's answer (rows, path, source, tail): the change
#: log and lineage (the tail and the ranges), the woven catalog and woven snapshots (which weave and
#: timepoint serve it), the snapshot catalog (which base snapshot serves the standard path). The
#: `snapshots` data table is left out: it is read only through its catalog (a snapshot's rows are
#: written before its catalog row and never change under a catalogued id), so a commit to it alone
#: changes no answer.
KEY_TABLES = (storage.CHANGELOG, storage.PARTITIONS, storage.WOVEN_CATALOG, storage.WOVEN_SNAPSHOTS,
              storage.SNAPSHOT_CATALOG)


class RecoveryCache:
    """A thread-safe LRU of :class:`RecoveryResult` bounded by the bytes of their tables."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple, RecoveryResult] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(settings: Settings, partition_id: str, at: datetime, confidence: float, mode: str) -> tuple:
        """The request plus the versions of the tables that decide its answer (read from the
        process's kept Delta handles: a local table's version costs no log replay)."""
        versions = []
        for name in KEY_TABLES:
            snap = delta_files(storage.uri_for(settings, name), name, missing_ok=True)
            versions.append(None if snap is None else snap.version)
        return (partition_id, at.isoformat(), confidence, mode, tuple(versions))

    def get_or_compute(self, key: tuple, compute: Callable[[], RecoveryResult]) -> RecoveryResult:
        """The cached result for `key`, or `compute()`'s, kept if it fits the budget.

        `compute` runs outside the lock: two first requests for the same key may both compute
        (the same rows); the second result replaces the first.
        """
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        res = compute()
        size = res.table.nbytes
        if size > self.budget:
            return res
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old.table.nbytes
            self._entries[key] = res
            self.used += size
            while self.used > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self.used -= evicted.table.nbytes
        return res

    def __len__(self) -> int:
        return len(self._entries)
