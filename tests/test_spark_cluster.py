"""A real Spark standalone cluster: spark-submit the weave job to it, compare with local mode.

The master and worker (1 core, 1 GiB, started through `weaver.deploy.spark_daemon` as the compose
file does) run on one host and the driver on another: two network namespaces joined by a veth pair
(10.23x.y.1 and .2 exist only inside them), with the driver's host and bind address taken from the
settings (WEAVER_SPARK_DRIVER_HOST / WEAVER_SPARK_BIND_ADDRESS), so the executor must reach the
driver across the link. Where the kernel refuses namespaces (no CAP_NET_ADMIN, no `ip`), the same
test runs with everything on 127.0.0.1 instead, and checks that every port listens on loopback only.
Either way the woven rows equal local mode and the independent oracle, and every process is stopped
in a finally block. (One cluster per suite: the deployment stack's master and worker are checked
for loopback binding by tests/test_deployment.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, woven_table, write_lake
from tests.procs import free_port, listen_addresses, stop_group

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.spark]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture()
def hosts():
    """Where the cluster and the driver run: {'cluster': (netns|None, ip), 'driver': (netns|None, ip)}.

    Two namespaces linked by a veth pair when the kernel allows them (removed afterwards, their
    links with them); otherwise both on 127.0.0.1 in this namespace.
    """
    tag = f"{os.getpid() % 100000}"
    cluster, driver = f"wv-cl-{tag}", f"wv-dr-{tag}"
    probe = _ip("netns", "add", cluster, check=False) if shutil.which("ip") else None
    if probe is None or probe.returncode != 0:
        why = "no `ip` (iproute2)" if probe is None else probe.stderr.strip()
        print(f"network namespaces unavailable ({why}): cluster and driver both on 127.0.0.1")
        yield {"cluster": (None, "127.0.0.1"), "driver": (None, "127.0.0.1")}
        return
    net = 231 if os.getpid() % 2 else 232
    a, b = f"10.{net}.{os.getpid() % 250}.1", f"10.{net}.{os.getpid() % 250}.2"
    try:
        _ip("netns", "add", driver)
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        _ip("link", "set", f"va{tag}", "netns", cluster)
        _ip("link", "set", f"vb{tag}", "netns", driver)
        for ns, dev, addr in ((cluster, f"va{tag}", a), (driver, f"vb{tag}", b)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield {"cluster": (cluster, a), "driver": (driver, b)}
    finally:
        for ns in (cluster, driver):
            _ip("netns", "del", ns, check=False)


def _in(ns: str | None, cmd: list[str]) -> list[str]:
    return cmd if ns is None else ["ip", "netns", "exec", ns, *cmd]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(_spark_home()),
        "SPARK_LOCAL_DIRS": str(work / "local"),
        "SPARK_WORKER_DIR": str(work / "worker"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    return env


def _wait_for_worker(ns: str | None, ip: str, ui: int, procs, logs, timeout_s: float = 180) -> None:
    """The master's JSON (read from inside the cluster's namespace) lists one alive worker."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise AssertionError(f"{log.name} exited early:\n{log.read_text()[-3000:]}")
        r = subprocess.run(_in(ns, ["curl", "--silent", "--max-time", "3", f"http://{ip}:{ui}/json/"]),
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            try:
                if json.loads(r.stdout).get("aliveworkers", 0) >= 1:
                    return
            except json.JSONDecodeError:
                pass
        time.sleep(1.0)
    raise AssertionError("the worker did not register in time:\n" + "\n".join(l.read_text()[-2000:] for l in logs))


def test_weave_on_a_standalone_cluster_equals_local_mode(spark, tmp_path, hosts):
    from weaver.core import storage
    from weaver.core.jars import delta_jars
    from weaver.core.settings import load_settings
    from weaver.core.spark import spark_conf
    from weaver.weave import weave

    (cluster_ns, cluster_ip), (driver_ns, driver_ip) = hosts["cluster"], hosts["driver"]
    data = make_log(seed=23)
    preds = [prediction(), prediction(partition_id="p1", split_key="k33", probability=0.85)]
    at = T0 + 8 * H
    remote = weave_settings(write_lake(tmp_path / "remote_lake", data))
    put_predictions(remote, preds)
    # The same run with the jars on the nodes' classpath (WEAVER_SPARK_JARS_ON_NODES), not shipped.
    on_nodes = weave_settings(write_lake(tmp_path / "on_nodes_lake", data))
    put_predictions(on_nodes, preds)
    local = weave_settings(write_lake(tmp_path / "local_lake", data))
    put_predictions(local, preds)

    work = tmp_path / "spark"
    for d in ("local", "worker"):
        (work / d).mkdir(parents=True)
    env = _env(work)
    env["SPARK_LOCAL_IP"] = cluster_ip  # binds RPC and the web UIs of master and worker
    port, ui, wport, wui = (7077, 8080, 7078, 8081) if cluster_ns else tuple(free_port() for _ in range(4))
    master_url = f"spark://{cluster_ip}:{port}"
    daemon = [sys.executable, "-m", "weaver.deploy.spark_daemon"]
    logs = [work / "master.log", work / "worker.log"]
    master = worker = None
    try:
        with open(logs[0], "wb") as m_log, open(logs[1], "wb") as w_log:
            master = subprocess.Popen(_in(cluster_ns, daemon + ["master", "--host", cluster_ip, "--port", str(port),
                                                                "--webui-port", str(ui)]),
                                      stdout=m_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            worker = subprocess.Popen(_in(cluster_ns, daemon + ["worker", "--host", cluster_ip, "--port", str(wport),
                                                                "--webui-port", str(wui), "--cores", "1",
                                                                "--memory", "1g", "--work-dir", str(work / "worker"),
                                                                master_url]),
                                      stdout=w_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait_for_worker(cluster_ns, cluster_ip, ui, [master, worker], logs)
        if cluster_ns is None:
            for p in (port, ui, wport, wui):
                assert listen_addresses(p) <= {"127.0.0.1", "::1"}, f"port {p} is not loopback-only"

        # The driver's addresses come from the settings, as in the compose file's scheduler.
        denv = dict(env, SPARK_LOCAL_IP=driver_ip, WEAVER_SPARK_DRIVER_HOST=driver_ip,
                    WEAVER_SPARK_BIND_ADDRESS=driver_ip)
        def submit(lake: str, **more_env: str) -> dict:
            # The job loads its settings from this environment too (the DAG's task hands spark-submit its own).
            env = dict(denv, **more_env)
            settings = load_settings(env=env, lake=lake, spark_shuffle_partitions=2)
            assert (settings.spark_driver_host, settings.spark_bind_address) == (driver_ip, driver_ip)
            conf = spark_conf(settings, "weaver-weave")
            assert conf["spark.driver.host"] == driver_ip
            jars = ["--jars", ",".join(delta_jars(settings))] if conf.pop("spark.jars", None) else []
            conf.update({"spark.executor.memory": "512m", "spark.cores.max": "1", "spark.executor.cores": "1"})
            cmd = [str(_spark_home() / "bin" / "spark-submit"), "--master", master_url, "--deploy-mode", "client",
                   *jars]
            for k, v in conf.items():
                cmd += ["--conf", f"{k}={v}"]
            cmd += [str(ROOT / "spark_jobs" / "weave.py"), "--lake", lake, "--at", at.isoformat()]
            proc = subprocess.run(_in(driver_ns, cmd), capture_output=True, text=True, env=env, timeout=400,
                                  cwd=str(tmp_path))
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["spark_master"] == master_url
            assert out["sequences"] == 2 and out["timepoints_written"] > 0
            return out

        summary = submit(remote.lake)  # the jars shipped with the application (--jars)
        summary_on_nodes = submit(on_nodes.lake, WEAVER_SPARK_JARS_ON_NODES="1")
        # The executor ran on the cluster's worker (and, across the link, talked to the driver).
        wlog = logs[1].read_text(errors="replace")
        assert "Launching executor" in wlog or "Asked to launch executor" in wlog, wlog[-2000:]
        # The worker keeps a folder per application: the shipped jars were copied into the first
        # one's executor folder; with the jars on the nodes' classpath nothing was.
        apps = sorted((work / "worker").glob("app-*"))
        assert len(apps) == 2, apps
        shipped = [sorted(p.name for p in app.rglob("*.jar")) for app in apps]
        assert shipped[0] == sorted(Path(j).name for j in delta_jars(remote)) and shipped[1] == [], shipped
    finally:
        stop_group(worker)
        stop_group(master)
    assert master.poll() is not None and worker.poll() is not None

    ref = weave(spark, local, at=at, stage=True)  # the job stages its weaves (check_woven publishes)
    assert ref["timepoints_written"] == summary["timepoints_written"]
    assert ref["rows_written"] == summary["rows_written"]
    order = [("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")]
    assert woven_table(remote).sort_by(order).equals(woven_table(local).sort_by(order))
    cat = [storage.read(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG).sort_by("weave_id")
           for s in (remote, local)]
    assert cat[0].equals(cat[1])
    assert assert_matches_oracle(remote, data, preds, at=at) == summary["timepoints_written"]
    assert summary_on_nodes["rows_written"] == summary["rows_written"]
    assert woven_table(on_nodes).sort_by(order).equals(woven_table(local).sort_by(order))
    shutil.rmtree(work, ignore_errors=True)
