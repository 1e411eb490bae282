"""Scratch folders (weaver.core.scratch): a run's spill folder outlives a SIGKILL, and the next run
on the host removes it; folders of live processes and of other hosts are left alone. The Spark
JVM's block manager lives in one too (weaver.core.spark)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from weaver.core import scratch as scratch_module
from weaver.core.procs import pid_alive
from weaver.core.scratch import PREFIX, clear_dead, host_tag, scratch

KILLED = """
import os, signal, sys
from weaver.core.scratch import scratch
with scratch("weave") as folder:
    (__import__("pathlib").Path(folder) / "woven.arrows").write_bytes(b"x" * 4096)
    print(folder, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_no_other(tmp_path, monkeypatch):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == -signal.SIGKILL, err
    left = Path(out.strip())
    assert left.parent == tmp_path and (left / "woven.arrows").exists()  # the kill left it behind

    other_host = tmp_path / f"{PREFIX}{p.pid}-{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-weave-a"
    mine_alive = tmp_path / f"{PREFIX}{os.getpid()}-{host_tag()}-restore-b"
    unrelated = tmp_path / "weaver-weave-c"  # not a scratch folder's name
    for d in (other_host, mine_alive, unrelated):
        d.mkdir()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scratch_module, "_next_clear", 0.0)  # this process has not looked yet
    with scratch("run") as folder:
        assert Path(folder).parent == tmp_path and Path(folder).is_dir()
        assert not left.exists()
        assert other_host.is_dir() and mine_alive.is_dir() and unrelated.is_dir()
    assert not Path(folder).exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted([other_host.name, mine_alive.name, unrelated.name])

    # Within the minute the process does not look again: a folder that died since stays until then.
    late = tmp_path / f"{PREFIX}{p.pid}-{host_tag()}-weave-d"
    late.mkdir()
    with scratch("run"):
        assert late.is_dir()
    monkeypatch.setattr(scratch_module, "_next_clear", 0.0)
    with scratch("run"):
        assert not late.exists()


SPARK = """
import os, sys, time
from weaver.core.settings import load_settings
from weaver.core.spark import get_spark
spark = get_spark(load_settings(spark_master="local[1]", spark_shuffle_partitions=2), "weaver-scratch-test")
assert spark.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().count() == 7  # a shuffle
jvm = spark.sparkContext._jvm.java.lang.System
print(spark.sparkContext._gateway.proc.pid, "SPARK_LOCAL_DIRS" in os.environ, jvm.getProperty("java.io.tmpdir"),
      flush=True)
if sys.argv[1] == "hang":
    time.sleep(300)
"""


def _spark_child(tmp_path: Path, mode: str, **extra_env: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_LOCAL_DIRS", "SPARK_SUBMIT_OPTS", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(Path(__file__).resolve().parent.parent), **extra_env)
    return subprocess.Popen([sys.executable, "-c", SPARK, mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_the_spark_jvms_local_dir_goes_with_its_process_also_when_the_jvm_is_killed(tmp_path):
    # A session's block manager and shuffle files live in the process' scratch folder, which the
    # process' exit removes; this process' environment is left as it was.
    p = _spark_child(tmp_path, "exit")
    try:
        out, err = p.communicate(timeout=180)
    finally:
        p.kill()
    assert p.returncode == 0, err
    _, env_left, java_tmp = out.split()
    assert env_left == "False"
    assert Path(java_tmp).parent == tmp_path and Path(java_tmp).name.startswith(f"{PREFIX}{p.pid}-{host_tag()}-spark-")
    assert list(tmp_path.iterdir()) == []

    # An operator's own Java temp dir wins (the local dir is still the process' scratch folder).
    own = tmp_path / "own-java-tmp"
    own.mkdir()
    p = _spark_child(tmp_path, "exit", SPARK_SUBMIT_OPTS=f"-Djava.io.tmpdir={own}")
    try:
        out, err = p.communicate(timeout=180)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert out.split()[2] == str(own)
    shutil.rmtree(own)
    assert list(tmp_path.iterdir()) == []

    # The OOM killer's pick is the JVM: killed on its own (then its parent), it cleans nothing up.
    # Its files are in the parent's folder, under the test's TMPDIR (not in /tmp, Java's own temp
    # dir, which ignores TMPDIR), and the next run's clear removes them.
    p = _spark_child(tmp_path, "hang")
    jvm = None
    try:
        assert select.select([p.stdout], [], [], 180)[0], "no Spark session in the child within 180 s"
        jvm = int(p.stdout.readline().split()[0])
        os.kill(jvm, signal.SIGKILL)
        p.kill()
        p.wait(timeout=30)
    finally:
        p.kill()
        if jvm is not None:
            try:
                os.kill(jvm, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while pid_alive(jvm) and time.monotonic() < deadline:
        time.sleep(0.2)
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(f"{PREFIX}{p.pid}-{host_tag()}-spark-")
    kinds = sorted(d.name.split("-")[0] for d in left.iterdir() if d.is_dir())
    assert kinds.count("blockmgr") == 1 and "spark" in kinds, kinds  # the block manager; the JVM's temp dir
    assert clear_dead(tmp_path) == [left.name]
    assert list(tmp_path.iterdir()) == []

