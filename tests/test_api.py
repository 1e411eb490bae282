"""The query API through the real FastAPI app (TestClient): rows against the oracle fold, auth, 4xx."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from tests.lakes import T0, standard_lake, weave_id_of
from tests.oracle import rows_to_dict
from weaver.core import storage
from weaver.api import MAX_PAGE, create_app
from weaver.core.settings import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _predictions(lake) -> list[dict]:
    rows = []
    for i, (pid, p) in enumerate([("P0", 0.9), ("P1", 0.2), ("P0", 0.4), ("P2", 0.8)]):
        run = T0 + timedelta(hours=i)
        rows.append({"prediction_id": f"pred-{i}", "run_ts": run, "partition_id": pid, "model": "prophet",
                     "window_start": run, "window_end": run + timedelta(hours=24), "probability": p,
                     "reason": "size" if p > 0.5 else None, "predicted_split_ts": run + timedelta(hours=3),
                     "split_ts_p10": None, "split_ts_p90": None, "split_key": "k2", "threshold": 0.75,
                     "skip_reason": None})
    storage.merge(storage.uri_for(lake.settings, storage.PREDICTIONS), storage.PREDICTIONS,
                  pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS]), ["prediction_id"])
    return rows


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lk = standard_lake(tmp_path_factory.mktemp("api") / "lake", api_token=TOKEN)
    _predictions(lk)
    return lk


@pytest.fixture(scope="module")
def client(lake):
    with TestClient(create_app(lake.settings)) as c:
        yield c


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def ndjson_rows(resp) -> dict[str, bytes]:
    out = {}
    for line in resp.text.splitlines():
        if line:
            r = json.loads(line)
            assert r["key"] not in out
            out[r["key"]] = base64.b64decode(r["value"])
    return out


def arrow_rows(resp) -> tuple[dict[str, bytes], dict]:
    t = pa.ipc.open_stream(resp.content).read_all()
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    return dict(zip(t.column("key").to_pylist(), t.column("value").to_pylist())), meta


# --- health and auth -----------------------------------------------------------------------------
def test_healthz_is_open(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["auth"] == "bearer"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
@pytest.mark.parametrize("method, url", [("get", "/v1/partitions"), ("get", "/v1/predictions"),
                                         ("get", "/v1/woven-snapshots?partition_id=P0&timepoint=2026-01-02T00:00:00Z"),
                                         ("post", "/v1/recoveries")])
def test_auth_is_required(client, headers, method, url):
    kw = {"json": {"partition_id": "P0", "timepoint": "2026-01-02T00:00:00Z"}} if method == "post" else {}
    r = getattr(client, method)(url, headers=headers, **kw)
    assert r.status_code == 401
    assert r.json()["error"] == "Unauthorized" and "Bearer" in r.headers["www-authenticate"]


def test_no_token_configured_refuses_unless_insecure(lake):
    s = Settings(lake=lake.settings.lake)
    with TestClient(create_app(s)) as c:
        r = c.get("/v1/partitions", headers=AUTH)
        assert r.status_code == 503 and "WEAVER_API_TOKEN" in r.json()["message"]
        assert c.get("/healthz").json()["auth"] == "disabled"
    with TestClient(create_app(s, insecure=True)) as c:
        assert c.get("/v1/partitions").status_code == 200


def test_openapi_is_published(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/woven-snapshots", "/v1/recoveries", "/v1/predictions", "/v1/partitions", "/healthz"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# --- woven snapshots -----------------------------------------------------------------------------
def test_woven_snapshot_rows_ndjson_equal_oracle(client, lake):
    at = lake.ts_of(75)
    tp = lake.ts_of(60)
    r = client.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": iso(at)}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    # Rows of the woven snapshot itself (as of its timepoint), not a recovery at `at`.
    assert ndjson_rows(r) == lake.expected("P0", tp)
    assert r.headers["x-weaver-weave-id"] == weave_id_of("pred-P0")
    assert r.headers["x-weaver-timepoint"] == tp.isoformat()
    assert "x-next-cursor" not in r.headers


def test_woven_snapshot_arrow_and_json_and_accept(client, lake):
    w = lake.weaves[weave_id_of("pred-P0")]
    at = lake.ts_of(100)
    tp = lake.ts_of(90)
    q = {"partition_id": w["left"], "timepoint": iso(at)}
    rows, meta = arrow_rows(client.get("/v1/woven-snapshots", params={**q, "format": "arrow"}, headers=AUTH))
    assert rows == lake.expected(w["left"], tp) and meta["weave_id"] == w["weave_id"]
    r = client.get("/v1/woven-snapshots", params=q, headers={**AUTH, "Accept": "application/vnd.apache.arrow.stream"})
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert arrow_rows(r)[0] == rows
    j = client.get("/v1/woven-snapshots", params={**q, "format": "json"}, headers=AUTH).json()
    assert {x["key"]: base64.b64decode(x["value"]) for x in j["rows"]} == rows
    assert j["weave_id"] == w["weave_id"] and j["woven_partition_ids"] == [w["left"]] and j["next_cursor"] is None


@pytest.mark.parametrize("accept, media", [
    ("application/json;q=0.1, application/x-ndjson", "application/x-ndjson"),
    ("application/vnd.apache.arrow.stream;q=0, application/json", "application/json"),
    ("application/x-ndjson;q=0.5, application/vnd.apache.arrow.stream;q=0.9", "application/vnd.apache.arrow.stream"),
    ("text/html, application/x-ndjson;q=0.8, */*;q=0.1", "application/x-ndjson"),
    ("text/html", "application/x-ndjson"),  # nothing this API serves: the endpoint's default
])
def test_accept_weights_choose_the_format(client, lake, accept, media):
    """Accept is read with its weights (RFC 9110): the first listed media type used to win, so a
    client saying "JSON only if nothing else" got JSON."""
    w = lake.weaves[weave_id_of("pred-P0")]
    q = {"partition_id": w["left"], "timepoint": iso(lake.ts_of(100))}
    r = client.get("/v1/woven-snapshots", params=q, headers={**AUTH, "Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].split(";")[0] == media, (r.status_code, r.headers)


def test_woven_snapshot_pagination(client, lake):
    at = lake.ts_of(119)
    want = lake.expected("P0", lake.ts_of(90))
    got, cursor, pages = {}, None, 0
    while True:
        params = {"partition_id": "P0", "timepoint": iso(at), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/woven-snapshots", params=params, headers=AUTH)
        assert r.status_code == 200 and int(r.headers["x-row-count"]) <= 2
        page = ndjson_rows(r)
        assert not set(page) & set(got)
        got.update(page)
        pages += 1
        cursor = r.headers.get("x-next-cursor")
        if not cursor:
            break
    assert got == want and pages == (len(want) + 1) // 2


def test_cursor_is_an_exclusive_key_bound(client, lake):
    at = lake.ts_of(119)
    want = lake.expected("P0", lake.ts_of(90))
    r = client.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": iso(at), "cursor": "k1"},
                   headers=AUTH)
    assert r.status_code == 200 and ndjson_rows(r) == {k: v for k, v in want.items() if k > "k1"}


def test_timepoint_edge_forms(client, lake):
    q = {"partition_id": "P0"}
    # RFC 3339 forms Python's fromisoformat would not take, and instants before/after any data.
    for tp, status in (("2026-01-01t03:00:00z", 200), ("2026-01-01T03:00:60+00:00", 200),
                       ("0000-01-01T00:00:00Z", 404), ("0001-01-01T00:00:00+05:00", 404),
                       ("9999-12-31T23:59:59-05:00", 200)):
        r = client.get("/v1/woven-snapshots", params={**q, "timepoint": tp}, headers=AUTH)
        assert r.status_code == status, (tp, r.text)


def test_woven_snapshot_below_threshold_is_404(client, lake):
    w = lake.weaves[weave_id_of("pred-P2")]  # confidence 0.5
    q = {"partition_id": "P2", "timepoint": iso(lake.ts_of(119))}
    assert client.get("/v1/woven-snapshots", params=q, headers=AUTH).status_code == 404
    r = client.get("/v1/woven-snapshots", params={**q, "confidence_threshold": 0.5}, headers=AUTH)
    assert r.status_code == 200 and r.headers["x-weaver-weave-id"] == w["weave_id"]


@pytest.mark.parametrize("params, status, error", [
    ({"partition_id": "P0", "timepoint": "2026-01-01T12:00:00"}, 400, "InvalidTimepointError"),
    ({"partition_id": "P0", "timepoint": "yesterday"}, 400, "InvalidTimepointError"),
    ({"partition_id": "P0", "timepoint": "2026-01-01T12:00:00Z", "confidence_threshold": 1.5}, 422, None),
    ({"partition_id": "P0", "timepoint": "2026-01-01T12:00:00Z", "confidence_threshold": -0.1}, 422, None),
    ({"partition_id": "P9", "timepoint": "2026-01-01T12:00:00Z"}, 404, "UnknownPartitionError"),
    ({"partition_id": "../../etc/passwd", "timepoint": "2026-01-01T12:00:00Z"}, 422, None),
    ({"partition_id": "P0~0123abcd~L", "timepoint": "2026-01-01T12:00:00Z"}, 404, "UnknownWeaveError"),
    ({"partition_id": "P0", "timepoint": "2026-01-02T12:00:00Z", "weave_id": "0123abcd"}, 404, "UnknownWeaveError"),
    ({"partition_id": "P0", "timepoint": "2026-01-02T12:00:00Z", "limit": MAX_PAGE + 1}, 422, None),
    ({"partition_id": "P0", "timepoint": "2026-01-02T12:00:00Z", "limit": 0}, 422, None),
    ({"partition_id": "P0", "timepoint": "2026-01-02T12:00:00Z", "format": "xml"}, 422, None),
    ({"timepoint": "2026-01-02T12:00:00Z"}, 422, None),
    ({"partition_id": "P0", "timepiont": "2026-01-02T12:00:00Z"}, 400, "InvalidParameterError"),
    ({"partition_id": "P0", "timepoint": "2026-01-02T12:00:00Z", "confidence": 0.5}, 400, "InvalidParameterError"),
])
def test_woven_snapshot_bad_input(client, params, status, error):
    r = client.get("/v1/woven-snapshots", params=params, headers=AUTH)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["message"]
    if error:
        assert body["error"] == error


# --- recoveries ----------------------------------------------------------------------------------
def test_recovery_summary_and_rows(client, lake):
    at = lake.ts_of(80)
    body = {"partition_id": "P0", "timepoint": iso(at)}
    r = client.post("/v1/recoveries", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["path"] == "woven" and s["weave_id"] == weave_id_of("pred-P0")
    assert s["rows"] == len(lake.expected("P0", at)) and s["changes_replayed"] >= 0
    assert {"path", "source", "changes_replayed", "rows", "elapsed_ms"} <= set(s)
    rows = ndjson_rows(client.post("/v1/recoveries", params={"format": "ndjson"}, json=body, headers=AUTH))
    assert rows == lake.expected("P0", at)
    a, meta = arrow_rows(client.post("/v1/recoveries", params={"format": "arrow"}, json=body, headers=AUTH))
    assert a == rows and meta["path"] == "woven"
    std = client.post("/v1/recoveries", json={**body, "confidence_threshold": 1.0}, headers=AUTH).json()
    assert std["path"] == "standard" and std["rows"] == s["rows"]


def test_recovery_of_woven_child_and_real_split(client, lake):
    w = lake.weaves[weave_id_of("pred-P0")]
    at = lake.ts_of(119)
    for pid in (w["right"], "P1", "P3"):
        r = client.post("/v1/recoveries", params={"format": "ndjson"}, json={"partition_id": pid, "timepoint": iso(at)},
                        headers=AUTH)
        assert r.status_code == 200 and ndjson_rows(r) == lake.expected(pid, at)


def test_recovery_rollback_writes_new_table_only(client, lake):
    from deltalake import DeltaTable

    from tests.oracle import rows_to_dict

    s = lake.settings
    before = {n: storage.version_of(storage.uri_for(s, n)) for n in storage.SCHEMAS}
    at = lake.ts_of(90)
    r = client.post("/v1/recoveries", json={"partition_id": "P2", "timepoint": iso(at), "mode": "rollback"},
                    headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert out.startswith(str(lake.settings.lake)) and "/recoveries/" in out
    assert rows_to_dict(DeltaTable(out).to_pyarrow_table()) == lake.expected("P2", at)
    assert {n: storage.version_of(storage.uri_for(s, n)) for n in storage.SCHEMAS} == before


@pytest.mark.parametrize("body, status, error", [
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00"}, 400, "InvalidTimepointError"),
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", "confidence_threshold": 2}, 422, None),
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", "mode": "drop"}, 422, None),
    ({"partition_id": "Q7", "timepoint": "2026-01-01T10:00:00Z"}, 404, "UnknownPartitionError"),
    ({"partition_id": "P0~ffffffff~R", "timepoint": "2026-01-01T10:00:00Z"}, 404, "UnknownWeaveError"),
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", "out": "/etc"}, 422, None),
    ({"partition_id": "P0"}, 422, None),
    # not numbers: a string and a boolean (a lenient parser read them as 0.5 and 1.0)
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", "confidence_threshold": "0.5"}, 422, None),
    ({"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", "confidence_threshold": True}, 422, None),
    ({"partition_id": 7, "timepoint": "2026-01-01T10:00:00Z"}, 422, None),
])
def test_recovery_bad_input(client, body, status, error):
    r = client.post("/v1/recoveries", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["message"]
    if error:
        assert r.json()["error"] == error


@pytest.mark.parametrize("url", ["/v1/recoveries", "/v1/whatif"])
def test_a_body_giving_a_member_twice_is_refused(client, url):
    """JSON parsers keep the last of two equal members: {"confidence_threshold": 0.9, ...: 0.1}
    was read as 0.1 without a word. Refused with 400, nothing run."""
    raw = ('{"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z", '
           '"confidence_threshold": 0.9, "confidence_threshold": 0.1}')
    if url == "/v1/whatif":
        raw = '{"partition_id": "P0", "at": "2026-01-01T10:00:00Z", "until": "2026-01-01T11:00:00Z", "until": "x"}'
    r = client.post(url, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "InvalidParameterError" and "more than once" in r.json()["message"]
    # An integer is a number: confidence 1 is accepted as 1.0.
    r = client.post("/v1/recoveries", json={"partition_id": "P0", "timepoint": "2026-01-01T10:00:00Z",
                                            "confidence_threshold": 1}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_recovery_child_before_split_is_400(client, lake):
    w = lake.weaves[weave_id_of("pred-P0")]
    r = client.post("/v1/recoveries", json={"partition_id": w["left"], "timepoint": iso(lake.ts_of(5))}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"] == "InvalidTimepointError"


# --- predictions and partitions ------------------------------------------------------------------
def test_predictions_filter_and_pages(client):
    r = client.get("/v1/predictions", headers=AUTH)
    assert [i["prediction_id"] for i in r.json()["items"]] == ["pred-0", "pred-1", "pred-2", "pred-3"]
    r = client.get("/v1/predictions", params={"partition_id": "P0", "min_probability": 0.5}, headers=AUTH)
    assert [i["prediction_id"] for i in r.json()["items"]] == ["pred-0"]
    seen, cursor = [], None
    while True:
        r = client.get("/v1/predictions", params={"limit": 3, **({"cursor": cursor} if cursor else {})}, headers=AUTH)
        seen += [i["prediction_id"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == ["pred-0", "pred-1", "pred-2", "pred-3"]
    r = client.get("/v1/predictions", params={"run_from": "2026-01-01T01:00:00Z", "run_to": "2026-01-01T02:00:00+00:00"},
                   headers=AUTH)
    assert [i["prediction_id"] for i in r.json()["items"]] == ["pred-1", "pred-2"]
    assert client.get("/v1/predictions", params={"partition_id": "nope"}, headers=AUTH).status_code == 404
    assert client.get("/v1/predictions", params={"run_from": "2026-01-01"}, headers=AUTH).status_code == 400
    assert client.get("/v1/predictions", params={"limit": 5000}, headers=AUTH).status_code == 422


def test_partitions_real_and_woven(client, lake):
    items = client.get("/v1/partitions", headers=AUTH).json()["items"]
    real = {i["partition_id"]: i for i in items if i["kind"] == "real"}
    woven = {i["partition_id"]: i for i in items if i["kind"] == "woven"}
    assert set(real) == {"P0", "P1", "P2", "P3"} and not real["P1"]["active"]
    w = lake.weaves[weave_id_of("pred-P0")]
    assert woven[w["left"]]["key_hi"] == "k2" and woven[w["right"]]["key_lo"] == "k2"
    assert woven[w["left"]]["parent_id"] == "P0" and woven[w["left"]]["confidence"] == 0.9
    act = client.get("/v1/partitions", params={"kind": "real", "active_only": True}, headers=AUTH).json()["items"]
    assert {i["partition_id"] for i in act} == {"P0", "P2", "P3"}
    page = client.get("/v1/partitions", params={"limit": 3}, headers=AUTH).json()
    rest = client.get("/v1/partitions", params={"cursor": page["next_cursor"]}, headers=AUTH).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    assert [i["partition_id"] for i in page["items"] + rest["items"]] == sorted(set(real) | set(woven))


def test_as_of_before_the_woven_tier_existed_is_404(client, lake):
    """An as_of earlier than woven_snapshots' first commit used to be answered with version 0's
    rows (delta-rs falls back to it): the tier did not exist then, so nothing was woven - a 404
    for the snapshot, the standard path for a recovery (whose rows are the oracle's)."""
    at = lake.ts_of(75)
    r = client.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": iso(at),
                                                 "as_of": "2000-01-01T00:00:00Z"}, headers=AUTH)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "NoDataError" and "did not exist yet" in r.json()["message"]
    from weaver.recover import recover

    rec = recover(lake.settings, "P0", at, as_of="2000-01-01T00:00:00Z")
    assert rec.path == "standard" and rows_to_dict(rec.table) == lake.expected("P0", at)
    # A later as_of still answers (the woven tier as it stands).
    ok = client.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": iso(at),
                                                  "as_of": "2999-01-01T00:00:00Z"}, headers=AUTH)
    assert ok.status_code == 200 and ndjson_rows(ok) == lake.expected("P0", lake.ts_of(60))


def test_non_latin1_keys_page_through_percent_encoded_headers(tmp_path):
    """Keys outside Latin-1 used to give a 500 (X-Next-Cursor and X-Weaver-Split-Key carried them
    raw). Header values are percent-encoded (UTF-8); the cursor comes back in that form, from the
    header or from JSON next_cursor, and the pages walk exactly the oracle's rows."""
    from urllib.parse import unquote

    from tests.lakes import add_weave, build_lake

    keys = ["a", "b", "kж1", "kж2", "k5 %41", "k5%", "k9", "z", "kÿ", "k\u4e2d"]
    changes = []
    for i, k in enumerate(keys * 2):
        seq = i + 1
        changes.append({"seq": seq, "ts": T0 + timedelta(minutes=seq), "partition_id": "P0" if k < "k4" else "P1",
                        "key": k, "op": "PUT", "value": f"{k}@{seq}".encode(), "value_bytes": None})
        changes[-1]["value_bytes"] = len(changes[-1]["value"])
    lake = build_lake(tmp_path / "lake", changes, None, api_token=TOKEN)
    w = add_weave(lake, "P1", "kж2", 0.9, [lake.ts_of(15)])
    at = lake.ts_of(20)
    with TestClient(create_app(lake.settings)) as c:
        for fmt in ("ndjson", "json"):
            for name, call in (
                    ("recoveries", lambda p: c.post("/v1/recoveries", params=p, headers=AUTH,
                                                    json={"partition_id": "P1", "timepoint": iso(at)})),
                    ("woven", lambda p: c.get("/v1/woven-snapshots", headers=AUTH,
                                              params={**p, "partition_id": "P1", "timepoint": iso(at)}))):
                if name == "recoveries" and fmt == "json":
                    continue  # its JSON is the summary; its row walk (next_cursor, items) is in tests/test_api_paging.py
                want = lake.expected("P1", at if name == "recoveries" else lake.ts_of(15))
                got, cursor = {}, None
                while True:
                    p = {"format": fmt, "limit": 1, **({"cursor": cursor} if cursor else {})}
                    r = call(p)
                    assert r.status_code == 200, (name, fmt, r.text)
                    assert r.headers["x-next-cursor"].isascii() if "x-next-cursor" in r.headers else True
                    if name == "woven":
                        assert unquote(r.headers["x-weaver-split-key"]) == "kж2" == w["split_key"]
                    if fmt == "json":
                        body = r.json()
                        page = {x["key"]: base64.b64decode(x["value"]) for x in body["rows"]}
                        assert body["next_cursor"] == r.headers.get("x-next-cursor")
                    else:
                        page = ndjson_rows(r)
                    assert len(page) == 1 and not set(page) & set(got)
                    got.update(page)
                    cursor = r.headers.get("x-next-cursor")
                    if not cursor:
                        break
                    assert cursor.startswith("%~") and unquote(cursor.split("~", 2)[2]) == max(got)  # pinned: %~<pin>~<key>
                assert got == want, (name, fmt)


@pytest.mark.parametrize("tp", ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                                "0001-01-01T00:00:00.000500Z"])
def test_recovery_at_the_earliest_instants_answers_with_an_empty_state(client, lake, tp):
    """Clamped to (or at) the earliest representable instant, a recovery used to crash with an
    OverflowError (a plain-text 500): it precedes every change, so the state is empty."""
    r = client.post("/v1/recoveries", json={"partition_id": "P0", "timepoint": tp}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "standard" and r.json()["rows"] == 0 == len(lake.expected("P0", T0 - timedelta(1)))
    r = client.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": tp}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "NoDataError", r.text


def test_unreadable_change_log_and_unexpected_errors_leave_as_json(tmp_path, monkeypatch):
    """A damaged change-log data file was a plain-text 500 with a traceback in the server: it is a
    JSON CorruptTableError (500). Any other unexpected exception leaves as JSON too, with no stack trace."""
    import random
    from pathlib import Path

    from tests.lakes import build_lake, random_changes

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(8), 50, None), None, api_token=TOKEN)
    (f,) = (Path(lake.settings.lake) / "changelog").glob("*.parquet")
    f.write_bytes(b"not parquet" * 20)
    body = {"partition_id": "P0", "timepoint": iso(lake.ts_of(40))}
    with TestClient(create_app(lake.settings), raise_server_exceptions=False) as c:
        r = c.post("/v1/recoveries", json=body, headers=AUTH)
        assert r.status_code == 500 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["error"] == "CorruptTableError" and "changelog" in r.json()["message"]
        # The body names the table, not where the server keeps the lake (the server's log has it).
        lake_dir = str(Path(lake.settings.lake).resolve())
        assert lake_dir not in r.text and str(tmp_path) not in r.text, r.text
        assert "<lake>/changelog" in r.json()["message"], r.text

        import weaver.api.routes as routes

        def boom(*a, **k):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(routes, "recover", boom)
        r = c.post("/v1/recoveries", json=body, headers=AUTH)
        assert r.status_code == 500 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["error"] == "InternalServerError" and r.json()["message"]
        assert "Traceback" not in r.text and "secret internals" not in r.text
