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
  snapshot) both return the oracle's rows;
- without Spark, against the same command on a local copy of the lake: simulate; the DAG's task
  bodies (called as the DAG calls them); calibration maps; backtest and what-if reports; the
  vacuumed log's metrics base (and the oracle fold of the uncut log); ingest (hand-computed log).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.lakes import H, assert_matches_oracle, put_predictions
from tests.oracle import fold, rows_to_dict
from tests.procs import free_port, stop_group
from weaver.core import storage
from weaver.simulate import SimConfig

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "weaver-test"
CFG = dict(seed=11, partitions=3, days=2, base_rate=60.0, size_threshold_bytes=400_000, write_threshold_per_s=0.5)
CFG_START = SimConfig(**CFG).start


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; yields the WEAVER_S3_* environment."""
    port = free_port()
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
        stop_group(proc)


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
import json, os, sys
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
out["pid"], out["s3a_buffer_dir"] = os.getpid(), spark.sparkContext._jsc.hadoopConfiguration().get("fs.s3a.buffer.dir")
out["local_dirs"] = os.environ.get("SPARK_LOCAL_DIRS")  # this process' own: the JVM's are not set here
print(json.dumps(out, default=str))
"""


def _spark_stages(env: dict, lake: str, snap_at, at, run_ts, timeout: float = 600) -> dict:
    """Snapshot at `snap_at`, then weave the run `run_ts` at `at`, with Spark in a process of its own.

    One new process (a JVM with the S3 jars) for both stages: this test process may hold a Spark
    session started for local lakes, and a JVM's classpath cannot grow. The bodies are the ones
    `weaver snapshot` / `weaver weave` call.
    """
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "WEAVER_SPARK_MASTER": "local[2]",
            "WEAVER_SHUFFLE_PARTITIONS": "2", "SPARK_LOCAL_IP": "127.0.0.1",
            # A run this small would weave with Arrow: force Spark, whose S3A path is what this checks.
            "WEAVER_WEAVE_ENGINE": "spark"}
    full.pop("SPARK_LOCAL_DIRS", None)  # an operator's own would win over the scratch folder checked below
    proc = subprocess.Popen([sys.executable, "-c", SPARK_STAGES, lake, snap_at.isoformat(), at.isoformat(),
                             run_ts.isoformat()], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc)  # the process group: the driver's JVM too, also on a timeout
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
    # simulate onto the bucket: the same tables as onto a local folder, and a rerun adds no version
    for name, key in ((storage.CHANGELOG, ["seq"]), (storage.PARTITIONS, ["partition_id"]),
                      (storage.SPLITS, ["parent_id"])):
        assert _table(storage.table_uri(remote, name), name, key) == _table(storage.table_uri(local, name), name, key)
    versions = {n: storage.version_of(storage.table_uri(remote, n)) for n in (storage.CHANGELOG, storage.PARTITIONS)}
    _simulate(remote)
    assert {n: storage.version_of(storage.table_uri(remote, n)) for n in versions} == versions
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
    assert out["weave"]["rows_written"] > 0 and out["weave"]["engine"] == "spark"
    # S3A's upload buffers are in the process' scratch folder (with the JVM's local dir), not in
    # /tmp/hadoop-<user>/s3a, where a JVM killed mid-upload left them for good.
    from weaver.core.scratch import PREFIX, host_tag

    buf = Path(out["s3a_buffer_dir"])
    assert out["local_dirs"] is None and buf.name == "s3a", out["s3a_buffer_dir"]
    assert buf.parent.name.startswith(f"{PREFIX}{out['pid']}-{host_tag()}-spark-"), out["s3a_buffer_dir"]
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
    # As the woven tier stood at a Delta version (transaction time): the same file index, over the bucket.
    v = storage.version_of(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
    old = recover(s, left, t, as_of_version=v)
    assert old.path == "woven" and old.source == r.source
    assert rows_to_dict(old.table) == fold(changes, key_lo=src["key_lo"], key_hi=pred["split_key"], at=t)
    std = recover(s, src["partition_id"], t, prefer="standard")
    assert std.path == "standard"
    assert rows_to_dict(std.table) == fold(changes, key_lo=src["key_lo"], key_hi=src["key_hi"], at=t)
    # The standard path started from the base snapshot Spark wrote into the bucket.
    base = restore_partition(s, src["partition_id"], t)
    assert base.source_snapshot_id is not None
    assert rows_to_dict(base.table) == rows_to_dict(std.table)




# --- the rest of the loop on s3 (no Spark): each command on the bucket and on a local copy -----
def _upload(local: str, name: str) -> str:
    """Copy a local lake folder into the bucket under `name`; returns its s3:// URI."""
    import pyarrow.fs as pafs

    from weaver.core import objstore

    uri = f"s3://{BUCKET}/{name}"
    fs, path = objstore.filesystem(uri, storage.options(uri))
    pafs.copy_files(local, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return uri


def _pair(tmp_path: Path, name: str, build=None) -> tuple[str, str]:
    """(s3 lake, local lake): one hand-built lake (tests.lakes.forecast_split_lake by default), twice."""
    from tests.lakes import forecast_split_lake

    local = (build or forecast_split_lake)(tmp_path / name)
    return _upload(str(local), name), str(local)


def _table(uri: str, name: str, key: list[str]) -> list[dict]:
    return storage.read(uri, name, missing_ok=True).sort_by([(k, "ascending") for k in key]).to_pylist()


@pytest.mark.slow
@pytest.mark.integration
def test_the_dag_task_bodies_on_s3_equal_a_local_lake(s3, tmp_path):
    """The temporal_weaver DAG's non-Spark tasks, called as its task bodies call them, on both lakes."""
    from tests.lakes import FORECAST_T0, forecast_settings
    from weaver.core import objstore
    from weaver.pipeline import (account_metrics, extract, gate_changelog, gate_predictions, gate_weaves, job_target,
                                 resume_point, run_summary, write_run_record)
    from weaver.predict import build_metrics, predict
    from weaver.weave import reconcile
    from weaver.whatif import advise

    remote, local = _pair(tmp_path, "dag")
    start, end = FORECAST_T0 + 49 * H, FORECAST_T0 + 50 * H
    out = {}
    for lake in (remote, local):
        s = forecast_settings(lake)
        manifest = extract(s, start=start, end=end)
        gate_changelog(s, manifest)
        built = build_metrics(s, start=resume_point(s, end), end=end)
        accounting = account_metrics(s, manifest)
        staged = predict(s, at=end, model="path", stage=True)
        check = gate_predictions(s, at=end)
        target = job_target(s)
        woven = gate_weaves(s)
        actions = advise(s, at=end, confidence_threshold=s.confidence_threshold).column("action").to_pylist()
        summary = {**run_summary(s, at=end), "lifecycle": reconcile(s, at=end), "woven_check": woven,
                   "advice": {a: actions.count(a) for a in sorted(set(actions))}}
        record = write_run_record(s, "manual__dag-on-s3", summary)
        out[lake] = {
            "manifest": {k: v for k, v in manifest.items() if k != "staged"}, "staged_uri": manifest["staged"],
            "staged": objstore.read_parquet(manifest["staged"], storage.options(manifest["staged"])).to_pylist(),
            "built": built, "accounting": accounting, "staged_rows": staged.num_rows, "published": check["published"],
            "target": target, "record_uri": record,
            "record": json.loads(objstore.read_text(record, storage.options(record))),
            "metrics": _table(storage.uri_for(s, storage.PARTITION_METRICS), storage.PARTITION_METRICS,
                              ["partition_id", "bucket_start"]),
            "predictions": _table(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS, ["prediction_id"]),
            "advice": _table(storage.uri_for(s, storage.ADVICE), storage.ADVICE, ["advice_id"]),
            # the metrics checkpoint: Parquet files Arrow wrote into the bucket, committed with their stats
            "state": _table(storage.uri_for(s, storage.METRICS_STATE), storage.METRICS_STATE, ["state_id"]),
        }
    r, loc = out[remote], out[local]
    # Every plain file the tasks wrote is an object under the lake's prefix, none a local folder.
    assert r["staged_uri"].startswith(remote + "/_weaver/staging/") and r["record_uri"].startswith(remote + "/_weaver/runs/")
    assert r["target"]["lake"] == remote and r["target"]["woven"] == remote + "/woven"
    assert r["target"]["spark_conf"]["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert r["manifest"]["changes"] > 0 and r["metrics"] and r["predictions"] and r["state"]
    for k in ("manifest", "staged", "built", "accounting", "staged_rows", "published", "metrics", "predictions",
              "advice", "state"):
        assert r[k] == loc[k], k
    assert r["record"] == loc["record"]
    assert not Path("s3:").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_calibration_maps_and_backtest_reports_are_objects_in_the_bucket(s3, tmp_path):
    from tests.lakes import FORECAST_T0, forecast_settings
    from tests.test_backtest import _lakes
    from tests.test_calibration import _history
    from weaver.core import objstore
    from weaver.core.errors import InvalidParameterError
    from weaver.predict import backtest, read_results
    from weaver.predict import calibration as cal

    _, b = _lakes(tmp_path)  # g splits at 60 h; data until 72 h
    remote, local = _upload(b, "calib"), b
    at = FORECAST_T0 + 66 * H
    maps, reports = {}, {}
    for lake in (remote, local):
        s = forecast_settings(lake)
        storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS, _history(lake, 56),
                      keys=["prediction_id"])
        maps[lake] = cal.map_for_run(s, "path", at, "platt")
        reports[lake] = backtest(s, start=FORECAST_T0 + 30 * H, end=FORECAST_T0 + 40 * H, every="5h", model="path")
    m = maps[remote]
    assert m.method == "platt" and (m.version, m.params) == (maps[local].version, maps[local].params)
    # Stored with the model, in the bucket: the same JSON as the local lake's file.
    obj = f"{remote}/_weaver/calibration/path/{m.version}.json"
    stored = json.loads(objstore.read_text(obj, storage.options(obj)))
    assert stored == json.loads((Path(local) / "_weaver" / "calibration" / "path" / f"{m.version}.json").read_text())
    s = forecast_settings(remote)
    assert cal.load(s, "path", m.version).apply([0.5]).tolist() == m.apply([0.5]).tolist()
    with pytest.raises(InvalidParameterError, match="no calibration map"):
        cal.load(s, "path", "0" * 16)
    # Retention (a `weaver maintain` step): the bucket loses the same maps as the local lake.
    later, opts = at + timedelta(days=2), storage.options(obj)
    pruned = {lake: cal.prune(forecast_settings(lake), later, timedelta(days=1)) for lake in (remote, local)}
    assert pruned[remote] == pruned[local] and pruned[remote]["maps_deleted"] >= 1, pruned
    assert not objstore.exists(obj, opts)
    assert objstore.list_folder(f"{remote}/_weaver/calibration/path", opts) == sorted(
        f.name for f in (Path(local) / "_weaver" / "calibration" / "path").iterdir())

    rr, rl = reports[remote], reports[local]
    assert rr["backtest_id"] == rl["backtest_id"] and rr["scores"] == rl["scores"] and rr["runs"] == 2
    key = ["backtest_id", "prediction_id"]
    assert read_results(s).sort_by([(k, "ascending") for k in key]).to_pylist() == \
        read_results(forecast_settings(local)).sort_by([(k, "ascending") for k in key]).to_pylist()
    folder = f"{remote}/_weaver/backtests/{rr['backtest_id']}"
    assert rr["report"] == {"html": folder + "/report.html", "png": folder + "/backtest.png",
                            "json": folder + "/summary.json"}
    for kind in ("html", "json"):
        assert objstore.read_text(rr["report"][kind], storage.options(folder)) == Path(rl["report"][kind]).read_text()
    assert objstore.read_bytes(rr["report"]["png"], storage.options(folder))[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path("s3:").exists() and not Path("out").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_whatif_report_is_written_into_the_bucket(s3, tmp_path):
    from tests.lakes import FORECAST_T0, forecast_settings
    from weaver.core import objstore
    from weaver.core.ids import interval_id
    from weaver.whatif.report import render

    remote, local = _pair(tmp_path, "whatif")
    at = FORECAST_T0 + 30 * H
    got = render(forecast_settings(remote), at=at, model="path", advice_rows=[], samples=20)
    folder = f"{remote}/_weaver/whatif/{interval_id(None, at)}"
    assert got["html"] == folder + "/report.html"
    page = objstore.read_text(got["html"], storage.options(folder))
    # The reference: the local copy of the lake, its report sent to an explicit s3:// --out.
    out = f"s3://{BUCKET}/reports/whatif-1"
    ref = render(forecast_settings(local), at=at, model="path", advice_rows=[], samples=20, out_dir=out)
    assert ref["html"] == out + "/report.html" and ref["plots"] == got["plots"] == 2
    assert page == objstore.read_text(ref["html"], storage.options(out)) and "What-if report" in page
    assert objstore.read_text(folder + "/advice.json", storage.options(folder)) == "[]"
    assert not Path("s3:").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_vacuumed_log_keeps_its_metrics_base_in_the_bucket(s3, tmp_path):
    """The metrics base of a vacuumed log is cached as an object and read back on the next run."""
    import pyarrow.fs as pafs

    from tests.lakes import oracle_snapshots
    from tests.test_metrics import VACUUM_T0, oracle_metrics, split_lake, stored
    from weaver.core import objstore
    from weaver.core.settings import load_settings
    from weaver.log import log_start_seq
    from weaver.pitr import vacuum
    from weaver.predict import build_metrics
    from weaver.predict.metrics import read_log

    t0 = VACUUM_T0
    local = split_lake(tmp_path / "vac")
    changes = storage.read(storage.table_uri(local, storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    log = {"changes": changes, "partitions": storage.read(storage.table_uri(local, storage.PARTITIONS),
                                                          storage.PARTITIONS).to_pylist()}
    rows, cat = oracle_snapshots(log, [60, 120])
    for name, t in ((storage.SNAPSHOTS, rows), (storage.SNAPSHOT_CATALOG, cat)):
        storage.overwrite(storage.table_uri(local, name), name, pa.Table.from_pylist(t, schema=storage.SCHEMAS[name]))
    now = t0 + 30 * H
    vacuum(load_settings(lake=local).with_overrides(recovery_window="8h"), now)
    assert log_start_seq(load_settings(lake=local)) == 120
    remote = _upload(local, "vacuumed")
    s = load_settings(lake=remote)
    build_metrics(s, end=now)
    first = t0 + 20 * H  # the base is the instant of seq 120 (hour 19): the next full bucket is 20 h
    assert stored(remote) == oracle_metrics(local, first, now, changes=changes)
    cache = f"{remote}/_weaver/metrics_base/base-120.parquet"
    assert objstore.exists(cache, storage.options(cache))
    build_metrics(load_settings(lake=local), end=now)  # the same command on the local copy
    assert objstore.read_parquet(cache, storage.options(cache)).equals(
        objstore.read_parquet(str(Path(local) / "_weaver" / "metrics_base" / "base-120.parquet"), None))
    # The next run reads the cached base: with the snapshots gone from the bucket it still folds.
    fs, path = objstore.filesystem(remote, storage.options(remote))
    for name in (storage.SNAPSHOTS, storage.SNAPSHOT_CATALOG):
        fs.delete_dir(f"{path}/{name}")
    assert fs.get_file_info(f"{path}/{storage.SNAPSHOTS}").type == pafs.FileType.NotFound
    view = read_log(s, upto=now)
    assert view.base_seq == 120 and int(view.base_bytes.sum()) == sum(
        len(k.encode()) + len(v) for k, v in fold(changes, upto_seq=120).items())
    assert not Path("s3:").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_ingest_writes_into_an_s3_lake(s3, tmp_path):
    """A local Debezium export ingested into an s3:// lake: hand-computed log, exactly once."""
    from tests.ingest_helpers import lake_state
    from tests.test_ingest_writer import ev
    from weaver.core.settings import load_settings
    from weaver.ingest import ingest
    from weaver.ingest.debezium import DebeziumFile

    t = datetime(2026, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
    a, b, c = t + timedelta(seconds=5), t + timedelta(seconds=3), t + timedelta(seconds=7)
    events = [ev("c", 150, 160, b, {"id": 2, "v": "b"}), ev("c", 110, 120, a, {"id": 1, "v": "a"}),
              ev("u", 170, 180, c, {"id": 2, "v": "b2"})]
    f = tmp_path / "ev.json"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    remote, local = f"s3://{BUCKET}/ingested", str(tmp_path / "ingested")
    for lake in (remote, local):
        r = ingest(load_settings(lake=lake), DebeziumFile(f, keys="id"))
        assert (r.first_seq, r.last_seq, r.ts_carried_forward) == (1, 3, 1)
    s = load_settings(lake=remote)
    log = _table(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG, ["seq"])
    # Hand-computed: commit-LSN order, ts = running max of commit times.
    assert [(x["seq"], x["ts"]) for x in log] == [(1, a), (2, a), (3, c)]
    assert log == _table(storage.table_uri(local, storage.CHANGELOG), storage.CHANGELOG, ["seq"])
    assert lake_state(s, b) == {} and lake_state(s, c)[(2,)]["v"] == {"S": "b2"}
    again = ingest(s, DebeziumFile(f, keys="id"))  # a rerun of the same export adds nothing
    assert again.changes_written == 0
    assert _table(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG, ["seq"]) == log
    assert not Path("s3:").exists()

def test_a_column_mapped_delta_cdf_source_in_the_bucket_is_read_from_its_log(s3, tmp_path):
    """A column-mapped Delta table in the bucket (its feed read from its log and files through the
    object store, weaver.ingest.delta_log) ingested into a local lake: the rows written, by hand."""
    from deltalake import DeltaTable, write_deltalake

    from tests.ingest_helpers import lake_state
    from weaver.core.settings import load_settings
    from weaver.ingest import ingest
    from weaver.ingest.delta_cdf import DeltaCDF

    src = f"s3://{BUCKET}/mapped-src"
    opts = storage.options(src)
    write_deltalake(src, pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), storage_options=opts,
                    configuration={"delta.enableChangeDataFeed": "true", "delta.columnMapping.mode": "name"})
    DeltaTable(src, storage_options=opts).update(predicate="id = 2", updates={"v": "'bb'"})
    DeltaTable(src, storage_options=opts).delete("id = 3")
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DeltaCDF(src, keys="id", name="mapped"))
    assert r.new_watermark == "version 2" and r.changes_written == 5
    assert lake_state(s, datetime.now(timezone.utc)) == {
        (1,): {"id": {"N": "1"}, "v": {"S": "a"}}, (2,): {"id": {"N": "2"}, "v": {"S": "bb"}}}


# --- fast checks, no server ------------------------------------------------------------------------
def _closed_port_settings(**kw):
    from weaver.core.settings import Settings

    return Settings(lake=f"s3://{BUCKET}/lake", s3_endpoint=f"http://127.0.0.1:{free_port()}", s3_region="us-east-1",
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


def test_the_demo_refuses_an_s3_lake_before_doing_anything(tmp_path):
    from weaver.core.errors import NotOnObjectStoreError
    from weaver.pipeline.demo import demo

    with pytest.raises(NotOnObjectStoreError, match="--lake DIR"):
        demo(f"s3://{BUCKET}/demo", home=str(tmp_path / "home"))
    assert not Path("s3:").exists() and not (tmp_path / "home").exists()


def test_services_refuse_an_s3_lake_as_their_lake_volume(tmp_path):
    from weaver.core.errors import NotOnObjectStoreError
    from weaver.deploy.services import up

    with pytest.raises(NotOnObjectStoreError, match="compose file"):
        up(state_dir=tmp_path / "state", lake=f"s3://{BUCKET}/lake")
    assert not (tmp_path / "state").exists() and not Path("s3:").exists()


def test_hadoop_aws_pin_matches_the_hadoop_inside_pyspark():
    from weaver.core.jars import HADOOP_VERSION, spark_hadoop_version

    assert spark_hadoop_version() == HADOOP_VERSION


def test_change_log_reads_on_s3_find_a_file_without_ts_statistics(s3, tmp_path):
    """On an object store the change log is read through delta-rs' dataset, whose fragments carry
    the file statistics as guarantees; a file without a `ts` statistic got `ts >= null`, so a `ts`
    filter dropped it. Hand-built log (tests/test_log_end.py's writers): seq 1 at +768 µs with
    statistics, seq 2 at +3193 µs without a ts statistic; the answers are worked out by hand."""
    from tests.test_log_end import X, _commit, _rows
    from weaver.log import ChangeLog, last_change_ts

    local = tmp_path / "nots"
    uri = storage.uri_for(_settings(str(local)), storage.CHANGELOG)
    _commit(uri, _rows(1, [768]), "deltars")
    _commit(uri, _rows(2, [3193]), "no_ts")
    s = _settings(_upload(str(local), "nots"))
    assert s.remote
    us = lambda n: X + timedelta(microseconds=n)  # noqa: E731
    assert last_change_ts(s) == us(3193)
    assert [ChangeLog(s).seq_at(us(n)) for n in (500, 768, 3192, 3193, 4744)] == [0, 1, 1, 2, 2]
    assert ChangeLog(s).seqs_at([us(1000), us(4744)]) == (us(3193), [1, 2])
    assert ChangeLog(s).seqs_at([us(3500)]) == (us(3193), [2])
