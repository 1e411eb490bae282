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
from contextlib import ExitStack
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
    of the task's process, removed when the submission ends (see the module's docstring).

    The hook is built once, by `SparkSubmitOperator.execute` after its own changes to `conf`
    (OpenLineage's injected properties), through `_get_hook`: that is where the connection is
    resolved (one lookup of the connection per run) and where a local driver's environment gets
    the scratch folder, opened for as long as `execute` runs."""

    _scratch: ExitStack | None = None

    def execute(self, context: Any) -> None:
        with ExitStack() as stack:
            self._scratch = stack
            self._hook = None  # built by the base class' execute, through `_get_hook`
            try:
                return super().execute(context)
            finally:
                self._scratch = None

    def _get_hook(self) -> SparkSubmitHook:
        hook = super()._get_hook()
        env = dict(self.env_vars or {})
        if self._scratch is None or not driver_is_local(hook) or env.get("SPARK_LOCAL_DIRS") \
                or os.environ.get("SPARK_LOCAL_DIRS"):
            return hook
        folder = self._scratch.enter_context(scratch("spark"))
        # The hook hands `_env_vars` to spark-submit's process when it builds the command (submit
        # time); the operator's rendered `env_vars` field stays as the task rendered it.
        hook._env_vars = {**env, **jvm_scratch_env(folder, {**os.environ, **env})}
        return hook
