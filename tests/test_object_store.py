"""Object-store lakes (issue 11.7): the whole loop on an s3:// lake served by a real S3-compatible server.

The server is moto's `moto_server` (PyPI `moto[server]`, pinned in requirements.txt), started by the
module fixture as its own process on 127.0.0.1 with throwaway credentials made here, and stopped
(terminate, then kill, bounded) when the module ends, also after a failure. It runs in its own
process, not as moto's in-process thread: delta-rs holds the GIL while it waits on the network, so
an in-process server would never answer it.

What is checked, each against an independent reference (the oracle fold of tests/oracle.py, or
the same command on a local copy of the lake):
- settings: the lake's policy file is read from S3; the secret never shows in a repr;
- extract / changelog check / run record write their plain files as S3 objects;
- predict on the s3 lake writes the same rows as on a local lake built from the same seed;
- `weaver snapshot` and `weaver weave` (Spark, S3A through hadoop-aws) in their own processes;
  the woven snapshots equal the oracle's fold cut at the split key;
- recovery from the s3 lake: the woven path and the standard path (from the Spark-written base
  snapshot) both return the oracle's rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.lakes import H, assert_matches_oracle, put_predictions
from tests.oracle import fold, rows_to_dict
from weaver.core import storage
from weaver.simulate import SimConfig

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "weaver-test"
CFG = dict(seed=11, partitions=3, days=2, base_rate=60.0, size_threshold_bytes=400_000, write_threshold_per_s=0.5)
CFG_START = SimConfig(**CFG).start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process started in its own session and whatever is left of its group, bounded in time."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # also after the leader exited: a child may linger
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; yields the WEAVER_S3_* environment."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = Path(sys.executable).parent / "moto_server"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text(errors='replace')[-500:]}")
                time.sleep(0.2)
        env = {"WEAVER_S3_ENDPOINT": endpoint, "WEAVER_S3_REGION": "us-east-1",
               "WEAVER_S3_ACCESS_KEY_ID": "test-" + secrets.token_hex(4),
               "WEAVER_S3_SECRET_ACCESS_KEY": secrets.token_hex(16), "WEAVER_S3_ALLOW_HTTP": "true"}
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["WEAVER_S3_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["WEAVER_S3_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            yield env
    finally:
        _stop(proc)


def _simulate(lake: str) -> None:
    from weaver.simulate import simulate

    simulate(lake, SimConfig(**CFG))


def _settings(lake: str, **kw):
    from weaver.core.settings import load_settings

    return load_settings(lake=lake, spark_shuffle_partitions=2, **kw)


def _changes_and_parts(settings) -> tuple[list[dict], dict[str, dict]]:
    changes = storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    parts = {p["partition_id"]: p for p in
             storage.read(storage.uri_for(settings, storage.PARTITIONS), storage.PARTITIONS).to_pylist()}
    return changes, parts


SPARK_STAGES = """
import json, sys
from datetime import datetime
from weaver.core.settings import load_settings
from weaver.core.spark import get_spark
from weaver.pitr import take_snapshots
from weaver.weave import weave
lake, snap_at, at, run_ts = sys.argv[1:5]
s = load_settings(lake=lake)
spark = get_spark(s, "weaver-s3-test")
out = {"snapshot": take_snapshots(spark, s, datetime.fromisoformat(snap_at))}
out["weave"] = weave(spark, s, at=datetime.fromisoformat(at), run_ts=datetime.fromisoformat(run_ts), stage=True)
print(json.dumps(out, default=str))
"""


def _spark_stages(env: dict, lake: str, snap_at, at, run_ts, timeout: float = 600) -> dict:
    """Snapshot at `snap_at`, then weave the run `run_ts` at `at`, with Spark in a process of its own.

    One new process (a JVM with the S3 jars) for both stages: this test process may hold a Spark
    session started for local lakes, and a JVM's classpath cannot grow. The bodies are the ones
    `weaver snapshot` / `weaver weave` call.
    """
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "WEAVER_SPARK_MASTER": "local[2]",
            "WEAVER_SHUFFLE_PARTITIONS": "2", "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-c", SPARK_STAGES, lake, snap_at.isoformat(), at.isoformat(),
                             run_ts.isoformat()], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        _stop(proc)  # the process group: the driver's JVM too, also on a timeout
    assert proc.returncode == 0, f"Spark stages failed: {stdout[-1500:]} {stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.integration
def test_settings_and_plain_files_live_in_the_bucket(s3):
    from weaver.checks.suites import check_changelog
    from weaver.core import objstore
    from weaver.pipeline import extract, write_run_record

    lake = f"s3://{BUCKET}/files"
    _simulate(lake)
    s = _settings(lake)
    # The policy the producer wrote into the bucket decides the thresholds (not the defaults).
    assert s.size_threshold_bytes == CFG["size_threshold_bytes"] and s.remote
    assert s3["WEAVER_S3_SECRET_ACCESS_KEY"] not in repr(s)

    changes, _ = _changes_and_parts(s)
    start = CFG_START + 30 * H
    manifest = extract(s, start=start, end=start + H)
    expected = sorted(c["seq"] for c in changes if start <= c["ts"] < start + H)
    assert manifest["staged"].startswith(lake + "/_weaver/staging/") and manifest["changes"] == len(expected) > 0
    staged = objstore.read_parquet(manifest["staged"], s.storage_options(manifest["staged"]))
    assert sorted(staged.column("seq").to_pylist()) == expected
    assert check_changelog(s, manifest)["success"]
    uri = write_run_record(s, "run-1", {"changes": manifest["changes"]})
    assert uri.startswith(lake + "/_weaver/runs/")
    assert json.loads(objstore.read_text(uri, s.storage_options(uri))) == {"run_id": "run-1", "changes": len(expected)}
    assert not Path("s3:").exists()  # nothing leaked into a local folder named after the URI


@pytest.mark.slow
@pytest.mark.integration
def test_predict_on_s3_equals_predict_on_a_local_lake(s3, tmp_path):
    from weaver.cli import app

    remote, local = f"s3://{BUCKET}/predict", str(tmp_path / "lake")
    _simulate(remote)
    _simulate(local)
    at = (CFG_START + 40 * H).isoformat()
    out = {}
    for lake in (remote, local):
        res = CliRunner().invoke(app, ["predict", "--at", at, "--model", "path", "--workers", "1", "--samples", "50",
                                       "--lake", lake, "--json"])
        assert res.exit_code == 0, res.output
        out[lake] = storage.read(storage.uri_for(_settings(lake), storage.PREDICTIONS), storage.PREDICTIONS)
    assert out[remote].num_rows > 0
    key = [("prediction_id", "ascending")]
    assert out[remote].sort_by(key).to_pylist() == out[local].sort_by(key).to_pylist()


@pytest.mark.slow
@pytest.mark.integration
def test_snapshot_weave_recover_with_spark_on_s3(s3):
    from tests.lakes import prediction
    from weaver.pipeline import gate_weaves
    from weaver.pitr import restore_partition
    from weaver.recover import recover

    lake = f"s3://{BUCKET}/spark"
    _simulate(lake)
    s = _settings(lake)
    changes, parts = _changes_and_parts(s)
    snap_at = CFG_START + 30 * H
    at = CFG_START + 40 * H

    # A hand-made prediction on a partition alive over the whole window, split at its median key.
    seq_at = max(c["seq"] for c in changes if c["ts"] <= at)
    alive = [p for p in parts.values()
             if p["created_ts"] <= snap_at and (p["retired_seq"] is None or p["retired_seq"] > seq_at)]
    src = max(alive, key=lambda p: len(fold(changes, key_lo=p["key_lo"], key_hi=p["key_hi"], at=at)))
    keys = sorted(fold(changes, key_lo=src["key_lo"], key_hi=src["key_hi"], at=at))
    pred = prediction(src["partition_id"], run_ts=at - 4 * H, split_key=keys[len(keys) // 2],
                      split_ts=at - 3 * H, window=timedelta(hours=6), probability=0.95)
    put_predictions(s, [pred])
    out = _spark_stages(s3, lake, snap_at, at, pred["run_ts"])
    alive_at_snap = {p["partition_id"] for p in parts.values() if p["created_ts"] <= snap_at
                     and (p["retired_ts"] is None or p["retired_ts"] > snap_at)}
    assert {t.split("@")[0] for t in out["snapshot"]["taken"]} == alive_at_snap
    assert out["weave"]["rows_written"] > 0
    # Write-audit-publish, as `weaver weave` does: the woven suite reads the staged weaves from the bucket.
    wid = hashlib.sha1(pred["prediction_id"].encode()).hexdigest()[:16]
    assert wid in gate_weaves(s)["published"]
    data = {"changes": changes, "partitions": list(parts.values())}
    assert assert_matches_oracle(s, data, [pred], at=at) == 4  # split_ts .. at, hourly

    # Recovery reads the bucket: woven child and the source partition, by both paths, equal the fold.
    left = f"{src['partition_id']}~{wid[:8]}~L"
    t = at - 90 * timedelta(minutes=1)
    r = recover(s, left, t)
    assert r.path == "woven" and r.weave_id == wid
    assert rows_to_dict(r.table) == fold(changes, key_lo=src["key_lo"], key_hi=pred["split_key"], at=t)
    std = recover(s, src["partition_id"], t, prefer="standard")
    assert std.path == "standard"
    assert rows_to_dict(std.table) == fold(changes, key_lo=src["key_lo"], key_hi=src["key_hi"], at=t)
    # The standard path started from the base snapshot Spark wrote into the bucket.
    base = restore_partition(s, src["partition_id"], t)
    assert base.source_snapshot_id is not None
    assert rows_to_dict(base.table) == rows_to_dict(std.table)



# --- fast checks, no server ------------------------------------------------------------------------
def _closed_port_settings(**kw):
    from weaver.core.settings import Settings

    return Settings(lake=f"s3://{BUCKET}/lake", s3_endpoint=f"http://127.0.0.1:{_free_port()}", s3_region="us-east-1",
                    s3_access_key_id="AKIDTEST", s3_secret_access_key="not-a-real-secret-123", s3_allow_http=True, **kw)


def test_s3_settings_become_storage_options_and_s3a_conf_without_the_secret():
    from weaver.core.spark import s3a_conf

    s = _closed_port_settings()
    assert "not-a-real-secret-123" not in repr(s)
    opts = s.storage_options(s.lake + "/changelog")
    assert opts == {"aws_endpoint_url": s.s3_endpoint, "aws_region": "us-east-1", "aws_access_key_id": "AKIDTEST",
                    "aws_secret_access_key": "not-a-real-secret-123", "aws_allow_http": "true",
                    "aws_conditional_put": "etag"}
    assert s.storage_options("/tmp/lake/changelog") is None
    assert s.woven == f"s3://{BUCKET}/lake/woven" and s.remote
    conf = s3a_conf(s)
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == s.s3_endpoint and conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert not any("not-a-real-secret" in v or "AKIDTEST" in v for v in conf.values())
    assert _closed_port_settings(s3_commit="unsafe-rename").storage_options(s.lake)["aws_s3_allow_unsafe_rename"] == "true"


@pytest.mark.parametrize("uri", ["s3a://bucket/lake", "gs://bucket/lake", "s3://", "hdfs://nn/lake"])
def test_a_lake_uri_weaver_cannot_use_is_refused(uri):
    from weaver.core.errors import InvalidParameterError
    from weaver.core.settings import Settings, load_settings

    with pytest.raises(InvalidParameterError, match="lake"):
        Settings(lake=uri)
    with pytest.raises(InvalidParameterError):
        load_settings(env={"WEAVER_LAKE": uri})


def test_unreachable_store_is_a_named_error_without_the_secret():
    from weaver.core.errors import ObjectStoreError
    from weaver.core.settings import load_settings

    s = _closed_port_settings()
    env = {"WEAVER_LAKE": s.lake, "WEAVER_S3_ENDPOINT": s.s3_endpoint, "WEAVER_S3_ALLOW_HTTP": "1",
           "WEAVER_S3_ACCESS_KEY_ID": "AKIDTEST", "WEAVER_S3_SECRET_ACCESS_KEY": "not-a-real-secret-123",
           "WEAVER_S3_REGION": "us-east-1"}
    with pytest.raises(ObjectStoreError) as err:
        load_settings(env=env)  # the lake's policy file is the first object read
    assert "lake.json" in str(err.value) and "not-a-real-secret" not in str(err.value)
    assert err.value.http_status == 503


def test_whatif_report_refuses_to_write_into_an_object_store():
    from weaver.core.errors import NotOnObjectStoreError
    from weaver.whatif.report import render

    with pytest.raises(NotOnObjectStoreError, match="--out"):
        render(_closed_port_settings(), at="2026-01-02T00:00:00Z", advice_rows=[])
    assert not Path("s3:").exists()


def test_hadoop_aws_pin_matches_the_hadoop_inside_pyspark():
    from weaver.core.jars import HADOOP_VERSION, spark_hadoop_version

    assert spark_hadoop_version() == HADOOP_VERSION
