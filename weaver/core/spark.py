"""The one SparkSession factory, configured for Delta; bound to loopback unless the settings say otherwise."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from weaver.core.errors import EnvironmentProblem, WeaverError
from weaver.core.jars import check_java, delta_jars, s3_jars
from weaver.core.scratch import jvm_scratch_env, process_scratch
from weaver.core.settings import Settings, load_settings
from weaver.core.storage import SCHEMAS


def spark_conf(settings: Settings, app_name: str = "temporal-weaver") -> dict[str, str]:
    """Spark configuration shared by the session factory and spark-submit (SparkSubmitOperator).

    With an s3:// lake it adds the S3A filesystem (never the credentials: those reach the JVM
    through :func:`get_spark`, not a command line or a log). The jars are shipped with the
    application (`spark.jars`), or, with `spark_jars_on_nodes`, put on the driver's and executors'
    classpath at the paths they have on every node."""
    jars = delta_jars(settings) + (s3_jars(settings) if settings.remote else [])
    if settings.spark_jars_on_nodes:  # every node has them at these paths: nothing shipped
        jar_conf = {f"spark.{who}.extraClassPath": os.pathsep.join(jars) for who in ("driver", "executor")}
    else:
        jar_conf = {"spark.jars": ",".join(jars)}
    return {
        "spark.app.name": app_name,
        **jar_conf,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.driver.host": settings.spark_driver_host,
        "spark.driver.bindAddress": settings.spark_bind_address,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.default.parallelism": str(max(2, settings.spark_shuffle_partitions)),
        "spark.sql.session.timeZone": "UTC",
        # delta-rs reads what Spark writes: plain microsecond timestamps, protocol (1, 2).
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.databricks.delta.properties.defaults.minReaderVersion": "1",
        "spark.databricks.delta.properties.defaults.minWriterVersion": "2",
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.extraJavaOptions": "-Djava.net.preferIPv4Stack=true",
        "spark.executor.extraJavaOptions": "-Djava.net.preferIPv4Stack=true",
        **(s3a_conf(settings) if settings.remote else {}),
    }


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop S3A settings for an s3:// lake, secrets excluded.

    Lakes are written ``s3://`` (delta-rs' spelling); Hadoop's ``s3://`` scheme is bound to the
    S3A filesystem here, so Spark reads the very URIs delta-rs does and Delta's S3 log store
    (single driver: one Spark writer per table at a time) serves both spellings.
    """
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        # Fail in seconds, not after S3A's default of minutes of retries, when the store is away.
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
    }
    if settings.s3_endpoint:
        # S3-compatible servers (MinIO, moto, Ceph) answer on one host: path-style addressing.
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    if settings.s3_region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = settings.s3_region
    if settings.s3_allow_http:
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = "false"
    return conf


def submitted_master() -> str | None:
    """The master spark-submit was given, or None when this process was not launched by it.

    Under spark-submit (SparkSubmitOperator, a cluster) the master on its command line must win
    over the settings; it is read back from the JVM spark-submit started (no new context).
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return SparkConf().get("spark.master", None)


def get_spark(settings: Settings, app_name: str = "temporal-weaver"):
    """Get or create the process' SparkSession, Delta jars on the classpath.

    The master is spark-submit's when launched by it, else `settings.spark_master`.
    """
    check_java()
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    master = submitted_master() or settings.spark_master
    builder = SparkSession.builder.master(master)
    for k, v in spark_conf(settings, app_name).items():
        builder = builder.config(k, v)
    # The JVM (one per process, kept across sessions) reads these from its environment at start;
    # `spark.local.dir` would do for the local dir, but makes every session log a warning about
    # cluster managers. This process' own environment stays as it was.
    scratch_env = _jvm_scratch_env(master) if SparkContext._gateway is None else {}
    buffer_dir = _s3a_buffer_dir(master, scratch_env) if settings.remote else None
    if buffer_dir:
        builder = builder.config("spark.hadoop.fs.s3a.buffer.dir", buffer_dir)
    with _environ(scratch_env):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if settings.remote:
        _use_s3(spark, settings)
    return spark


def _s3a_buffer_dir(master: str, scratch_env: dict[str, str]) -> str | None:
    """Where S3A buffers a local master's uploads: under its Spark local dirs, or None.

    S3A buffers multipart uploads on disk under `hadoop.tmp.dir` (/tmp/hadoop-<user>/s3a), not
    under Spark's local dir, so a JVM killed mid-upload left its blocks there for good. A local
    master keeps them in its local dir instead: the scratch folder given to a JVM started here, or
    the local dir spark-submit's JVM was started with (the DAG's spark-submit task gives it a
    scratch folder of its own, `weaver.pipeline.spark_submit`; an operator's own wins, as for
    Spark). Only for a new context on a local master: a cluster's executors keep their workers'
    defaults, and a running context's Hadoop configuration is not this call's to change.
    """
    from pyspark import SparkContext

    if not master.startswith("local") or SparkContext._active_spark_context is not None:
        return None
    given = scratch_env.get("SPARK_LOCAL_DIRS") or os.environ.get("SPARK_LOCAL_DIRS") or ""
    dirs = [d.strip() for d in given.split(",") if d.strip()]
    return ",".join(os.path.join(d, "s3a") for d in dirs) or None  # S3A spreads over a list as Spark does


def _jvm_scratch_env(master: str) -> dict[str, str]:
    """The environment that gives a JVM started here a scratch folder of this process as its local
    dir and temp dir (`weaver.core.scratch.jvm_scratch_env`); empty where that is not ours to pick.

    In a scratch folder named after this process a killed JVM's files go at this process' exit or,
    after a kill of this process too, with the next run's clear (`weaver.core.scratch`). Only for a
    local master started here (under spark-submit the JVM is already running; the DAG's
    spark-submit gets its folder from `weaver.pipeline.spark_submit`): a cluster's executors keep
    their workers' local dirs, and an operator's `SPARK_LOCAL_DIRS` wins.
    """
    if not master.startswith("local") or os.environ.get("SPARK_LOCAL_DIRS"):
        return {}
    return jvm_scratch_env(process_scratch("spark"), os.environ)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in this process' environment for the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _use_s3(spark, settings: Settings) -> None:
    """Give a session the lake's S3 credentials, or refuse one started without the S3A filesystem.

    The keys go into the live Hadoop configuration (which Spark ships to executors with each job),
    never into SparkConf: SparkConf is printed by spark-submit and shown in the UI. Unset keys
    leave S3A's own AWS provider chain (AWS_* variables, instance profiles) in charge.
    """
    if spark.conf.get("spark.hadoop.fs.s3.impl", None) is None:
        raise EnvironmentProblem(
            "this process' Spark session was started for a local lake (no S3A filesystem on its classpath); "
            "run the s3:// lake's Spark work in a new process (`weaver ...` or spark-submit)")
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        hconf.set("fs.s3a.access.key", settings.s3_access_key_id)
        hconf.set("fs.s3a.secret.key", settings.s3_secret_access_key)


def spark_schema(name: str):
    """The Spark StructType of a contract table (derived from the Arrow schema, one source)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(SCHEMAS[name])


def run_job(app_name: str, body, *, settings_overrides: dict | None = None) -> int:
    """Body of a spark-submit entry point: settings, session, `body(spark, settings) -> dict`.

    Prints the summary as the last line (one JSON object, with the master actually used); a user
    error prints {"error", "message"} instead and exits 2, so the submitting task fails clearly.
    """
    import json

    try:
        settings = load_settings(**(settings_overrides or {}))
        spark = get_spark(settings, app_name)
        summary = dict(body(spark, settings))
        summary["spark_master"] = spark.sparkContext.master
    except WeaverError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 2
    print(json.dumps(summary, default=str, sort_keys=True))
    return 0
