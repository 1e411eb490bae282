"""A project-local Airflow 3 environment (SQLite, loopback) for the demo and the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from weaver.core.errors import EnvironmentProblem
from weaver.core.settings import PROJECT_ROOT


def airflow_env(home: Path, *, spark_master: str = "local[2]", base: dict | None = None) -> dict[str, str]:
    """Environment variables that point Airflow at `home`, the project's dags/ and plugins/."""
    home = Path(home).resolve()
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # A task re-imports its DAG file before it runs; on a loaded 2-core host that import passed
        # Airflow's 30 s default and the task failed before any work (DagBag import timeout).
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "%s"}' % spark_master,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "NO_PROXY": "*",
        "PATH": bindir + os.pathsep + env.get("PATH", ""),  # spark-submit from the venv's pyspark
        "GX_ANALYTICS_ENABLED": "False",
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    })
    return env


def migrate(home: Path, env: dict[str, str], timeout: int = 600) -> None:
    """`airflow db migrate` once per home (SQLite), bounded in time."""
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    if marker.exists() and (home / "airflow.db").exists():
        return
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise EnvironmentProblem("airflow db migrate failed:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    marker.touch()
