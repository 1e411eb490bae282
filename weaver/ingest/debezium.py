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

from weaver.core.errors import InvalidParameterError, WeaverError
from weaver.ingest.base import Batch, Change, Position, Watermark, key_attrs
from weaver.ingest.errors import MalformedInputError, MissingKeyAttributeError, UnknownEventError, UnorderableKeyError
from weaver.ingest.keys import encode_key
from weaver.ingest.values import encode_row, json_line

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
        self.server: Optional[str] = None  # source.name: the connector's server name, the batch's identity
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
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise MalformedInputError(f"{path}: not readable ({exc})") from exc
            for n, line in enumerate(raw.splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                ev = json_line(line, where, parse_float=Decimal)
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
                self._check_server(src.get("name"), where)
                events.append((where, ev))
        if not self.source:
            self.source = f"{self.kind}:{table or 'table'}"
        self._events = events
        return events

    def _check_server(self, name, where: str) -> None:
        """Keep `source.name` as the input's identity; events of two servers in one input are refused.

        Debezium's `source.name` is the connector's topic prefix, which must be unique across
        connectors: two Postgres servers may hold tables of one db.schema.table name, but their
        LSNs are positions in different WALs, so one server's events must not continue the other's
        watermark. Events without it (hand-made, older tools) say nothing either way.
        """
        if not isinstance(name, str) or not name:
            return
        if self.server is None:
            self.server = name
        elif name != self.server:
            raise MalformedInputError(f"{where}: event of server {name!r} (source.name) in a file of server "
                                      f"{self.server!r}; ingest one server's table per source")

    def read(self, since: Optional[Watermark], progress: Optional[Callable[[int], None]] = None) -> Batch:
        events = self._load()
        out: list[tuple[Position, int, int, Change]] = []
        h, legacy = hashlib.sha256(), hashlib.sha256()
        max_ts = None
        seen: dict[tuple[Position, str], tuple[str, list[Change]]] = {}
        repeats = 0
        for i, (where, ev) in enumerate(events):
            if ev is None:
                continue
            pos, changes = self._event(ev, where)
            for ch in changes:  # every event, repeats too: the input's fingerprint is what was read
                named = f"{pos}|{ch.key}|{ch.op}|".encode()
                h.update(named)
                legacy.update(named)
                # The image too: the same positions delivered again with other images are another
                # input (the writer then compares them change by change), not a re-ingest.
                h.update(b"-" if ch.value is None else hashlib.sha256(ch.value).digest())
            ts = changes[-1].source_ts
            max_ts = ts if max_ts is None or ts > max_ts else max_ts
            # One position holds several changes only in a snapshot or a multi-row insert (one WAL
            # record), and then of different keys: (position, key) names one change.
            slot = (pos, changes[-1].key)
            if slot in seen:
                first, earlier = seen[slot]
                if earlier != changes:
                    raise MalformedInputError(f"{where} (LSN {format_lsn(pos[1])}): a different change of key "
                                              f"{changes[-1].key!r} at the same position as {first}; the input "
                                              "holds two versions of one event")
                repeats += 1  # the same event again (an at-least-once redelivery): keep the first
                continue
            seen[slot] = (where, changes)
            out.extend((pos, i, rank, ch) for rank, ch in enumerate(changes))
        if progress:
            progress(len(events))
        out.sort(key=lambda t: t[:3])
        if not out:
            raise MalformedInputError(f"{', '.join(map(str, self.paths))}: no change events")
        notes = [f"{repeats} repeated events skipped (the same change at the same position as an earlier line, "
                 "e.g. an at-least-once redelivery)"] if repeats else []
        fingerprint = "debezium:" + h.hexdigest()
        if since is not None and fingerprint not in since.fingerprints \
                and "debezium:" + legacy.hexdigest() in since.fingerprints:
            # Committed before fingerprints covered the images: recognised by positions, keys and ops.
            fingerprint = "debezium:" + legacy.hexdigest()
        return Batch(source=self.source, changes=[c for *_, c in out], start=out[0][0], end=out[-1][0],
                     complete_to=max_ts, fingerprint=fingerprint, records_read=len(events),
                     notes=notes, repeats=repeats, identity=self.server)

    def _event(self, ev: dict, where: str) -> tuple[Position, list[Change]]:
        """One event's position and changes (a key-changing update: the old key's DELETE first).

        The shapes are checked as they are read; one missed there still leaves as
        MalformedInputError naming the line, not a traceback.
        """
        try:
            return self._changes(ev, where)
        except WeaverError:
            raise
        except (TypeError, AttributeError, KeyError, IndexError, ValueError, ArithmeticError, RecursionError) as exc:
            raise MalformedInputError(f"{where}: not a Debezium change event ({type(exc).__name__}: {exc})") from exc

    def _changes(self, ev: dict, where: str) -> tuple[Position, list[Change]]:
        op = ev.get("op")
        src = ev["source"]
        try:
            lsn = parse_lsn(src["lsn"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedInputError(f"{where}: source.lsn is missing or not an LSN") from exc
        at = f"{where} (LSN {format_lsn(lsn)})"
        if not isinstance(op, str):
            raise MalformedInputError(f"{at}: op {op!r} is not one of the letters r, c, u, d, t")
        if op not in OPS:
            raise UnknownEventError(f"{at}: unknown op {op!r}; Debezium ops are r, c, u, d, t")
        pos = (self._commit_lsn(src, lsn, at), lsn)
        ts = self._ts(src, at)
        kind = OPS[op]
        if kind == "TRUNCATE":
            return pos, [Change(pos, "", "TRUNCATE", None, ts)]
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
        changes = [Change(pos, key, kind, value, ts)]
        before = ev.get("before")
        if op == "u" and isinstance(before, dict) and all(a in before for a in self.keys):
            old = self._key(before, at)
            if old != key:  # the update moved the row to another key: the old key is gone
                changes.insert(0, Change(pos, old, "DELETE", None, ts))
        return pos, changes

    @staticmethod
    def _commit_lsn(src: dict, lsn: int, at: str) -> int:
        """The commit LSN: the first item of source.sequence (a list, or its JSON text, as Debezium
        writes it), or the event's own LSN when the sequence or its first item is absent (a snapshot)."""
        raw = src.get("sequence")
        if not raw:
            return lsn
        bad = f"{at}: source.sequence {repr(raw)[:80]} is not [commit LSN, LSN]"
        seq = raw
        if isinstance(raw, str):
            try:
                seq = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise MalformedInputError(bad) from exc
        if not isinstance(seq, list):
            raise MalformedInputError(bad)
        if not seq or seq[0] is None:
            return lsn
        try:
            return parse_lsn(seq[0])
        except ValueError as exc:
            raise MalformedInputError(bad) from exc

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
