"""The DAG's spark-submit task (weaver.pipeline.spark_submit): its driver JVM's local dir and temp
dir are a scratch folder of the task's process, removed when spark-submit ends, also when the JVM
was killed; an operator's own dirs win; YARN, Kubernetes and cluster deploy modes are left alone.

Real spark-submit on a local master, a real SparkSubmitOperator (the subclass the DAG uses) run the
way the task runner runs it (`execute`), this test process playing the task's process."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from weaver.core import scratch as scratch_module
from weaver.core.scratch import PREFIX, host_tag

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The application: a shuffle (so the block manager writes files), then a report of where the JVM
# keeps them (and where S3A buffers uploads); with "kill", it SIGKILLs its JVM (spark-submit's own
# process, this driver's parent); with "s3", its session is weaver's for an s3:// lake.
APP = """
import glob, json, os, signal, sys
from pyspark.sql import SparkSession, functions as F

if sys.argv[3] == "s3":  # the product's session for an s3:// lake (nothing is sent to the store)
    from weaver.core.settings import Settings
    from weaver.core.spark import get_spark
    spark = get_spark(Settings(lake="s3://weaver-test/lake", s3_endpoint="http://127.0.0.1:9", s3_allow_http=True),
                      "s3a-buffer")
else:
    spark = SparkSession.builder.getOrCreate()
assert spark.range(5000).groupBy(F.col("id") % 7).count().count() == 7
local = os.environ.get("SPARK_LOCAL_DIRS", "")
report = {"local_dirs": local, "tmpdir": spark._jvm.java.lang.System.getProperty("java.io.tmpdir"),
          "blockmgr": glob.glob(os.path.join(local, "blockmgr-*")) if local else [],
          "parent": open(f"/proc/{os.getppid()}/comm").read().strip(),
          "s3a_buffer_dir": spark.sparkContext._jsc.hadoopConfiguration().get("fs.s3a.buffer.dir")}
with open(sys.argv[1], "w") as fh:
    json.dump(report, fh)
if sys.argv[2] == "kill":
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(0)
spark.stop()
"""


@pytest.fixture
def submit(tmp_path, monkeypatch):
    """Run the operator's `execute` on a local[1] master with `tmp_path/tmp` as the temp dir, bounded
    in time (on_kill stops spark-submit if it hangs); returns (report, exception or None)."""
    from weaver.pipeline.spark_submit import WeaverSparkSubmitOperator

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    app = tmp_path / "app.py"
    app.write_text(APP)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[1]"}')
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])  # the venv's spark-submit
    monkeypatch.delenv("SPARK_LOCAL_DIRS", raising=False)
    monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    monkeypatch.setattr(scratch_module, "_next_clear", 0.0)
    # Count the connection look-ups (the real method runs): one per submission, not one more for
    # the operator's own question whether the driver is local.
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    lookups: list[str] = []
    resolve = SparkSubmitHook._resolve_connection

    def counted(hook):
        lookups.append(hook._conn_id)
        return resolve(hook)

    monkeypatch.setattr(SparkSubmitHook, "_resolve_connection", counted)

    def run(mode: str, env_vars: dict | None = None, lake: str = "s3"):
        out = tmp_path / f"report-{mode}.json"
        op = WeaverSparkSubmitOperator(task_id=f"weave_{mode}", conn_id="spark_default", application=str(app),
                                       application_args=[str(out), mode, lake],
                                       env_vars={"SPARK_LOCAL_IP": "127.0.0.1", **(env_vars or {})})
        given = dict(op.env_vars)
        lookups.clear()
        failure: list[BaseException] = []

        def body():
            try:
                op.execute({})
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                failure.append(exc)

        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join(240)
        if t.is_alive():
            op.on_kill()
            t.join(30)
            pytest.fail(f"spark-submit ({mode}) did not end within 240 s")
        assert op.env_vars == given  # the scratch variables were this submission's only
        assert lookups == ["spark_default"], lookups  # the connection was looked up once
        assert out.exists(), f"the application did not report ({mode}): {failure}"
        return json.loads(out.read_text()), (failure[0] if failure else None)

    return run, tmp


def test_the_drivers_spill_folder_goes_when_spark_submit_ends_also_after_a_jvm_kill(submit, tmp_path):
    from airflow.exceptions import AirflowException

    run, tmp = submit
    mine = f"{PREFIX}{os.getpid()}-{host_tag()}-spark-"

    # A normal run: the JVM's local dir and Java temp dir are one scratch folder of this process,
    # holding the block manager; it is gone when the task's execute returns.
    report, failure = run("normal")
    assert failure is None, failure
    folder = Path(report["local_dirs"])
    assert folder.parent == tmp and folder.name.startswith(mine), report
    assert report["tmpdir"] == str(folder) and report["blockmgr"], report
    assert report["s3a_buffer_dir"] == str(folder / "s3a"), report  # S3A's upload buffers too (not /tmp/hadoop-*)
    assert not folder.exists() and list(tmp.iterdir()) == []

    # The JVM killed mid-run (as the OOM killer would): the task fails, and the folder with the
    # block manager the dead JVM left is removed all the same.
    report, failure = run("kill", lake="none")
    assert report["parent"] == "java", report  # it was spark-submit's JVM that died
    assert isinstance(failure, AirflowException), failure
    folder = Path(report["local_dirs"])
    assert folder.parent == tmp and folder.name.startswith(mine) and report["blockmgr"], report
    assert not folder.exists() and list(tmp.iterdir()) == []

    # An operator's own local dir and temp dir win: no scratch folder is made.
    own = tmp_path / "own"
    own.mkdir()
    report, failure = run("own", {"SPARK_LOCAL_DIRS": str(own), "SPARK_SUBMIT_OPTS": f"-Djava.io.tmpdir={own}"})
    assert failure is None, failure
    assert (report["local_dirs"], report["tmpdir"]) == (str(own), str(own)), report
    assert report["s3a_buffer_dir"] == str(own / "s3a"), report
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("conn, local", [
    ('{"conn_type": "spark", "host": "local[2]"}', True),
    ('{"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077}', True),  # client mode
    ('{"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077, "extra": {"deploy-mode": "cluster"}}', False),
    ('{"conn_type": "spark", "host": "yarn"}', False),
])
def test_only_a_driver_on_this_host_gets_a_scratch_folder(conn, local, monkeypatch):
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from weaver.pipeline.spark_submit import driver_is_local

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", conn)
    assert driver_is_local(SparkSubmitHook(conn_id="spark_default")) is local
