"""The query API mounted in Airflow 3's API server through plugins/weaver_plugin.py (fastapi_apps).

Airflow reads its configuration once per interpreter, so the API-server app is built in-process
in a fresh interpreter (AIRFLOW_HOME in tmp_path, plugins folder = plugins/) and driven with
FastAPI's TestClient there; the child prints one JSON object of observations checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lakes import standard_lake, weave_id_of

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "airflow-mount-token"

CHILD = r"""
import base64, json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

at, child_id = sys.argv[1], sys.argv[2]
app = create_app("core")
auth = {"Authorization": "Bearer %s" % sys.argv[3]}
obs = {}
with TestClient(app) as c:
    obs["mounted"] = sorted(getattr(r, "path", "") for r in app.routes if getattr(r, "path", "") == "/weaver")
    obs["healthz"] = c.get("/weaver/healthz").json()
    r = c.get("/weaver/v1/partitions", params={"kind": "real"})
    obs["no_token"] = [r.status_code, r.json()]
    r = c.get("/weaver/v1/partitions", params={"kind": "real"}, headers={"Authorization": "Bearer nope"})
    obs["bad_token"] = r.status_code
    r = c.get("/weaver/v1/partitions", params={"kind": "real"}, headers=auth)
    obs["partitions"] = [r.status_code, sorted(i["partition_id"] for i in r.json()["items"])]
    r = c.post("/weaver/v1/recoveries", params={"format": "ndjson"}, headers=auth,
               json={"partition_id": child_id, "timepoint": at})
    obs["recovery"] = [r.status_code, r.headers.get("x-weaver-path"),
                       {json.loads(l)["key"]: json.loads(l)["value"] for l in r.text.splitlines() if l}]
    r = c.get("/weaver/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": "2026-01-01T12:00"}, headers=auth)
    obs["naive"] = [r.status_code, r.json()]
    obs["openapi"] = sorted(c.get("/weaver/openapi.json").json()["paths"])
print("OBS=" + json.dumps(obs))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_plugin_mounts_api_with_token(tmp_path):
    lake = standard_lake(tmp_path / "lake")
    w = lake.weaves[weave_id_of("pred-P0")]
    at = lake.ts_of(100)
    home = tmp_path / "airflow"
    home.mkdir()
    env = {**os.environ,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "no_dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
           "SCARF_ANALYTICS": "false",
           "WEAVER_LAKE": lake.settings.lake,
           "WEAVER_API_TOKEN": TOKEN,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHILD, at.isoformat(), w["right"], TOKEN], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OBS=")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    obs = json.loads(lines[-1][4:])
    assert obs["mounted"] == ["/weaver"]
    assert obs["healthz"]["status"] == "ok" and obs["healthz"]["auth"] == "bearer"
    assert obs["no_token"][0] == 401 and obs["no_token"][1]["error"] == "Unauthorized"
    assert obs["bad_token"] == 401
    assert obs["partitions"] == [200, ["P0", "P1", "P2", "P3"]]
    status, path, rows = obs["recovery"]
    assert status == 200 and path == "woven"
    import base64

    assert {k: base64.b64decode(v) for k, v in rows.items()} == lake.expected(w["right"], at)
    assert obs["naive"][0] == 400 and obs["naive"][1]["error"] == "InvalidTimepointError"
    assert "/v1/recoveries" in obs["openapi"]
