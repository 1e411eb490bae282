"""The one SparkSession factory, configured for Delta; bound to loopback unless the settings say otherwise."""

from __future__ import annotations

import os
import sys

from weaver.core.errors import WeaverError
from weaver.core.jars import check_java, delta_jars
from weaver.core.settings import Settings, load_settings
from weaver.core.storage import SCHEMAS


def spark_conf(settings: Settings, app_name: str = "temporal-weaver") -> dict[str, str]:
    """Spark configuration shared by the session factory and spark-submit (SparkSubmitOperator)."""
    return {
        "spark.app.name": app_name,
        "spark.jars": ",".join(delta_jars(settings)),
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
    }


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
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(submitted_master() or settings.spark_master)
    for k, v in spark_conf(settings, app_name).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


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
