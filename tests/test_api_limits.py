"""API limits (issue 14): rows per page capped by settings; past the configured number of concurrent
recoveries a request gets 429 with Retry-After (an unknown partition still gets 404), and is served again
once a slot is free. The pages of one recovery share one computed result."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from fastapi.testclient import TestClient

from tests.lakes import standard_lake


def test_recoveries_past_the_limit_get_429_with_retry_after_and_pages_are_capped(tmp_path):
    from weaver.api import create_app

    lake = standard_lake(tmp_path / "lake")
    s = replace(lake.settings, api_max_recoveries=1, api_max_page_rows=3)
    at = lake.ts_of(100)
    body = {"partition_id": "P3", "timepoint": at.isoformat()}
    app = create_app(s, insecure=True)
    with TestClient(app) as c:
        assert app.state.recovery_slots.acquire(blocking=False)  # one recovery in flight: the limit
        try:
            busy = c.post("/v1/recoveries", json=body)
            assert busy.status_code == 429, busy.text
            assert busy.headers["Retry-After"] == "1"
            assert busy.json()["error"] == "TooManyRequestsError"
            # A request that could never succeed is told so (404), not to come back later.
            unknown = c.post("/v1/recoveries", json={**body, "partition_id": "P404"})
            assert unknown.status_code == 404 and unknown.json()["error"] == "UnknownPartitionError", unknown.text
        finally:
            app.state.recovery_slots.release()
        ok = c.post("/v1/recoveries", json=body)
        assert ok.status_code == 200 and ok.json()["rows"] == len(lake.expected("P3", at))

        # a page holds at most api_max_page_rows rows whatever `limit` asks; the cursor walks the rest
        cache = app.state.recovery_cache
        computed = cache.misses
        got, cursor, pages = {}, None, 0
        while True:
            params = {"format": "ndjson", "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = c.post("/v1/recoveries", params=params, json=body)
            lines = [json.loads(x) for x in page.text.splitlines() if x]
            assert page.status_code == 200 and len(lines) <= 3
            for r in lines:
                assert r["key"] not in got
                got[r["key"]] = base64.b64decode(r["value"])
            pages += 1
            cursor = page.headers.get("X-Next-Cursor")
            if not cursor:
                break
        assert got == lake.expected("P3", at) and pages >= len(got) // 3
        # The pages reused the recovery the summary request computed: none recovered again.
        assert cache.misses == computed and cache.hits >= pages

        # A new commit to the change log (here one adding no row) is a new state of the lake: the
        # same request is recovered afresh, never served from the old state's entry.
        from deltalake import DeltaTable, write_deltalake

        from weaver.core import storage

        log_uri = storage.uri_for(s, storage.CHANGELOG)
        write_deltalake(log_uri, DeltaTable(log_uri).to_pyarrow_table().slice(0, 0), mode="append")
        again = c.post("/v1/recoveries", json=body)
        assert again.status_code == 200 and again.json()["rows"] == len(lake.expected("P3", at))
        assert cache.misses == computed + 1

    # Without the cache every page recovers again, with the same rows.
    app = create_app(replace(s, api_recovery_cache_mb=0), insecure=True)
    with TestClient(app) as c:
        page = c.post("/v1/recoveries", params={"format": "ndjson"}, json=body)
        assert page.status_code == 200 and page.headers.get("X-Next-Cursor")
        assert len(app.state.recovery_cache) == 0 and app.state.recovery_cache.misses == 0
