"""CLI `recover`, `query`, `serve` (typer CliRunner on weaver.cli.app; one real uvicorn subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.lakes import standard_lake, weave_id_of
from tests.oracle import rows_to_dict
from tests.procs import free_port
from weaver.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return standard_lake(tmp_path_factory.mktemp("cli") / "lake")


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def run(*args: str):
    return runner.invoke(app, list(args), env={"WEAVER_API_TOKEN": ""})


def test_recover_woven_json_and_parquet(lake, tmp_path):
    at = lake.ts_of(80)
    out = tmp_path / "p0.parquet"
    r = run("recover", "--partition", "P0", "--at", iso(at), "--out", str(out), "--lake", lake.settings.lake, "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["path"] == "woven" and obj["source"].startswith(weave_id_of("pred-P0"))
    assert {"path", "source", "changes_replayed", "rows", "elapsed_ms"} <= set(obj)
    t = pq.read_table(out)
    assert t.column_names == ["key", "value"]
    assert rows_to_dict(t) == lake.expected("P0", at) and obj["rows"] == t.num_rows


def test_recover_threshold_forces_standard(lake, tmp_path):
    at = lake.ts_of(80)
    out = tmp_path / "s.parquet"
    r = run("recover", "--partition", "P0", "--at", iso(at), "--confidence-threshold", "0.95", "--out", str(out),
            "--lake", lake.settings.lake, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["path"] == "standard"
    assert rows_to_dict(pq.read_table(out)) == lake.expected("P0", at)


def test_recover_woven_child_human_output(lake, tmp_path):
    w = lake.weaves[weave_id_of("pred-P0")]
    at = lake.ts_of(119)
    out = tmp_path / "c.parquet"
    r = run("recover", "--partition", w["left"], "--at", iso(at), "--out", str(out), "--lake", lake.settings.lake)
    assert r.exit_code == 0, r.output
    assert "woven path" in r.stdout
    assert rows_to_dict(pq.read_table(out)) == lake.expected(w["left"], at)


def test_recover_rollback(lake, tmp_path):
    from deltalake import DeltaTable

    at = lake.ts_of(60)
    out = tmp_path / "rolled"
    r = run("recover", "--partition", "P3", "--at", iso(at), "--mode", "rollback", "--out", str(out),
            "--lake", lake.settings.lake, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["output"] == str(out)
    assert rows_to_dict(DeltaTable(str(out)).to_pyarrow_table()) == lake.expected("P3", at)


@pytest.mark.parametrize("args, needle", [
    (["--partition", "P0", "--at", "2026-01-01T12:00:00"], "timezone"),
    (["--partition", "nope", "--at", "2026-01-01T12:00:00Z", "--out", "x.parquet"], "UnknownPartitionError"),
    (["--partition", "P0", "--at", "2026-01-01T12:00:00Z"], "--out FILE.parquet"),
    (["--partition", "P0", "--at", "2026-01-01T12:00:00Z", "--out", "x.csv"], "--out FILE.parquet"),
    (["--partition", "P0", "--at", "2026-01-01T12:00:00Z", "--mode", "undo", "--out", "x.parquet"], "--mode"),
    (["--partition", "P0", "--at", "2026-01-01T12:00:00Z", "--confidence-threshold", "3", "--out", "x.parquet"],
     "confidence-threshold"),
    (["--partition", "P0", "--at", "2026-01-01T12:00:00Z", "--out", "gs://bucket/x.parquet"], "s3://bucket/key"),
])
def test_recover_bad_input(lake, tmp_path, args, needle):
    r = run("recover", *args, "--lake", lake.settings.lake)
    assert r.exit_code == 2
    assert needle in r.output
    assert not (tmp_path / "x.parquet").exists()


def test_query_json_and_human(lake):
    at = lake.ts_of(70)
    tp = lake.ts_of(60)
    r = run("query", "--partition", "P0", "--at", iso(at), "--lake", lake.settings.lake, "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["weave_id"] == weave_id_of("pred-P0") and obj["confidence"] == 0.9
    assert obj["timepoint"] == tp.isoformat() and obj["rows"] == len(lake.expected("P0", tp))
    r = run("query", "--partition", "P0", "--at", iso(at), "--lake", lake.settings.lake)
    assert r.exit_code == 0 and weave_id_of("pred-P0") in r.stdout


def test_query_none_above_threshold(lake):
    r = run("query", "--partition", "P2", "--at", iso(lake.ts_of(119)), "--lake", lake.settings.lake, "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "NoDataError"
    r = run("query", "--partition", "P0", "--at", iso(lake.ts_of(119)), "--weave", "abcdef01", "--lake",
            lake.settings.lake, "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "UnknownWeaveError"


def test_serve_refuses_without_token(lake):
    r = run("serve", "--lake", lake.settings.lake, "--port", "1")
    assert r.exit_code == 2 and "WEAVER_API_TOKEN" in r.output and "--insecure-local" in r.output


@pytest.mark.integration
def test_serve_insecure_local_binds_loopback(lake):
    port = free_port()
    env = {**os.environ, "WEAVER_LAKE": lake.settings.lake}
    env.pop("WEAVER_API_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-c", "from weaver.cli import main; main()", "serve", "--insecure-local",
                             "--host", "0.0.0.0", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert body == {"status": "ok", "version": body["version"], "auth": "disabled"}, proc.poll()
        r = httpx.get(f"http://127.0.0.1:{port}/v1/partitions", params={"kind": "real"}, timeout=10)
        assert r.status_code == 200 and {i["partition_id"] for i in r.json()["items"]} == {"P0", "P1", "P2", "P3"}
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    assert "binds 127.0.0.1 only" in out


def test_recover_out_onto_a_change_log_file_is_refused(lake, tmp_path):
    """The audit's repro: `weaver recover --out <a change-log data file>` replaced it; now exit 2."""
    from pathlib import Path

    log_dir = Path(lake.settings.lake) / "changelog"
    before = {p: p.read_bytes() for p in sorted(log_dir.rglob("*")) if p.is_file()}
    data_file = next(str(p) for p in before if p.suffix == ".parquet")
    r = run("recover", "--partition", "P0", "--at", iso(lake.ts_of(70)), "--out", data_file, "--lake",
            lake.settings.lake, "--json")
    assert r.exit_code == 2, r.output
    assert "inside the lake's own 'changelog' table" in r.output
    assert {p: p.read_bytes() for p in sorted(log_dir.rglob("*")) if p.is_file()} == before
