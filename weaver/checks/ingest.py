"""The Great Expectations check of an ingested batch (suite `expectations/ingest.json`)."""

from __future__ import annotations

import json

from weaver.checks.frames import changelog_check_frame
from weaver.checks.gx import validate
from weaver.core import storage
from weaver.ingest.keys import decode_key
from weaver.log import Lineage


def ingest_check_frame(settings, first_seq: int, last_seq: int):
    """One row per change of the batch, with the flags the `ingest` suite asserts.

    On top of the `changelog` flags (seq_step, in_range, owner_ok): `has_source` (the change has
    its ingest_log row), `ts_not_before_source` (ts is the source's time or carried forward, never
    earlier), `key_decodes` (the key is a well-formed encoded key), `value_ok` (a PUT's value is
    a JSON item image, a DELETE has none).
    """
    flt = [("seq", ">=", first_seq), ("seq", "<=", last_seq)]
    changes = storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG, filters=flt)
    df = changelog_check_frame(changes, Lineage.load(settings), first_seq)
    src = storage.read(storage.uri_for(settings, storage.INGEST_LOG), storage.INGEST_LOG, filters=flt,
                       missing_ok=True).to_pandas()
    df = df.merge(src[["seq", "source", "source_ts"]], on="seq", how="left")
    df["has_source"] = df["source"].notna()
    df["ts_not_before_source"] = (df["ts"] >= df["source_ts"]).fillna(False).astype(bool)
    values = dict(zip(changes.column("seq").to_pylist(), changes.column("value").to_pylist()))

    def decodes(k: str) -> bool:
        try:
            decode_key(k)
            return True
        except Exception:  # noqa: BLE001 - any failure is a malformed key
            return False

    def value_ok(seq: int, op: str) -> bool:
        v = values.get(seq)
        if op == "DELETE":
            return v is None
        try:
            return isinstance(json.loads(v.decode("utf-8")), dict)
        except Exception:  # noqa: BLE001
            return False

    df["key_decodes"] = [decodes(k) for k in df["key"]]
    df["value_ok"] = [value_ok(s, o) for s, o in zip(df["seq"], df["op"])]
    return df


def check_ingested(settings, result: dict) -> dict:
    """Run the `ingest` suite on the batch an ingest wrote (result = IngestResult.to_json()).

    A re-ingest of an input already committed writes nothing but names the batch it committed
    (first_seq..last_seq, e.g. by an attempt that crashed before its check): that batch is checked.
    """
    if not result or result.get("first_seq") is None or result.get("last_seq") is None:
        return {"suite": "ingest", "checked": False, "reason": "the ingest wrote no change"}
    df = ingest_check_frame(settings, int(result["first_seq"]), int(result["last_seq"]))
    expected = int(result["last_seq"]) - int(result["first_seq"]) + 1
    written = int(result.get("changes_written") or 0)
    df["batch_complete"] = len(df) == expected and written in (0, expected)
    return {**validate("ingest", df, context=f"{result['source']} seq {result['first_seq']}..{result['last_seq']}"),
            "checked": True}


