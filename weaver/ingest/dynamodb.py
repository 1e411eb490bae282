"""DynamoDB export to S3 (DYNAMODB_JSON format), read from a local folder.

One export is one input: its folder holds ``manifest-summary.json`` (``exportArn``, ``tableArn``,
``exportType`` FULL_EXPORT | INCREMENTAL_EXPORT, ``exportTime`` or ``exportFromTime`` (inclusive)
and ``exportToTime`` (exclusive), ``outputView``, ``outputFormat``) and ``manifest-files.json``
(one JSON object a line: ``dataFileS3Key``, ``md5Checksum`` = base64 MD5 of the gzip'd file,
``itemCount``, ``etag``). Data files are gzip'd JSON lines: ``{"Item": {...}}`` in a full export,
``{"Metadata": {"WriteTimestampMicros": {"N": ...}}, "Keys": {...}, "NewImage": {...},
"OldImage": {...}}`` in an incremental one (no NewImage = the item was deleted).

Mapping: a full export is a PUT of every item at ``exportTime`` (it may only start a source);
an incremental record is a PUT of NewImage, or a DELETE, at its WriteTimestampMicros. Source
order = (write time, key); position = write time in µs; the watermark after an input is
``exportToTime`` (every write before it is in the lake).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from weaver.core.errors import InvalidParameterError, WeaverError
from weaver.ingest.base import Batch, Change, Position, Watermark, key_attrs
from weaver.ingest.errors import (
    ChecksumMismatchError,
    MalformedInputError,
    MissingKeyAttributeError,
    UnknownEventError,
)
from weaver.ingest.keys import encode_key
from weaver.ingest.values import check_item, checked_python, encode_item, from_dynamodb, json_line

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FULL, INCREMENTAL = "FULL_EXPORT", "INCREMENTAL_EXPORT"


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _parse_time(text: str, where: str) -> datetime:
    """An export instant; one without a timezone is refused, not guessed (AWS writes them with 'Z')."""
    if not isinstance(text, str):
        raise MalformedInputError(f"{where}: {text!r} is not an ISO-8601 instant")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedInputError(f"{where}: {text!r} is not an ISO-8601 instant") from exc
    if t.tzinfo is None or t.utcoffset() is None:
        raise MalformedInputError(f"{where}: {text!r} has no timezone, so the export window is ambiguous; "
                                  "AWS writes these instants in UTC with a 'Z' (e.g. 2026-03-01T12:00:00.000Z)")
    try:
        return t.astimezone(timezone.utc)
    except OverflowError as exc:  # an offset that moves year 1 or 9999 out of range
        raise MalformedInputError(f"{where}: {text!r} is not a representable instant") from exc


class DynamoDBExport:
    """Adapter for one DynamoDB export folder (full or incremental)."""

    kind = "dynamodb-export"

    def __init__(self, path: str | Path, keys: str | list[str], name: str | None = None):
        self.dir = Path(path)
        self.keys = key_attrs(keys)
        summary_path = self.dir / "manifest-summary.json"
        if not summary_path.is_file():
            raise InvalidParameterError(f"{self.dir} holds no manifest-summary.json; point --input at the export's folder "
                                        "(…/AWSDynamoDB/<ExportId>)")
        self.summary = self._json_file(summary_path)
        if not isinstance(self.summary, dict):
            raise MalformedInputError(f"{summary_path}: not a JSON object")
        for f in ("exportArn", "manifestFilesS3Key"):
            if f not in self.summary:
                raise MalformedInputError(f"{summary_path}: missing field {f!r}")
        for f in ("exportArn", "tableArn", "exportType", "outputFormat"):
            v = self.summary.get(f, "")  # absent: a default or a check below; a null tableArn: absent
            if (not isinstance(v, str) or f in self.summary and not v) and not (f == "tableArn" and v is None):
                raise MalformedInputError(f"{summary_path}: field {f!r} is {v!r}, not a non-empty string")
        self.type = self.summary.get("exportType", FULL)
        if self.type not in (FULL, INCREMENTAL):
            raise UnknownEventError(f"{summary_path}: unknown exportType {self.type!r}; expected {FULL} or {INCREMENTAL}")
        if self.summary.get("outputFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
            raise MalformedInputError(f"{summary_path}: outputFormat {self.summary['outputFormat']!r} is not supported; "
                                      "export as DYNAMODB_JSON")
        # The table ARN names the table beyond the source name (account, region): the batch's identity.
        self.table_arn: Optional[str] = self.summary.get("tableArn")
        table = str(self.summary.get("tableArn", "")).rsplit("/", 1)[-1] or "table"
        self.source = f"{self.kind}:{name or table}"
        if self.type == FULL:
            self.start = EPOCH
            self.end = _parse_time(self.summary.get("exportTime", ""), f"{summary_path} exportTime")
        else:
            self.start = _parse_time(self.summary.get("exportFromTime", ""), f"{summary_path} exportFromTime")
            self.end = _parse_time(self.summary.get("exportToTime", ""), f"{summary_path} exportToTime")
        if self.end <= self.start:
            raise MalformedInputError(f"{summary_path}: export window ends ({self.end}) before it starts ({self.start})")
        self._window_us = (micros(self.start), micros(self.end))  # checked against every record's write time

    @staticmethod
    def _json_file(p: Path):
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise MalformedInputError(f"{p}: not readable ({exc})") from exc
        return json_line(raw, str(p))

    def describe(self, pos: Position) -> str:
        """Positions are write times in µs; the watermark shows the first instant not yet covered."""
        return from_micros(pos[0] + 1).isoformat().replace("+00:00", "Z") + " (exclusive)"

    def contiguous(self, watermark: Position, start: Position) -> bool:
        return start[0] <= watermark[0] + 1

    def _data_files(self) -> list[tuple[Path, dict, int]]:
        mf = self.dir / "manifest-files.json"
        if not mf.is_file():
            raise MalformedInputError(f"{self.dir}: manifest-files.json is missing")
        try:
            raw = mf.read_bytes()
        except OSError as exc:
            raise MalformedInputError(f"{mf}: not readable ({exc})") from exc
        out = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            entry = json_line(line, f"{mf}:{n}")
            self._check_entry(entry, f"{mf}:{n}")
            out.append((self._resolve(entry["dataFileS3Key"], mf, n), entry, n))
        return out

    @staticmethod
    def _check_entry(entry, where: str) -> None:
        """A manifest-files.json line: dataFileS3Key text, md5Checksum text and itemCount a count when given."""
        if not isinstance(entry, dict) or not isinstance(entry.get("dataFileS3Key"), str) or not entry["dataFileS3Key"]:
            raise MalformedInputError(f"{where}: not a manifest entry with a dataFileS3Key (the data file's S3 key)")
        if "md5Checksum" in entry and not isinstance(entry["md5Checksum"], str):
            raise MalformedInputError(f"{where}: md5Checksum {entry['md5Checksum']!r} is not base64 text")
        count = entry.get("itemCount", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise MalformedInputError(f"{where}: itemCount {count!r} is not a count of items")

    def _resolve(self, key: str, mf: Path, line: int) -> Path:
        # S3 keys are bucket-relative (<prefix>/AWSDynamoDB/<ExportId>/data/<file>): find the
        # bucket root above the export folder, or take the file from the export's own data/.
        parts = key.split("/")
        cands = [self.dir.joinpath(*parts[parts.index("data"):])] if "data" in parts else []
        up = self.dir
        for _ in range(5):
            cands.append(up.joinpath(*parts))
            up = up.parent
        for c in cands:
            if c.is_file():
                return c
        raise MalformedInputError(f"{mf}:{line}: data file {key!r} not found under {self.dir}")

    def read(self, since: Optional[Watermark], progress: Optional[Callable[[int], None]] = None) -> Batch:
        files = self._data_files()
        changes: list[tuple[int, str, str, Change]] = []
        h = hashlib.sha256(self.summary["exportArn"].encode())
        read = 0
        for path, entry, _ in files:
            raw = path.read_bytes()
            md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()  # noqa: S324 - the format's checksum
            if entry.get("md5Checksum") and entry["md5Checksum"] != md5:
                raise ChecksumMismatchError(
                    f"{path}: MD5 {md5} differs from the manifest's md5Checksum {entry['md5Checksum']}; "
                    "the file is truncated or altered - re-download the export")
            h.update(md5.encode())
            try:
                data = gzip.decompress(raw) if path.suffix == ".gz" else raw
            except (OSError, EOFError) as exc:
                raise MalformedInputError(f"{path}: not a readable gzip'd JSON lines file ({exc})") from exc
            n_items = 0
            for n, line in enumerate(data.splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                rec = json_line(line, where)
                n_items += 1
                us, key, change = self._record(rec, where)
                changes.append((us, key, where, change))
            read += n_items
            if "itemCount" in entry and entry["itemCount"] != n_items:
                raise ChecksumMismatchError(f"{path}: {n_items} items but the manifest's itemCount says {entry['itemCount']}")
            if progress:
                progress(n_items)
        changes.sort(key=lambda t: (t[0], t[1]))
        kept, notes = _drop_repeats(changes)
        repeats = len(changes) - len(kept)
        start, end = micros(self.start), micros(self.end) - 1
        return Batch(source=self.source, changes=kept, start=(start,), end=(end,),
                     complete_to=from_micros(end), fingerprint="dynamodb:" + h.hexdigest(), records_read=read,
                     full=self.type == FULL, notes=notes, repeats=repeats, identity=self.table_arn)

    def _record(self, rec, where: str) -> tuple[int, str, Change]:
        """One data-file line as (write time, key, change); the shapes are checked in :meth:`_change`,
        and a shape it missed still leaves as MalformedInputError naming the line, not a traceback."""
        try:
            return self._change(rec, where)
        except UnicodeEncodeError as exc:  # a lone surrogate (a "\udc00" escape) in a key or image
            raise MalformedInputError(f"{where}: text that is not valid Unicode ({exc.reason}: "
                                      f"{exc.object[exc.start:exc.end]!r})") from exc
        except WeaverError:
            raise
        except (TypeError, AttributeError, KeyError, IndexError, ValueError, ArithmeticError, RecursionError) as exc:
            raise MalformedInputError(f"{where}: not a DynamoDB export record ({type(exc).__name__}: {exc})") from exc

    def _key(self, image: dict, where: str, what: str) -> str:
        """The encoded key of `image`, whose attribute values :func:`check_item` already accepted."""
        if not isinstance(image, dict):
            raise MalformedInputError(f"{where}: {what} is {str(image)[:80]!r}, not a map of key attributes")
        vals = []
        for a in self.keys:
            if a not in image:
                raise MissingKeyAttributeError(f"{where}: {what} lacks key attribute {a!r} (table keys: {self.keys})")
            vals.append(checked_python(image[a]))
        try:
            key = encode_key(vals)
        except Exception as exc:  # UnorderableKeyError: name the line
            raise type(exc)(f"{where}: {exc}") from exc
        key.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, named by read()
        return key

    def _change(self, rec: dict, where: str) -> tuple[int, str, Change]:
        if not isinstance(rec, dict):
            raise MalformedInputError(f"{where}: a line must be a JSON object")
        if self.type == FULL:
            if "Item" not in rec or not isinstance(rec["Item"], dict):
                raise UnknownEventError(f"{where}: a full export line must be {{\"Item\": ...}}; found keys {sorted(rec)}")
            item = rec["Item"]
            check_item(item, where=where, what="Item")
            key = self._key(item, where, "Item")
            pos = micros(self.end) - 1
            return pos, key, Change((pos,), key, "PUT", encode_item(item), self.end)
        if "Metadata" not in rec or "Keys" not in rec:
            raise UnknownEventError(f"{where}: an incremental export line needs Metadata and Keys; found keys {sorted(rec)}")
        try:
            us = int(from_dynamodb(rec["Metadata"]["WriteTimestampMicros"], where=where,
                                   path="Metadata.WriteTimestampMicros"))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: {"N": "Infinity"}
            raise MalformedInputError(f"{where}: Metadata.WriteTimestampMicros is missing or not a finite number") from exc
        if not self._window_us[0] <= us < self._window_us[1]:
            try:
                when = from_micros(us).isoformat()
            except OverflowError:  # past year 9999
                when = f"{us} µs after the epoch"
            raise MalformedInputError(f"{where}: write time {when} lies outside the export window "
                                      f"[{self.start.isoformat()}, {self.end.isoformat()})")
        check_item(rec["Keys"], where=where, what="Keys")
        key = self._key(rec["Keys"], where, "Keys")
        if rec.get("OldImage") is not None:  # not stored, but a malformed one means a damaged line
            check_item(rec["OldImage"], where=where, what="OldImage")
        image = rec.get("NewImage")
        if image is not None:
            check_item(image, where=where, what="NewImage")
            if self._key(image, where, "NewImage") != key:
                raise MalformedInputError(f"{where}: NewImage's key differs from Keys")
            return us, key, Change((us,), key, "PUT", encode_item(image), from_micros(us))
        return us, key, Change((us,), key, "DELETE", None, from_micros(us))


def _drop_repeats(changes: list[tuple[int, str, str, Change]]) -> tuple[list[Change], list[str]]:
    """The changes (sorted by write time, key) without repeats of one (write time, key), and notes.

    A write time is not unique (two items written in one microsecond are both real changes), but an
    item has one record per write time: the same record twice (a file delivered twice, a retried
    export part) is kept once; two different records of one item at one instant have no order and
    are refused.
    """
    kept: list[Change] = []
    prev: Optional[tuple[tuple[int, str], str, Change]] = None
    repeats = 0
    for us, key, where, change in changes:
        if prev is not None and prev[0] == (us, key):  # sorted by (write time, key): repeats are adjacent
            if prev[2] != change:
                raise MalformedInputError(f"{where}: a different record of the same item at the same write time as "
                                          f"{prev[1]}; an export holds one record per item and write")
            repeats += 1
            continue
        prev = ((us, key), where, change)
        kept.append(change)
    notes = [f"{repeats} repeated records skipped (the same item, write time and image as an earlier line)"] \
        if repeats else []
    return kept, notes
