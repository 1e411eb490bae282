"""Debezium change events from Postgres (JSON lines), with or without the {"schema", "payload"} wrapper.

Envelope: ``before``, ``after``, ``op`` (r snapshot read, c create, u update, d delete,
t truncate), ``ts_ms``, ``source`` (``lsn``, ``txId``, ``ts_ms`` = commit time, ``ts_us`` where
given, ``snapshot``, ``sequence`` = ``["<commit LSN>", "<event LSN>"]``, ``db``/``schema``/``table``).

Mapping: r/c/u -> PUT of ``after`` (an update whose ``before`` holds another key also DELETEs that
key); d -> DELETE of ``before``'s key; t -> DELETE of every key
the lake holds at that point. Source order = position (commit LSN from ``sequence``, event LSN):
commit order, which is the order Postgres made the changes visible (event LSNs alone interleave
across concurrent transactions). ts = the commit time (``source.ts_us``, else ``source.ts_ms``),
carried forward by the writer where commit times step back along commit LSNs. A Kafka tombstone
(a ``null`` line) is read and skipped. LSNs are sparse, so a gap between inputs cannot be seen:
an input is accepted whenever it reaches past the watermark; batches must end on a transaction
boundary (the whole snapshot, the whole transaction).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Optional

from weaver.core.errors import InvalidParameterError
from weaver.ingest.base import Batch, Change, Position, Watermark, key_attrs
from weaver.ingest.errors import MalformedInputError, MissingKeyAttributeError, UnknownEventError, UnorderableKeyError
from weaver.ingest.keys import encode_key
from weaver.ingest.values import encode_row

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
OPS = {"r": "PUT", "c": "PUT", "u": "PUT", "d": "DELETE", "t": "TRUNCATE"}


_HEX32 = re.compile(r"[0-9A-Fa-f]{1,8}")


def parse_lsn(v) -> int:
    """An LSN as an int, from Debezium's integer or Postgres' ``16/B374D848`` text.

    A Postgres LSN is an unsigned 64-bit WAL position: anything else (a negative number, a
    boolean, a float, a signed or over-long hex half) is a ValueError, so a corrupt event
    cannot sort before or after the real ones.
    """
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"not an LSN: {v!r}")
    if isinstance(v, str):
        if "/" in v:
            hi, _, lo = v.partition("/")
            if not (_HEX32.fullmatch(hi) and _HEX32.fullmatch(lo)):
                raise ValueError(f"not an LSN: {v!r}")
            return (int(hi, 16) << 32) + int(lo, 16)
        if not v.isdigit() or not v.isascii():
            raise ValueError(f"not an LSN: {v!r}")
        v = int(v)
    if not 0 <= v < 2 ** 64:
        raise ValueError(f"LSN {v} is outside [0, 2^64)")
    return v


def format_lsn(v: int) -> str:
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


class DebeziumFile:
    """Adapter for one or more files of Debezium JSON events of one table."""

    kind = "debezium"

    def __init__(self, paths: str | Path | list, keys: str | list[str], name: str | None = None):
        self.paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
        for p in self.paths:
            if not p.is_file():
                raise InvalidParameterError(f"no Debezium events file at {p}")
        self.keys = key_attrs(keys)
        self.name = name
        self.source = f"{self.kind}:{name}" if name else ""
        self._events: list | None = None
        self._load()  # names the source after the events' table when no name is given

    def describe(self, pos: Position) -> str:
        return f"LSN {format_lsn(pos[1])} (commit {format_lsn(pos[0])})"

    def contiguous(self, watermark: Position, start: Position) -> bool:
        return True  # LSNs are sparse: a gap is not visible here

    def _load(self) -> list:
        if self._events is not None:
            return self._events
        events, table = [], None
        for path in self.paths:
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    ev = json.loads(line, parse_float=Decimal)
                except json.JSONDecodeError as exc:
                    raise MalformedInputError(f"{where}: malformed JSON line ({exc.msg} at column {exc.colno})") from exc
                if ev is None:
                    events.append((where, None))  # tombstone
                    continue
                if isinstance(ev, dict) and "payload" in ev and "op" not in ev:
                    ev = ev["payload"]
                if not isinstance(ev, dict) or "op" not in ev or not isinstance(ev.get("source"), dict):
                    raise MalformedInputError(f"{where}: not a Debezium change event (needs op and source)")
                src = ev["source"]
                t = ".".join(str(src.get(k)) for k in ("db", "schema", "table") if src.get(k) is not None)
                if table is None:
                    table = t
                elif t != table:
                    raise MalformedInputError(f"{where}: event of table {t!r} in a file of {table!r}; "
                                              "ingest one table per source")
                events.append((where, ev))
        if not self.source:
            self.source = f"{self.kind}:{table or 'table'}"
        self._events = events
        return events

    def read(self, since: Optional[Watermark], progress: Optional[Callable[[int], None]] = None) -> Batch:
        events = self._load()
        out: list[tuple[Position, int, int, Change]] = []
        h = hashlib.sha256()
        max_ts = None
        for i, (where, ev) in enumerate(events):
            if ev is None:
                continue
            op = ev.get("op")
            src = ev["source"]
            try:
                lsn = parse_lsn(src["lsn"])
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedInputError(f"{where}: source.lsn is missing or not an LSN") from exc
            at = f"{where} (LSN {format_lsn(lsn)})"
            if op not in OPS:
                raise UnknownEventError(f"{at}: unknown op {op!r}; Debezium ops are r, c, u, d, t")
            commit = lsn
            if src.get("sequence"):
                try:
                    seq = json.loads(src["sequence"]) if isinstance(src["sequence"], str) else src["sequence"]
                    commit = parse_lsn(seq[0]) if seq and seq[0] is not None else lsn
                except (ValueError, TypeError, IndexError) as exc:
                    raise MalformedInputError(f"{at}: source.sequence {src['sequence']!r} is not [commit LSN, LSN]") from exc
            ts = self._ts(src, at)
            max_ts = ts if max_ts is None or ts > max_ts else max_ts
            pos = (commit, lsn)
            kind = OPS[op]
            if kind == "TRUNCATE":
                ch = Change(pos, "", "TRUNCATE", None, ts)
            else:
                image = ev.get("after") if kind == "PUT" else ev.get("before")
                if not isinstance(image, dict):
                    what = "after" if kind == "PUT" else "before"
                    raise MalformedInputError(f"{at}: op {op!r} needs a {what!r} image")
                key = self._key(image, at)
                try:
                    value = encode_row(image) if kind == "PUT" else None
                except UnicodeEncodeError as exc:
                    raise MalformedInputError(f"{at}: the 'after' image holds text that is not valid Unicode "
                                              f"({exc.reason}: {exc.object[exc.start:exc.end]!r})") from exc
                ch = Change(pos, key, kind, value, ts)
                before = ev.get("before")
                if op == "u" and isinstance(before, dict) and all(a in before for a in self.keys):
                    old = self._key(before, at)
                    if old != key:  # the update moved the row to another key: the old key is gone
                        h.update(f"{pos}|{old}|DELETE|".encode())
                        out.append((pos, i, 0, Change(pos, old, "DELETE", None, ts)))
            h.update(f"{pos}|{ch.key}|{ch.op}|".encode())
            out.append((pos, i, 1, ch))
        if progress:
            progress(len(events))
        out.sort(key=lambda t: t[:3])
        if not out:
            raise MalformedInputError(f"{', '.join(map(str, self.paths))}: no change events")
        return Batch(source=self.source, changes=[c for *_, c in out], start=out[0][0], end=out[-1][0],
                     complete_to=max_ts, fingerprint="debezium:" + h.hexdigest(), records_read=len(events))

    @staticmethod
    def _ts(src: dict, at: str) -> datetime:
        try:
            if src.get("ts_us") is not None:
                return EPOCH + timedelta(microseconds=int(src["ts_us"]))
            if src.get("ts_ns") is not None:
                return EPOCH + timedelta(microseconds=int(src["ts_ns"]) // 1000)
            return EPOCH + timedelta(milliseconds=int(src["ts_ms"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: past year 9999, 1e999
            raise MalformedInputError(f"{at}: source.ts_ms (the commit time) is missing, not a number or not a "
                                      "representable instant") from exc

    def _key(self, image: dict, at: str) -> str:
        vals = []
        for a in self.keys:
            if a not in image:
                raise MissingKeyAttributeError(f"{at}: image lacks key attribute {a!r} (keys: {self.keys})")
            vals.append(image[a])
        try:
            key = encode_key(vals)
        except UnorderableKeyError as exc:
            raise UnorderableKeyError(f"{at}: {exc}") from exc
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedInputError(f"{at}: key {vals!r} is not valid Unicode ({exc.reason})") from exc
        return key
