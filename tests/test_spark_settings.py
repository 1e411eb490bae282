"""Spark's driver addresses come from the settings: loopback by default, another host when told."""

from __future__ import annotations

from pathlib import Path


def test_driver_host_and_bind_address_default_to_loopback(tmp_path):
    from weaver.pipeline import job_target
    from weaver.core.settings import load_settings
    from weaver.core.spark import spark_conf

    s = load_settings(env={}, lake=str(tmp_path / "lake"))
    assert (s.spark_driver_host, s.spark_bind_address) == ("127.0.0.1", "127.0.0.1")
    conf = spark_conf(s)
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert job_target(s)["spark_env"] == {"SPARK_LOCAL_IP": "127.0.0.1"}


def test_driver_addresses_from_the_environment(tmp_path):
    from weaver.pipeline import job_target
    from weaver.core.settings import load_settings
    from weaver.core.spark import spark_conf

    env = {"WEAVER_SPARK_DRIVER_HOST": "airflow-scheduler", "WEAVER_SPARK_BIND_ADDRESS": "0.0.0.0"}
    s = load_settings(env=env, lake=str(tmp_path / "lake"))
    assert (s.spark_driver_host, s.spark_bind_address) == ("airflow-scheduler", "0.0.0.0")
    conf = spark_conf(s)
    assert conf["spark.driver.host"] == "airflow-scheduler" and conf["spark.driver.bindAddress"] == "0.0.0.0"
    # spark-submit's JVM resolves its own address from SPARK_LOCAL_IP: the driver host, not loopback.
    assert job_target(s)["spark_env"] == {"SPARK_LOCAL_IP": "airflow-scheduler"}


def test_the_dag_no_longer_pins_spark_local_ip():
    dag = (Path(__file__).resolve().parent.parent / "dags" / "temporal_weaver.py").read_text()
    assert "127.0.0.1" not in dag and "spark_env" in dag


def test_jars_shipped_by_default_or_on_the_nodes_classpath(tmp_path):
    import pytest

    from weaver.core.errors import InvalidParameterError
    from weaver.core.jars import delta_jars
    from weaver.core.settings import load_settings
    from weaver.core.spark import spark_conf

    s = load_settings(env={}, lake=str(tmp_path / "lake"))
    jars = delta_jars(s)
    assert jars and all(Path(j).is_file() for j in jars)
    shipped = spark_conf(s)
    assert shipped["spark.jars"] == ",".join(jars) and not any("extraClassPath" in k for k in shipped)
    on_nodes = spark_conf(load_settings(env={"WEAVER_SPARK_JARS_ON_NODES": "1"}, lake=str(tmp_path / "lake")))
    assert "spark.jars" not in on_nodes
    assert on_nodes["spark.driver.extraClassPath"] == on_nodes["spark.executor.extraClassPath"] == ":".join(jars)
    with pytest.raises(InvalidParameterError, match="WEAVER_SPARK_JARS_ON_NODES"):
        load_settings(env={"WEAVER_SPARK_JARS_ON_NODES": "sometimes"}, lake=str(tmp_path / "lake"))


def test_s3a_buffers_follow_a_local_masters_spark_local_dirs(monkeypatch):
    # S3A's upload buffers default to /tmp/hadoop-<user>/s3a, outside Spark's local dirs (where a
    # killed JVM's leftovers are cleared): a local master puts them under each of its local dirs.
    from pyspark import SparkContext

    from weaver.core.spark import _s3a_buffer_dir

    monkeypatch.setattr(SparkContext, "_active_spark_context", None)
    monkeypatch.delenv("SPARK_LOCAL_DIRS", raising=False)
    assert _s3a_buffer_dir("local[2]", {"SPARK_LOCAL_DIRS": "/scratch/w-1"}) == "/scratch/w-1/s3a"
    assert _s3a_buffer_dir("local[2]", {}) is None  # no local dir given: Hadoop's default stays
    monkeypatch.setenv("SPARK_LOCAL_DIRS", "/disk1/spark, /disk2/spark")  # spark-submit's JVM's (or an operator's)
    assert _s3a_buffer_dir("local[*]", {}) == "/disk1/spark/s3a,/disk2/spark/s3a"
    assert _s3a_buffer_dir("spark://127.0.0.1:7077", {}) is None  # a cluster's executors keep their own
    monkeypatch.setattr(SparkContext, "_active_spark_context", object())
    assert _s3a_buffer_dir("local[2]", {}) is None  # a running context's configuration is not changed
