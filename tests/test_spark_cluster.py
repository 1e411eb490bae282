"""A real Spark standalone cluster on loopback: spark-submit the weave job, compare with local mode.

Starts one master and one worker (1 core, 1 GiB) from the pip pyspark's bin/spark-class, bound to
127.0.0.1 on free ports (web UIs too, via SPARK_LOCAL_IP), submits spark_jobs/weave.py with the
Delta jars and weaver.spark.spark_conf, and stops both processes in a finally block.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.lakes import (
    H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, woven_table, write_lake,
)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.spark]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(_spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",  # binds RPC and the web UIs of master and worker to loopback
        "SPARK_LOCAL_DIRS": str(work / "local"),
        "SPARK_WORKER_DIR": str(work / "worker"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    return env


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    """Stop a process we started (and the executors it launched: its own process group)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _master_state(webui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=5) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def _wait_for_worker(webui_port: int, procs: list[subprocess.Popen], logs: list[Path], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise AssertionError(f"{log.name} exited early:\n{log.read_text()[-3000:]}")
        try:
            if _master_state(webui_port).get("aliveworkers", 0) >= 1:
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError("the worker did not register with the master in time:\n"
                         + "\n".join(log.read_text()[-2000:] for log in logs))


def _listen_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp*), e.g. {'127.0.0.1'}."""
    out = set()
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, p = parts[1].split(":")
            if int(p, 16) != port or parts[3] != "0A":  # 0A = LISTEN
                continue
            if v6:
                # Four 32-bit words, each in host (little-endian) order.
                ip6 = ipaddress.IPv6Address(b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8)))
                out.add(str(ip6.ipv4_mapped or ip6))
            else:
                out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def test_weave_on_a_standalone_cluster_equals_local_mode(spark, tmp_path):
    from weaver.core import storage
    from weaver.core.jars import delta_jars
    from weaver.core.settings import load_settings
    from weaver.core.spark import spark_conf
    from weaver.weave import weave

    data = make_log(seed=21)
    preds = [prediction(), prediction(partition_id="p1", split_key="k33", probability=0.85)]
    at = T0 + 8 * H
    cluster_settings = weave_settings(write_lake(tmp_path / "cluster_lake", data))
    put_predictions(cluster_settings, preds)
    local_settings = weave_settings(write_lake(tmp_path / "local_lake", data))
    put_predictions(local_settings, preds)

    work = tmp_path / "spark"
    for d in ("local", "worker"):
        (work / d).mkdir(parents=True)
    env = _env(work)
    spark_class = str(_spark_home() / "bin" / "spark-class")
    port, ui = _free_port(), _free_port()
    wport, wui = _free_port(), _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    logs = [work / "master.log", work / "worker.log"]
    master = worker = None
    try:
        master = _start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)], logs[0], env)
        worker = _start([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--port", str(wport), "--webui-port", str(wui), "--cores", "1", "--memory", "1g",
                         "--work-dir", str(work / "worker"), master_url], logs[1], env)
        _wait_for_worker(ui, [master, worker], logs)
        for p in (port, ui, wport, wui):
            assert _listen_addresses(p) <= {"127.0.0.1", "::1"}, f"port {p} is not loopback-only"

        settings = load_settings(env={}, lake=cluster_settings.lake, spark_shuffle_partitions=2)
        conf = spark_conf(settings, "weaver-weave")
        conf.pop("spark.jars")  # given as --jars below
        conf.update({"spark.executor.memory": "512m", "spark.cores.max": "1", "spark.executor.cores": "1"})
        cmd = [str(_spark_home() / "bin" / "spark-submit"), "--master", master_url, "--deploy-mode", "client",
               "--jars", ",".join(delta_jars(settings))]
        for k, v in conf.items():
            cmd += ["--conf", f"{k}={v}"]
        cmd += [str(ROOT / "spark_jobs" / "weave.py"), "--lake", cluster_settings.lake, "--at", at.isoformat()]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["spark_master"] == master_url
        assert summary["sequences"] == 2 and summary["timepoints_written"] > 0
        apps = _master_state(ui).get("completedapps", []) + _master_state(ui).get("activeapps", [])
        assert any(a.get("name") == "weaver-weave" for a in apps), apps
    finally:
        _stop(worker)
        _stop(master)
    assert master.poll() is not None and worker.poll() is not None

    local = weave(spark, local_settings, at=at, stage=True)  # the job stages its weaves (check_woven publishes)
    assert local["timepoints_written"] == summary["timepoints_written"]
    assert local["rows_written"] == summary["rows_written"]
    order = [("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")]
    assert woven_table(cluster_settings).sort_by(order).equals(woven_table(local_settings).sort_by(order))
    cat = [storage.read(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG).sort_by("weave_id")
           for s in (cluster_settings, local_settings)]
    assert cat[0].equals(cat[1])
    assert assert_matches_oracle(cluster_settings, data, preds, at=at) == summary["timepoints_written"]
    shutil.rmtree(work, ignore_errors=True)
