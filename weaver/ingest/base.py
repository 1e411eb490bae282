"""The one small interface every source adapter implements, and what crosses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional, Protocol, Sequence

from weaver.core.errors import InvalidParameterError

#: A source position: ints compared lexicographically, in the source's own order
#: (DynamoDB: write time in µs; Debezium: (commit LSN, event LSN); Delta: commit version).
Position = tuple[int, ...]


def format_position(pos: Position) -> str:
    return "/".join(str(int(p)) for p in pos)


def parse_position(text: str) -> Position:
    return tuple(int(p) for p in text.split("/"))


@dataclass(frozen=True)
class Change:
    """One normalized change, before the lake gives it a seq, a ts and a partition."""

    pos: Position
    key: str  # encoded (weaver.ingest.keys)
    op: str  # 'PUT' | 'DELETE'
    value: Optional[bytes]  # item image (weaver.ingest.values), None on DELETE
    source_ts: datetime  # the source's own commit/write time (UTC)


@dataclass(frozen=True)
class Watermark:
    """How far a source is in the lake: every source change at a position <= `pos` is in the log."""

    source: str
    batch: int  # number of batches committed for this source (the Delta app-transaction version)
    pos: Position
    watermark: str  # `pos` in the source's terms
    complete_to: datetime
    fingerprints: frozenset = frozenset()
    keys: Optional[str] = None  # "pk,sk" the source's keys were encoded from
    identity: Optional[str] = None  # `Batch.identity` of the inputs ingested so far (None: not recorded)


@dataclass
class Batch:
    """Everything one input holds, in source order, and the position range it covers."""

    source: str
    changes: list[Change]
    start: Position  # lowest position the input covers (inclusive)
    end: Position  # highest position the input covers (inclusive): the new watermark
    complete_to: datetime
    fingerprint: str  # identity of the input: a re-ingest of the same input is recognised by it
    records_read: int
    full: bool = False  # a full snapshot (DynamoDB full export): may only start a source
    notes: list[str] = field(default_factory=list)
    repeats: int = 0  # records of the input that repeat an earlier one (kept once; counted as duplicates)
    # What the input was read from, beyond the source's name (a Delta table's metadata id, a
    # DynamoDB table ARN), or None where the name says it all: two inputs of one source name with
    # different identities are two sources, and the writer refuses to continue one's watermark
    # with the other's changes.
    identity: Optional[str] = None


class Adapter(Protocol):
    """A source of changes: reads its input into one Batch, after the lake's watermark."""

    source: str  # "<kind>:<name>", the watermark's identity in the lake
    keys: list[str]  # key attributes, hash key first

    def read(self, since: Optional[Watermark], progress: Optional[Callable[[int], None]] = None) -> Batch:
        """All changes of the input (source order), with `since` telling what the lake already has."""

    def describe(self, pos: Position) -> str:
        """`pos` in the source's own terms, for messages and the watermark table."""

    def contiguous(self, watermark: Position, start: Position) -> bool:
        """Whether an input starting at `start` leaves no gap after `watermark`."""


def key_attrs(spec: str | Sequence[str]) -> list[str]:
    """Key attribute names from 'pk,sk' (hash key first, then range key)."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names or len(names) > 2:
        raise InvalidParameterError(f"--keys {spec!r}: give the hash key, optionally a range key: 'pk' or 'pk,sk'")
    return names
