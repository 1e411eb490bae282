"""Row walks on the API and the audit's API findings (docs/api.md, "Rows and pagination").

One walk reads one state: the cursor pins the woven snapshot and the woven_snapshots version of
its first page (a weave committing, a weave expiring between pages changes nothing; its files
vacuumed is a named 404, never other rows), and a recovery's pages refuse a change of the state at
an instant the log has not passed yet. Every row comes back exactly once, an empty key included,
in every format, JSON recovery rows included. Instants are exactly RFC 3339. Plus: advice as of a
version the table lacks, idempotent rollback, a whitespace token, the what-if span message, 429
in the OpenAPI.

Expected rows are the oracle fold of the raw change log (tests/oracle.py), never the API's output.
"""

from __future__ import annotations

import base64
import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from fastapi.testclient import TestClient

from tests.lakes import T0, add_weave, build_lake, random_changes, standard_lake, weave_id_of
from tests.oracle import fold
from weaver.api import create_app
from weaver.core import storage
from weaver.core.settings import Settings

TOKEN = "paging-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def page_rows(r, fmt: str, field: str = "rows") -> list[tuple[str, bytes]]:
    """(key, value) of one page in `fmt`, in the order sent."""
    if fmt == "ndjson":
        return [(x["key"], base64.b64decode(x["value"])) for x in map(json.loads, r.text.splitlines()) if x]
    if fmt == "arrow":
        t = pa.ipc.open_stream(r.content).read_all()
        return list(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))
    return [(x["key"], base64.b64decode(x["value"])) for x in r.json()[field]]


def walk(call, fmt: str, *, cursor: str | None = None, field: str = "rows", limit: int = 1) -> list[tuple[str, bytes]]:
    """Every row of a walk, following X-Next-Cursor until it is absent (as a client does)."""
    rows: list[tuple[str, bytes]] = []
    for _ in range(1000):
        r = call({"format": fmt, "limit": limit, **({"cursor": cursor} if cursor is not None else {})})
        assert r.status_code == 200, r.text
        rows += page_rows(r, fmt, field)
        cursor = r.headers.get("x-next-cursor")
        if fmt == "json":
            assert r.json()["next_cursor"] == cursor
        if cursor is None:
            return rows
    raise AssertionError("the walk does not end")


def woven_rows(lake, w: dict, tp: datetime) -> list[dict]:
    """The woven_snapshots rows of weave `w` (of P0 at w's split key) at `tp`: the oracle fold."""
    lo, hi = lake.ranges["P0"]
    return [{"weave_id": w["weave_id"], "woven_partition_id": child, "source_partition_id": "P0", "timepoint": tp,
             "as_of_seq": lake.seq_at(tp), "key": k, "value": v}
            for child, clo, chi in ((w["left"], lo, w["split_key"]), (w["right"], w["split_key"], hi))
            for k, v in fold(lake.changes, key_lo=clo, key_hi=chi, at=tp).items()]


def commit_timepoint(lake, w: dict, tp: datetime) -> None:
    """One weaving run's commit: weave `w` at a later timepoint `tp`."""
    write_deltalake(storage.uri_for(lake.settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist(woven_rows(lake, w, tp), schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                    mode="append")


def append_change(lake, key: str, ts: datetime, value: bytes) -> None:
    """The extractor appends one PUT (next seq) to the change log, and the oracle learns it."""
    seq = lake.changes[-1]["seq"] + 1
    pid = "P0" if key < "k4" else "P1"
    row = {"seq": seq, "ts": ts, "partition_id": pid, "key": key, "op": "PUT", "value": value,
           "value_bytes": len(value)}
    write_deltalake(storage.uri_for(lake.settings, storage.CHANGELOG),
                    pa.Table.from_pylist([row], schema=storage.SCHEMAS[storage.CHANGELOG]), mode="append")
    lake.changes.append(row)


# --- finding 1: one walk, one snapshot -----------------------------------------------------------
def test_woven_walk_reads_one_snapshot_across_a_weave_commit(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    w = lake.weaves[weave_id_of("pred-P0")]
    at, served, later = lake.ts_of(119), lake.ts_of(90), lake.ts_of(112)
    want = lake.expected("P0", served)
    uri = storage.uri_for(lake.settings, storage.WOVEN_SNAPSHOTS)
    v0 = DeltaTable(uri).version()
    q = {"partition_id": "P0", "timepoint": iso(at)}
    with TestClient(create_app(lake.settings)) as c:
        r = c.get("/v1/woven-snapshots", params={**q, "format": "json", "limit": 2}, headers=AUTH)
        body = r.json()
        assert body["timepoint"] == served.isoformat() and body["weave_id"] == w["weave_id"]
        first = page_rows(r, "json")
        # A weaving run commits a later timepoint between pages; its rows past page 1 differ
        # (checked, so that a walk reading it would show).
        newer = lake.expected("P0", later)
        assert later > served and {k: v for k, v in newer.items() if k > first[-1][0]} != \
            {k: v for k, v in want.items() if k > first[-1][0]}
        commit_timepoint(lake, w, later)
        assert DeltaTable(uri).version() == v0 + 1
        rest = walk(lambda p: c.get("/v1/woven-snapshots", params={**q, **p}, headers=AUTH), "ndjson",
                    cursor=r.headers["x-next-cursor"], limit=2)
        assert first + rest == sorted(want.items())
        # The first page named the version it read (header and JSON); a new walk reads the new state
        # and names its version; as_of_version reads the old one again.
        assert body["woven_version"] == v0 and r.headers["x-weaver-woven-version"] == str(v0)
        r = c.get("/v1/woven-snapshots", params=q, headers=AUTH)
        assert r.headers["x-weaver-timepoint"] == later.isoformat()
        assert r.headers["x-weaver-woven-version"] == str(v0 + 1) and dict(page_rows(r, "ndjson")) == newer
        r = c.get("/v1/woven-snapshots", params={**q, "as_of_version": v0}, headers=AUTH)
        assert r.headers["x-weaver-timepoint"] == served.isoformat() and dict(page_rows(r, "ndjson")) == want


def test_woven_walk_survives_expiry_and_refuses_after_vacuum(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    a = lake.weaves[weave_id_of("pred-P0")]
    # A second weave of P0, woven earlier: it serves P0 once A is no longer served.
    add_weave(lake, "P0", "k1", 0.95, [lake.ts_of(40)], prediction_id="pred-P0-b")
    at, served = lake.ts_of(119), lake.ts_of(90)
    want, other = lake.expected("P0", served), lake.expected("P0", lake.ts_of(40))
    q = {"partition_id": "P0", "timepoint": iso(at), "limit": 3}
    s = lake.settings
    with TestClient(create_app(s)) as c:
        r = c.get("/v1/woven-snapshots", params=q, headers=AUTH)
        assert r.headers["x-weaver-weave-id"] == a["weave_id"]
        got = page_rows(r, "ndjson")
        assert {k: v for k, v in want.items() if k > got[-1][0]} != {k: v for k, v in other.items() if k > got[-1][0]}
        # A expires (the catalog says so; its rows are still in the version the walk pinned).
        row = {k: v for k, v in a.items() if k not in ("left", "right")}
        storage.merge(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG,
                      pa.Table.from_pylist([{**row, "status": "expired"}], schema=storage.SCHEMAS[storage.WOVEN_CATALOG]),
                      ["weave_id"])
        r = c.get("/v1/woven-snapshots", params={**q, "cursor": r.headers["x-next-cursor"]}, headers=AUTH)
        assert r.status_code == 200 and r.headers["x-weaver-weave-id"] == a["weave_id"]
        got += page_rows(r, "ndjson")
        assert got == sorted(want.items())[:len(got)]
        # Its rows deleted and vacuumed: the walk cannot go on, and says so (never B's rows).
        dt = DeltaTable(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
        dt.delete(f"weave_id = '{a['weave_id']}'")
        dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        r = c.get("/v1/woven-snapshots", params={**q, "cursor": r.headers["x-next-cursor"]}, headers=AUTH)
        assert r.status_code == 404 and r.json()["error"] == "NoDataError", r.text
        assert "start again without a cursor" in r.json()["message"] and str(tmp_path) not in r.text
        # A new walk reads what serves P0 now.
        r = c.get("/v1/woven-snapshots", params={**q, "limit": 1000}, headers=AUTH)
        assert r.headers["x-weaver-weave-id"] == weave_id_of("pred-P0-b") and dict(page_rows(r, "ndjson")) == other


def test_cursor_forms(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    at = lake.ts_of(119)
    want = lake.expected("P0", lake.ts_of(90))
    q = {"partition_id": "P0", "timepoint": iso(at)}
    with TestClient(create_app(lake.settings)) as c:
        # A plain key, "" included, is an exclusive lower bound (any string).
        for key in ("", "k1", "k1b~x"):
            r = c.get("/v1/woven-snapshots", params={**q, "cursor": key}, headers=AUTH)
            assert r.status_code == 200 and dict(page_rows(r, "ndjson")) == {k: v for k, v in want.items() if k > key}
        # A pinned cursor belongs to its request: with another timepoint it is refused, not served.
        nxt = c.get("/v1/woven-snapshots", params={**q, "limit": 2}, headers=AUTH).headers["x-next-cursor"]
        r = c.get("/v1/woven-snapshots", params={**q, "timepoint": iso(lake.ts_of(100)), "cursor": nxt}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", r.text
        r = c.post("/v1/recoveries", params={"cursor": nxt, "format": "ndjson"}, headers=AUTH,
                   json={"partition_id": "P0", "timepoint": iso(at)})
        assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", r.text
        for bad in ("%~", "%~zz~k1", "%~w1.00.1"):
            r = c.get("/v1/woven-snapshots", params={**q, "cursor": bad}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", (bad, r.text)


# --- finding 2: every row once, an empty key included --------------------------------------------
KEYS = ["", "\x00", " ", "%", "%41", "%~", "a", "a~b", "k3", "k5", "~", "~~", "\u0436"]


def _key_lake(root):
    changes = []
    for i, k in enumerate(KEYS * 2 + ["a"]):
        seq = i + 1
        op = "DELETE" if i == 2 * len(KEYS) else "PUT"
        value = None if op == "DELETE" else f"{k!r}@{seq}".encode()
        changes.append({"seq": seq, "ts": T0 + timedelta(minutes=seq), "partition_id": "P0" if k < "k4" else "P1",
                        "key": k, "op": op, "value": value, "value_bytes": None if value is None else len(value)})
    lake = build_lake(root, changes, None, api_token=TOKEN)
    add_weave(lake, "P0", "a", 0.9, [lake.ts_of(2 * len(KEYS))], prediction_id="pred-keys")
    return lake


@pytest.mark.parametrize("fmt", ["ndjson", "arrow", "json"])
def test_every_row_once_whatever_the_keys(tmp_path, fmt):
    lake = _key_lake(tmp_path / "lake")
    tp, at = lake.ts_of(2 * len(KEYS)), lake.ts_of(len(lake.changes))
    with TestClient(create_app(lake.settings)) as c:
        want = sorted(lake.expected("P0", tp).items())
        assert want[0][0] == "" and len(want) > 3
        got = walk(lambda p: c.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": iso(at), **p},
                                   headers=AUTH), fmt)
        assert got == want
        for pid in ("P0", "P1"):
            want = sorted(lake.expected(pid, at).items())
            post = lambda p: c.post("/v1/recoveries", params=p, headers=AUTH,  # noqa: E731
                                    json={"partition_id": pid, "timepoint": iso(at)})
            if fmt == "json":
                # The summary starts the JSON walk; its rows come as `items` (`rows` stays the count).
                summary = post({"format": "json"}).json()
                assert summary["rows"] == len(want) and "items" not in summary
                got = walk(post, fmt, cursor=summary["next_cursor"], field="items")
            else:
                got = walk(post, fmt)
            assert got == want, pid


# --- finding 1 (recoveries): the state at an instant the log has not passed --------------------
def test_recovery_walk_refuses_a_changed_state_and_keeps_a_final_one(tmp_path):
    lake = build_lake(tmp_path / "lake", random_changes(random.Random(11), 60, None), None, api_token=TOKEN)
    last = lake.changes[-1]["ts"]
    done, open_ = lake.ts_of(30), last + timedelta(hours=1)
    body = lambda at: {"partition_id": "P0", "timepoint": iso(at)}  # noqa: E731
    with TestClient(create_app(lake.settings)) as c:
        first = {}
        for at in (done, open_):
            r = c.post("/v1/recoveries", params={"format": "ndjson", "limit": 2}, json=body(at), headers=AUTH)
            first[at] = (page_rows(r, "ndjson"), r.headers["x-next-cursor"])
        before = lake.expected("P0", open_)
        key = max(k for k in ["k0a", "k1a", "k2a", "k3a"] if k > first[open_][0][-1][0])
        append_change(lake, key, last + timedelta(minutes=1), b"late")
        assert lake.expected("P0", open_) != before
        # Past the log's end: the state at `open_` changed, so the walk stops with a named 404.
        r = c.post("/v1/recoveries", params={"format": "ndjson", "limit": 2, "cursor": first[open_][1]},
                   json=body(open_), headers=AUTH)
        assert r.status_code == 404 and r.json()["error"] == "NoDataError", r.text
        # Before it: no change can arrive at or before `done`, the walk goes on.
        rest = walk(lambda p: c.post("/v1/recoveries", params=p, json=body(done), headers=AUTH), "ndjson",
                    cursor=first[done][1], limit=2)
        assert first[done][0] + rest == sorted(lake.expected("P0", done).items())
        # A new walk reads the new state.
        got = walk(lambda p: c.post("/v1/recoveries", params=p, json=body(open_), headers=AUTH), "ndjson", limit=2)
        assert got == sorted(lake.expected("P0", open_).items())


# --- finding 3: advice as of a version the table does not have -----------------------------------
def test_advice_as_of_a_missing_version_is_a_400_without_paths(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    row = {"advice_id": "a1", "run_ts": T0, "partition_id": "P0", "prediction_id": "pred-P0", "probability": 0.9,
           "reason": "size", "predicted_split_ts": None, "window_end": T0 + timedelta(days=1), "action": "wait"}
    storage.merge(storage.uri_for(lake.settings, storage.ADVICE), storage.ADVICE,
                  pa.Table.from_pylist([row], schema=storage.SCHEMAS[storage.ADVICE]), ["advice_id"])
    with TestClient(create_app(lake.settings)) as c:
        for v in ("1", "99", "99999999999999999999"):
            r = c.get("/v1/advice", params={"as_of_version": v}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", (v, r.text)
            assert str(tmp_path) not in r.text and "advice" in r.json()["message"]
        (item,) = c.get("/v1/advice", params={"as_of_version": 0}, headers=AUTH).json()["items"]
        assert item["advice_id"] == "a1" and item["action"] == "wait"


# --- finding 4: a rollback rerun commits nothing -------------------------------------------------
def _files(uri: str) -> list[str]:
    return sorted(p.name for p in Path(uri).rglob("*.parquet"))


def test_rollback_rerun_writes_no_new_version(tmp_path):
    from weaver.recover import recover

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(4), 60, None), None, api_token=TOKEN)
    s = lake.settings
    at = lake.ts_of(40)
    with TestClient(create_app(s)) as c:
        bodies = [{"partition_id": "P0", "timepoint": iso(at), "mode": "rollback"}] * 2
        outs = [c.post("/v1/recoveries", json=b, headers=AUTH).json()["output"] for b in bodies[:1]]
        v, files = DeltaTable(outs[0]).version(), _files(outs[0])
        r = c.post("/v1/recoveries", json=bodies[1], headers=AUTH).json()
        assert r["output"] == outs[0] and DeltaTable(outs[0]).version() == v and _files(outs[0]) == files
        assert dict(zip(*DeltaTable(outs[0]).to_pyarrow_table().to_pydict().values())) == lake.expected("P0", at)
    # `weaver recover --mode rollback` twice (the same function), to a path of the caller's.
    out = str(tmp_path / "rb")
    recover(s, "P1", at, mode="rollback", out=out)
    v, files = DeltaTable(out).version(), _files(out)
    recover(s, "P1", at, mode="rollback", out=out)
    assert DeltaTable(out).version() == v and _files(out) == files
    # Other rows for the same recovery id (a change arrived at or before an instant past the log's
    # end): overwritten, as the state now is.
    late = lake.changes[-1]["ts"] + timedelta(hours=1)
    recover(s, "P1", late, mode="rollback", out=out)
    v = DeltaTable(out).version()
    append_change(lake, "k9z", lake.changes[-1]["ts"] + timedelta(minutes=1), b"late")
    recover(s, "P1", late, mode="rollback", out=out)
    assert DeltaTable(out).version() == v + 1
    assert dict(zip(*DeltaTable(out).to_pyarrow_table().to_pydict().values())) == lake.expected("P1", late)


# --- finding 5: the JSON recovery walk and its schema --------------------------------------------
def test_openapi_recovery_json_and_429_agree_with_the_answers(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    with TestClient(create_app(lake.settings)) as c:
        spec = c.get("/openapi.json").json()
        summary = spec["components"]["schemas"]["RecoverySummary"]["properties"]
        assert summary["rows"]["type"] == "integer" and "next_cursor" in summary
        assert summary["items"]["anyOf"][0]["type"] == "array"
        assert "woven_version" in spec["components"]["schemas"]["WovenPage"]["properties"]
        responses = spec["paths"]["/v1/recoveries"]["post"]["responses"]
        assert "429" in responses and "Retry-After" in responses["429"]["headers"]
        at = lake.ts_of(100)
        r = c.post("/v1/recoveries", json={"partition_id": "P0", "timepoint": iso(at)}, headers=AUTH).json()
        assert isinstance(r["rows"], int) and r["next_cursor"]
        r = c.post("/v1/recoveries", params={"cursor": r["next_cursor"], "limit": 1000}, headers=AUTH,
                   json={"partition_id": "P0", "timepoint": iso(at)}).json()
        assert r["rows"] == len(r["items"]) and r["next_cursor"] is None
        assert {x["key"]: base64.b64decode(x["value"]) for x in r["items"]} == lake.expected("P0", at)


# --- finding 6: exactly RFC 3339 -----------------------------------------------------------------
MALFORMED = ["2026-01-01T05:00:00.Z", "2026-01-01T05:00:00\x00Z", "2026-01-01T05:00:00Z\x00",
             "2026-01-01T05:00:00+0000", "2026-01-01T05:00Z", "20260101T050000Z", "2026-W01-4T05:00:00Z",
             " 2026-01-01T05:00:00Z", "2026-01-01T05:00:00Z ", "2026-01-01T05:00:00Z\n", "\t2026-01-01T05:00:00Z",
             "2026-01-01T05:00:00+05", "2026-01-01T05:00:00,5Z", "2026-01-01 05:00:00Z", "2026-001T05:00:00Z",
             "\uff12026-01-01T05:00:00Z", "2026-01-01T05:00:00.\u0665Z", "2026-02-30T05:00:00Z",
             "2026-01-01T24:00:00Z", "2026-01-01T05:00:00+24:00", "2026-01-01T05:00:00+05:60", "2026-13-01T05:00:00Z"]


def test_only_rfc3339_instants_are_accepted(tmp_path):
    from weaver.api.http import _timepoint

    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    with TestClient(create_app(lake.settings)) as c:
        for tp in MALFORMED:
            for r in (c.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": tp}, headers=AUTH),
                      c.post("/v1/recoveries", json={"partition_id": "P0", "timepoint": tp}, headers=AUTH),
                      c.get("/v1/predictions", params={"run_from": tp}, headers=AUTH)):
                assert r.status_code == 400 and r.json()["error"] == "InvalidTimepointError", (tp, r.text)
        r = c.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": "2026-01-01T04:00:00"}, headers=AUTH)
        assert r.status_code == 400 and "has no timezone" in r.json()["message"]
    utc = timezone.utc
    for text, want in (("2026-01-02T05:00:00.5+01:30", datetime(2026, 1, 2, 3, 30, 0, 500000, utc)),
                       ("2026-01-02t05:00:00z", datetime(2026, 1, 2, 5, tzinfo=utc)),
                       ("2026-01-02T05:00:00-00:00", datetime(2026, 1, 2, 5, tzinfo=utc)),
                       ("2026-01-02T05:00:00.123456789Z", datetime(2026, 1, 2, 5, 0, 0, 123456, utc)),
                       ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, utc)),
                       ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=utc)),
                       ("0000-01-01T00:00:00Z", datetime.min.replace(tzinfo=utc)),
                       ("0001-01-01T00:00:00+00:01", datetime.min.replace(tzinfo=utc)),
                       ("9999-12-31T23:59:59-23:59", datetime.max.replace(tzinfo=utc))):
        assert _timepoint(text) == want, text


# --- finding 7: as_of with as_of_version, a whitespace token, the what-if span -------------------
def test_as_of_together_with_as_of_version_is_refused(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    q = {"partition_id": "P0", "timepoint": iso(lake.ts_of(119)), "as_of_version": 0}
    with TestClient(create_app(lake.settings)) as c:
        r = c.get("/v1/woven-snapshots", params={**q, "as_of": "garbage"}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "InvalidTimepointError", r.text
        r = c.get("/v1/woven-snapshots", params={**q, "as_of": "2999-01-01T00:00:00Z"}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", r.text
        assert c.get("/v1/woven-snapshots", params=q, headers=AUTH).status_code == 200


@pytest.mark.parametrize("token", [" ", "\t\n", " paging-token"])
def test_a_token_no_client_can_send_is_refused(tmp_path, token):
    from weaver.api import serve_host
    from weaver.core.errors import InvalidParameterError

    s = Settings(lake=str(tmp_path / "lake"), api_token=token)
    for insecure in (False, True):
        with pytest.raises(InvalidParameterError, match="whitespace"):
            serve_host(s, "0.0.0.0", insecure)
    with TestClient(create_app(s)) as c:
        r = c.get("/v1/partitions", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.json()["error"] == "ApiTokenNotConfigured"
        assert c.get("/healthz").json()["auth"] == "disabled"


def test_whatif_span_reads_in_days(tmp_path):
    lake = standard_lake(tmp_path / "lake", api_token=TOKEN)
    with TestClient(create_app(lake.settings)) as c:
        r = c.post("/v1/whatif", headers=AUTH, json={"partition_id": "P0", "at": iso(lake.ts_of(10)),
                                                     "until": "9999-12-31T23:59:59Z"})
        assert r.status_code == 400 and r.json()["error"] == "InvalidParameterError", r.text
        msg = r.json()["message"]
        assert re.search(r"is \d+ days \d+ hours", msg) and "at most 31 days per what-if" in msg
        assert not re.search(r"\d+s after", msg)
