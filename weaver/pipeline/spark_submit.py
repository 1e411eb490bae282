"""The DAG's spark-submit task, whose driver JVM spills into a scratch folder of the task's process.

`SparkSubmitOperator` starts spark-submit's JVM with Spark's default local dir and Java temp dir:
`/tmp`, whatever `TMPDIR` says. That JVM holds the driver's block manager (and, on a local master,
every executor's shuffle and spill files); killed on its own (the OOM killer's pick: it is the
largest process on the worker) it runs no shutdown hook, and its `blockmgr-*` and `spark-*` folders
stay for good, one set per killed attempt. Here the task opens a scratch folder named after its own
process (`weaver.core.scratch`) for the JVM's local and temp dir and removes it when spark-submit
ends, however it ends; if the task process is killed too, the next weaver process on the host that
opens a scratch folder clears it.

Only where the driver JVM is spark-submit's own, on this host: a local master or a standalone master
in client mode. On YARN and Kubernetes the hook turns `env_vars` into the driver's environment on the
cluster, where a path of this host means nothing; a standalone master in cluster mode refuses
`env_vars`. Executors on a cluster keep their workers' local dirs. An operator's own
`SPARK_LOCAL_DIRS` (in `env_vars` or the worker's environment) wins, as does a `-Djava.io.tmpdir` in
their `SPARK_SUBMIT_OPTS` for the temp dir. Light at import (DAG parse time): no data stack.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from weaver.core.scratch import jvm_scratch_env, scratch


def driver_is_local(hook: SparkSubmitHook) -> bool:
    """Whether spark-submit's own JVM (started on this host) is the driver: not YARN, not
    Kubernetes, not a cluster deploy mode."""
    conn = hook._connection  # the hook's resolved connection (master, deploy_mode); no public accessor
    return not (hook._is_yarn or hook._is_kubernetes or conn.get("deploy_mode") == "cluster")


class WeaverSparkSubmitOperator(SparkSubmitOperator):
    """`SparkSubmitOperator` whose local driver JVM keeps its local and temp dir in a scratch folder
    of the task's process, removed when the submission ends (see the module's docstring)."""

    def execute(self, context: Any) -> None:
        given = self.env_vars
        env = dict(given or {})
        hook = self._hook or self._get_hook()
        if not driver_is_local(hook) or env.get("SPARK_LOCAL_DIRS") or os.environ.get("SPARK_LOCAL_DIRS"):
            self._hook = hook
            return super().execute(context)
        with scratch("spark") as folder:
            self.env_vars = {**env, **jvm_scratch_env(folder, {**os.environ, **env})}
            self._hook = None  # rebuilt by execute with the new env_vars
            try:
                return super().execute(context)
            finally:
                self.env_vars = given  # the rendered field as it was: the folder was this submission's
