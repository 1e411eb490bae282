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
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from weaver.core.errors import InvalidParameterError
from weaver.ingest.base import Batch, Change, Position, Watermark, key_attrs
from weaver.ingest.errors import (
    ChecksumMismatchError,
    MalformedInputError,
    MissingKeyAttributeError,
    UnknownEventError,
)
from weaver.ingest.keys import encode_key
from weaver.ingest.values import encode_item, from_dynamodb

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FULL, INCREMENTAL = "FULL_EXPORT", "INCREMENTAL_EXPORT"


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _parse_time(text: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedInputError(f"{where}: {text!r} is not an ISO-8601 instant") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


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
        for f in ("exportArn", "manifestFilesS3Key"):
            if f not in self.summary:
                raise MalformedInputError(f"{summary_path}: missing field {f!r}")
        self.type = self.summary.get("exportType", FULL)
        if self.type not in (FULL, INCREMENTAL):
            raise UnknownEventError(f"{summary_path}: unknown exportType {self.type!r}; expected {FULL} or {INCREMENTAL}")
        if self.summary.get("outputFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
            raise MalformedInputError(f"{summary_path}: outputFormat {self.summary['outputFormat']!r} is not supported; "
                                      "export as DYNAMODB_JSON")
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

    @staticmethod
    def _json_file(p: Path) -> dict:
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MalformedInputError(f"{p}: not readable JSON ({exc})") from exc

    def describe(self, pos: Position) -> str:
        """Positions are write times in µs; the watermark shows the first instant not yet covered."""
        return from_micros(pos[0] + 1).isoformat().replace("+00:00", "Z") + " (exclusive)"

    def contiguous(self, watermark: Position, start: Position) -> bool:
        return start[0] <= watermark[0] + 1

    def _data_files(self) -> list[tuple[Path, dict, int]]:
        mf = self.dir / "manifest-files.json"
        if not mf.is_file():
            raise MalformedInputError(f"{self.dir}: manifest-files.json is missing")
        out = []
        for n, line in enumerate(mf.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = entry["dataFileS3Key"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise MalformedInputError(f"{mf}:{n}: not a manifest entry with dataFileS3Key ({exc})") from exc
            out.append((self._resolve(key, mf, n), entry, n))
        return out

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
        changes: list[tuple[int, str, Change]] = []
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
                text = gzip.decompress(raw).decode("utf-8") if path.suffix == ".gz" else raw.decode("utf-8")
            except (OSError, EOFError, UnicodeDecodeError) as exc:
                raise MalformedInputError(f"{path}: not a readable gzip'd JSON lines file ({exc})") from exc
            n_items = 0
            for n, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MalformedInputError(f"{where}: malformed JSON line ({exc.msg} at column {exc.colno})") from exc
                n_items += 1
                try:
                    changes.append(self._change(rec, where))
                except UnicodeEncodeError as exc:  # a lone surrogate (a "\udc00" escape) in a key or image
                    raise MalformedInputError(f"{where}: text that is not valid Unicode ({exc.reason}: "
                                              f"{exc.object[exc.start:exc.end]!r})") from exc
            read += n_items
            if "itemCount" in entry and int(entry["itemCount"]) != n_items:
                raise ChecksumMismatchError(f"{path}: {n_items} items but the manifest's itemCount says {entry['itemCount']}")
            if progress:
                progress(n_items)
        changes.sort(key=lambda t: (t[0], t[1]))
        start, end = micros(self.start), micros(self.end) - 1
        return Batch(source=self.source, changes=[c for _, _, c in changes], start=(start,), end=(end,),
                     complete_to=from_micros(end), fingerprint="dynamodb:" + h.hexdigest(), records_read=read,
                     full=self.type == FULL)

    def _key(self, image: dict, where: str, what: str) -> str:
        vals = []
        for a in self.keys:
            if a not in image:
                raise MissingKeyAttributeError(f"{where}: {what} lacks key attribute {a!r} (table keys: {self.keys})")
            vals.append(from_dynamodb(image[a], where=f"{where} {what}.{a}"))
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
            key = self._key(item, where, "Item")
            pos = micros(self.end) - 1
            return pos, key, Change((pos,), key, "PUT", encode_item(item), self.end)
        if "Metadata" not in rec or "Keys" not in rec:
            raise UnknownEventError(f"{where}: an incremental export line needs Metadata and Keys; found keys {sorted(rec)}")
        try:
            us = int(from_dynamodb(rec["Metadata"]["WriteTimestampMicros"], where=where))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: {"N": "Infinity"}
            raise MalformedInputError(f"{where}: Metadata.WriteTimestampMicros is missing or not a finite number") from exc
        if not micros(self.start) <= us < micros(self.end):
            try:
                when = from_micros(us).isoformat()
            except OverflowError:  # past year 9999
                when = f"{us} µs after the epoch"
            raise MalformedInputError(f"{where}: write time {when} lies outside the export window "
                                      f"[{self.start.isoformat()}, {self.end.isoformat()})")
        key = self._key(rec["Keys"], where, "Keys")
        image = rec.get("NewImage")
        if image is not None:
            if self._key(image, where, "NewImage") != key:
                raise MalformedInputError(f"{where}: NewImage's key differs from Keys")
            return us, key, Change((us,), key, "PUT", encode_item(image), from_micros(us))
        return us, key, Change((us,), key, "DELETE", None, from_micros(us))
