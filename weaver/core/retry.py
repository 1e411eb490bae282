"""Delta optimistic-concurrency conflicts: retried with bounded backoff, else a named error.

Two writers on one table (overlapping DAG runs, a DAG run and a CLI command) can both read
version v and race to commit v + 1. Delta refuses the loser (delta-rs: ``CommitFailedError``;
delta-spark: ``io.delta.exceptions.Concurrent*``, ``ProtocolChangedException``,
``MetadataChangedException``; two creators of one table: ``DELTA_PATH_EXISTS`` / "already exists").
Every weaver write is idempotent and keyed on deterministic ids, so the loser re-plans against
the new version and commits again; after ``attempts`` tries it raises ConcurrentWriteError (409).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from weaver.core.errors import ConcurrentWriteError
from weaver.core.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Names (Java classes, Spark error classes, delta-rs messages) that mark a lost commit race.
CONFLICT_MARKERS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException", "DELTA_CONCURRENT", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED",
    "DELTA_PATH_EXISTS", "CommitFailedError", "Commit failed", "already exists", "version already exists",
)


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a Delta commit conflict (the write did not happen and may be retried)."""
    try:
        from deltalake.exceptions import CommitFailedError

        if isinstance(exc, CommitFailedError):
            return True
    except ImportError:  # pragma: no cover - deltalake is a pinned dependency
        pass
    text = f"{type(exc).__name__}: {exc}"
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            text += " " + java.getClass().getName()
        except Exception:  # noqa: BLE001 - a dead gateway must not hide the original error
            pass
    return any(m in text for m in CONFLICT_MARKERS)


def retry_commit(fn: Callable[[], T], *, what: str, attempts: int | None = None, base_s: float = 0.2,
                 cap_s: float = 5.0) -> T:
    """Run `fn` (one whole read-plan-commit, so a retry re-plans on the new version); retry a
    commit conflict up to `attempts` times with jittered exponential backoff, then raise
    ConcurrentWriteError naming `what`. Any other error passes through untouched."""
    attempts = Settings.commit_retries if attempts is None else attempts
    for i in range(attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by is_conflict, re-raised otherwise
            if not is_conflict(exc):
                raise
            if i == attempts:
                raise ConcurrentWriteError(
                    f"{what}: another writer kept committing to the same Delta table ({attempts + 1} tries; "
                    f"last: {type(exc).__name__}). Nothing half-written is visible; rerun the command."
                ) from exc
            delay = min(cap_s, base_s * 2 ** i) * (0.5 + random.random())
            log.warning("%s: commit conflict (%s), retry %d/%d in %.2fs", what, type(exc).__name__, i + 1,
                        attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
