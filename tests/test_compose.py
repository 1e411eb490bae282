"""docker-compose.yml: valid for Docker Compose (`docker-compose config`, Debian's package), shaped
like Airflow's official file, and translated faithfully into local processes by weaver.deploy.compose.

No container engine runs here, so the image is never built; the file itself is checked by Compose,
and what `weaver services` makes of it is checked against hand-written expectations.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {"AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret", "AIRFLOW__API__SECRET_KEY": "api-key",
           "WEAVER_API_TOKEN": "token"}
AIRFLOW = ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def _mount(v) -> tuple[str, str]:
    """(source, target) of a volume entry, short ('src:target[:mode]') or long form."""
    if isinstance(v, dict):
        return str(v.get("source")), str(v.get("target"))
    parts = str(v).split(":")
    return parts[0], parts[1]


def _compose(*args: str, env: dict) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose not found: run `make test` (it installs Debian's docker-compose) "
                    "or `apt-get install -y docker-compose`")
    # Compose v1 reads the project's .env and the variables of the caller: give it only what we mean.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "WEAVER_"))}
    return subprocess.run([exe, "-f", str(COMPOSE), "--project-directory", str(ROOT), *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def config() -> dict:
    import yaml

    proc = _compose("config", env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_each_required_secret_is_enforced_by_compose(missing):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    proc = _compose("config", env=env)
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_airflow_services_share_driver_secrets_and_wait_for_init(config):
    svcs = config["services"]
    assert set(AIRFLOW) | {"postgres", "spark-master", "spark-worker", "weaver-api"} <= set(svcs)
    for name in AIRFLOW:
        env = svcs[name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt-secret", name
        assert env["AIRFLOW__API__SECRET_KEY"] == "api-key", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert svcs[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        if name != "airflow-init":
            assert svcs[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
            assert ("airflow-logs", "/opt/airflow/logs") in map(_mount, svcs[name]["volumes"]), \
                f"{name} has no logs volume"
    # The driver is in the image (the pinned requirements), not pip-installed at run time.
    assert "pip install" not in " ".join(map(str, svcs["airflow-init"]["command"]))
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^psycopg2-binary==", req, re.M) and re.search(r"^asyncpg==", req, re.M)


def test_healthchecks_users_ports_and_volumes(config):
    svcs = config["services"]
    for name, spec in svcs.items():
        if name != "airflow-init":
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        if name != "postgres":
            assert spec.get("user") == "50000:0", f"{name} runs as root"
        for p in spec.get("ports", []):
            host_ip = p["host_ip"] if isinstance(p, dict) else str(p).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {p} beyond loopback"
    lake_mounts = [_mount(v) for s in svcs.values() for v in s.get("volumes", []) if _mount(v)[1] == "/data/lake"]
    # The lake is the named volume everywhere it is mounted (the scheduler's tasks, Spark's executors, the API).
    assert len(lake_mounts) >= 3 and {src for src, _ in lake_mounts} == {"lake"}
    assert {"lake", "pgdata", "airflow-logs"} <= set(config["volumes"])


def test_dockerfile_installs_as_the_makefile_does():
    docker = (ROOT / "Dockerfile").read_text()
    make = (ROOT / "Makefile").read_text()
    for step in ("pip install --quiet --disable-pip-version-check -r requirements.txt",
                 "pip install --quiet --disable-pip-version-check --no-deps -e .",
                 "-m weaver.core.jars fetch"):
        assert step in make, step
        assert step in docker, step
    assert "USER 50000:0" in docker


# --- the translation into local processes --------------------------------------------------------
def test_interpolation_follows_compose():
    from weaver.deploy.compose import MissingVariableError, interpolate

    env = {"A": "1", "E": ""}
    assert interpolate("x${A}y$A-$$A", env) == "x1y1-$A"
    assert interpolate("${B:-dflt} ${E:-empty} ${E-kept}", env) == "dflt empty "
    with pytest.raises(MissingVariableError, match="B is required: give B"):
        interpolate("${B:?give B}", env)
    with pytest.raises(MissingVariableError):
        interpolate("${E:?empty is missing too}", env)


def test_services_become_local_processes(tmp_path):
    from weaver.deploy.compose import load_compose, local_services

    compose = load_compose(COMPOSE, SECRETS)
    ports = {"postgres": {5432: 15432}, "airflow-api-server": {8080: 18080}, "airflow-scheduler": {8974: 18974},
             "spark-master": {7077: 17077, 8081: 18081}, "spark-worker": {8082: 18082}, "weaver-api": {8765: 18765}}
    vols = {v: str(tmp_path / v) for v in compose["volumes"]}
    svcs = local_services(compose, ports=ports, volumes=vols, project=ROOT, base_env={"PATH": "/bin"})
    # Dependency order: Postgres, then the init job, then whoever waits for it.
    order = list(svcs)
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-scheduler")
    assert order.index("spark-master") < order.index("spark-worker")

    env = svcs["airflow-scheduler"].env
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow:airflow@127.0.0.1:15432/airflow"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["WEAVER_SPARK_MASTER"] == "spark://127.0.0.1:17077"
    assert env["AIRFLOW_CONN_SPARK_DEFAULT"] == '{"conn_type": "spark", "host": "spark://127.0.0.1:17077"}'
    assert env["WEAVER_SPARK_DRIVER_HOST"] == "127.0.0.1" and env["WEAVER_SPARK_BIND_ADDRESS"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "18974"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow-home")
    assert env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(tmp_path / "airflow-logs")
    assert env["WEAVER_LAKE"] == str(tmp_path / "lake")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == svcs["airflow-api-server"].env["AIRFLOW__API_AUTH__JWT_SECRET"]

    assert svcs["airflow-api-server"].argv == ["airflow", "api-server", "--host", "127.0.0.1", "--port", "18080"]
    assert svcs["spark-master"].argv[-6:] == ["--host", "127.0.0.1", "--port", "17077", "--webui-port", "18081"]
    assert svcs["spark-worker"].argv[-1] == "spark://127.0.0.1:17077"
    assert svcs["weaver-api"].argv == ["weaver", "serve", "--host", "127.0.0.1", "--port", "18765"]
    assert svcs["weaver-api"].health.argv[-1] == "http://127.0.0.1:18765/healthz"
    assert svcs["spark-worker"].health.argv[-1] == "http://127.0.0.1:18082/json/"
    assert svcs["airflow-init"].depends_on == {"postgres": "service_healthy"}
    assert svcs["airflow-scheduler"].depends_on["airflow-init"] == "service_completed_successfully"


def test_a_dependency_cycle_and_an_unexposed_port_are_named(tmp_path):
    from weaver.deploy.compose import ComposeError, local_services, start_order

    with pytest.raises(ComposeError, match="cycle"):
        start_order({"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}})
    compose = {"services": {"db": {"command": "x"}, "app": {"command": "y", "environment": {"URL": "http://db:5432/"}}}}
    with pytest.raises(ComposeError, match="expose"):
        local_services(compose, ports={"db": {}, "app": {}}, volumes={}, project=tmp_path, base_env={})
