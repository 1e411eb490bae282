"""A woven child exists only from its weave's split_ts: the woven-snapshots endpoint, `woven_snapshot`
and `recover` apply the same rule (docs/api.md, "Definition").

The endpoint used to answer a child before its split_ts with another weave's rows (any weave whose
source range covers the child's is a candidate), where `recover` refused the same request with
InvalidTimepointError. Expectations are the brute-force fold of the raw change log (tests/oracle.py).
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from tests.lakes import add_weave, standard_lake, weave_id_of
from tests.oracle import fold


def _ndjson(resp) -> dict[str, bytes]:
    return {r["key"]: base64.b64decode(r["value"]) for r in map(json.loads, resp.text.splitlines()) if r}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lk = standard_lake(tmp_path_factory.mktemp("woven_child") / "lake")
    # pred-P0 (from standard_lake) splits P0 at k2 with timepoints ts_of(30), ts_of(60), ts_of(90).
    # A second weave of P0 splits it at k1 from ts_of(70): its children exist from ts_of(70) only.
    add_weave(lk, "P0", "k1", 0.9, [lk.ts_of(70), lk.ts_of(80)], prediction_id="pred-P0-k1")
    # A third splits P0 at k3 from ts_of(62) but was first woven at ts_of(80) (a timepoint grid after
    # the split): registered with the earlier split_ts.
    row = add_weave(lk, "P0", "k3", 0.9, [lk.ts_of(80)], prediction_id="pred-P0-k3")
    from weaver.core import storage

    cat = {k: v for k, v in row.items() if k not in ("left", "right")}
    cat.update(split_ts=lk.ts_of(62), window_start=lk.ts_of(62))
    storage.merge(storage.uri_for(lk.settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG,
                  pa.Table.from_pylist([cat], schema=storage.SCHEMAS[storage.WOVEN_CATALOG]), ["weave_id"])
    lk.weaves[row["weave_id"]]["split_ts"] = lk.ts_of(62)
    assert lk.ts_of(60) < lk.ts_of(62) < lk.ts_of(65) < lk.ts_of(70) < lk.ts_of(75) < lk.ts_of(80) < lk.ts_of(85) < lk.ts_of(90)
    return lk


@pytest.fixture(scope="module")
def client(lake):
    from weaver.api import create_app

    with TestClient(create_app(lake.settings, insecure=True)) as c:
        yield c


def _child(lake, prediction_id: str, side: str) -> str:
    return lake.weaves[weave_id_of(prediction_id)]["left" if side == "L" else "right"]


@pytest.mark.parametrize("side", ["L", "R"])
@pytest.mark.parametrize("as_of", [None, "2999-01-01T00:00:00Z"])
def test_child_before_its_split_is_refused_by_the_api_and_by_recover(client, lake, side, as_of):
    from weaver.core.errors import InvalidTimepointError
    from weaver.recover import recover, woven_snapshot

    child = _child(lake, "pred-P0-k1", side)
    before = lake.ts_of(65)  # pred-P0 has a timepoint (ts_of(60)) covering the child's range before it
    params = {"partition_id": child, "timepoint": before.isoformat(), **({"as_of": as_of} if as_of else {})}
    r = client.get("/v1/woven-snapshots", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "InvalidTimepointError" and "exists only from its split" in r.json()["message"]
    with pytest.raises(InvalidTimepointError, match="exists only from its split"):
        woven_snapshot(lake.settings, child, before, as_of=as_of)
    with pytest.raises(InvalidTimepointError, match="exists only from its split"):
        recover(lake.settings, child, before, as_of=as_of)
    rec = client.post("/v1/recoveries", json={"partition_id": child, "timepoint": before.isoformat()})
    assert rec.status_code == 400 and rec.json()["error"] == "InvalidTimepointError"


@pytest.mark.parametrize("side", ["L", "R"])
@pytest.mark.parametrize("q, tp", [(70, 70), (75, 70), (85, 80)])
def test_child_at_or_after_its_split_serves_the_fold_of_its_range(client, lake, side, q, tp):
    child = _child(lake, "pred-P0-k1", side)
    lo, hi = ("", "k1") if side == "L" else ("k1", "k4")
    at, want_tp = lake.ts_of(q), lake.ts_of(tp)
    for as_of in (None, "2999-01-01T00:00:00Z"):
        params = {"partition_id": child, "timepoint": at.isoformat(), **({"as_of": as_of} if as_of else {})}
        r = client.get("/v1/woven-snapshots", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["x-weaver-timepoint"] == want_tp.isoformat()
        assert _ndjson(r) == fold(lake.changes, key_lo=lo, key_hi=hi, at=want_tp)


def test_child_is_never_served_a_snapshot_from_before_its_split(client, lake):
    """pred-P0-k3's split is at ts_of(62), its first woven timepoint ts_of(80). At ts_of(65) the
    only covering snapshot at or before it is pred-P0's at ts_of(60), before the child existed:
    not served (404), now or as of any version. Recovery at ts_of(65) is valid and equals the fold
    there. From ts_of(70) pred-P0-k1's snapshot (it covers all of P0) serves it."""
    from tests.oracle import rows_to_dict
    from weaver.recover import recover

    child = _child(lake, "pred-P0-k3", "R")
    at = lake.ts_of(65)
    for extra in ({}, {"as_of": "2999-01-01T00:00:00Z"}):
        r = client.get("/v1/woven-snapshots", params={"partition_id": child, "timepoint": at.isoformat(), **extra})
        assert r.status_code == 404 and r.json()["error"] == "NoDataError", r.text
        assert "at or after its split" in r.json()["message"]
    rec = recover(lake.settings, child, at)
    assert rows_to_dict(rec.table) == fold(lake.changes, key_lo="k3", key_hi="k4", at=at)
    for q, tp in ((lake.ts_of(70), lake.ts_of(70)), (lake.ts_of(80) + timedelta(seconds=1), lake.ts_of(80))):
        r = client.get("/v1/woven-snapshots", params={"partition_id": child, "timepoint": q.isoformat()})
        assert r.status_code == 200 and r.headers["x-weaver-timepoint"] == tp.isoformat(), r.text
        assert _ndjson(r) == fold(lake.changes, key_lo="k3", key_hi="k4", at=tp)
