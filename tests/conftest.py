"""Shared fixtures: one SparkSession per test session, small real lakes in tmp_path."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# tests/lakes.py holds shared oracle checks (assert_matches_oracle): give its asserts pytest's messages.
pytest.register_assert_rewrite("tests.lakes")

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# pyspark.testing.assertDataFrameEqual imports pandas-on-Spark, which wants this set before the session starts
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
# Airflow reads its configuration at import: give the whole session a private, throw-away home
# (one per process, xdist workers included), removed when the process ends.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="weaver-airflow-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
# Never let a test talk to a developer's own lake or token.
for var in ("WEAVER_LAKE", "WEAVER_WOVEN_ROOT", "WEAVER_API_TOKEN", "WEAVER_SPARK_MASTER"):
    os.environ.pop(var, None)


SPARK_GROUP = "spark-session"


def _uses_spark(path: Path) -> bool:
    """Whether a test module asks for the `spark` fixture (a test's or a fixture's parameter)."""
    import ast

    tree = ast.parse(path.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and
               any(a.arg == "spark" for a in n.args.args + n.args.kwonlyargs) for n in ast.walk(tree))


def pytest_xdist_make_scheduler(config, log):
    """Two xdist workers (`-n 2`, pyproject.toml) without a second SparkSession or a second service
    stack: the test modules that use the `spark` fixture are one scheduling unit, hence run on one
    worker, hence one SparkSession in the whole run; every other module is a unit of its own, so a
    module-scoped fixture (the deployment stack, a Postgres server) is built once, on one worker.
    (xdist's own `--dist loadgroup` cannot do it under pytest 9, which ignores the node id suffix
    it sets.) The controller does not import the tests: the modules are read with `ast`."""
    from xdist.scheduler import LoadScopeScheduling

    spark_modules: dict[str, bool] = {}

    class ModuleOrSparkScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module not in spark_modules:
                spark_modules[module] = _uses_spark(Path(config.rootpath) / module)
            return SPARK_GROUP if spark_modules[module] else module

    return ModuleOrSparkScheduling(config, log)


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session: local[2], UI off, few shuffle partitions."""
    from weaver.core.settings import load_settings
    from weaver.core.spark import get_spark

    s = load_settings(spark_master="local[2]", spark_shuffle_partitions=2)
    session = get_spark(s, app_name="weaver-tests")
    yield session
    session.stop()
    # py4j logs "closing" from finalizers after pytest closed its streams: keep that noise out.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def small_lake(tmp_path_factory):
    """A simulated lake (2 days, 3 partitions) shared read-only by tests; copy it before writing."""
    from weaver.simulate import SimConfig, simulate

    root = tmp_path_factory.mktemp("small_lake") / "lake"
    simulate(str(root), SimConfig(seed=11, partitions=3, days=2, base_rate=60.0,
                                  size_threshold_bytes=400_000, write_threshold_per_s=0.5))
    return root


@pytest.fixture()
def lake_copy(small_lake, tmp_path):
    """A private, writable copy of `small_lake`."""
    import shutil

    dst = tmp_path / "lake"
    shutil.copytree(small_lake, dst)
    return dst


@pytest.fixture(scope="module")
def split_lake(tmp_path_factory):
    """The forecast stage's hand-built lake whose p splits at 40 h (tests.lakes.forecast_split_lake)."""
    from tests.lakes import forecast_split_lake

    return forecast_split_lake(tmp_path_factory.mktemp("edge") / "lake")
