"""`weaver services` on small compose files: dependency order, healthchecks, status, exec, down, and
bad input (a port in use, Java missing, Postgres that will not start, a failing init job): one
line naming the problem, and nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.procs import alive, listen_addresses

ROOT = Path(__file__).resolve().parent.parent
WEAVER = str(Path(sys.executable).parent / "weaver")
pytestmark = pytest.mark.integration


@pytest.fixture()
def state():
    # Under /tmp and searchable: the Postgres server runs as its own OS user below it.
    root = Path(tempfile.mkdtemp(prefix="weaver-svc-test-"))
    root.chmod(0o711)
    yield root
    subprocess.run([WEAVER, "services", "down", "--state-dir", str(root / "state")], capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def _compose(root: Path, text: str) -> Path:
    p = root / "docker-compose.yml"
    p.write_text(textwrap.dedent(text))
    return p


def _weaver(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([WEAVER, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env or dict(os.environ, PYTHONPATH=str(ROOT)))


def _nothing_running(state_dir: Path) -> None:
    st = json.loads((state_dir / "state.json").read_text()) if (state_dir / "state.json").exists() else {}
    pg = state_dir / "postgres" / "data" / "postmaster.pid"
    assert not pg.exists() or not alive(int(pg.read_text().split()[0])), "postgres left running"
    for name, e in st.get("services", {}).items():
        assert not (e.get("pid") and alive(e["pid"])), f"{name} left running"


SMALL = """
    services:
      postgres:
        image: postgres:16
        command: ["postgres", "-c", "wal_level=logical"]
        environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: secret, POSTGRES_DB: appdb}
        expose: ["5432"]
        healthcheck: {test: ["CMD", "pg_isready", "-U", "app"], interval: 1s, retries: 5}
      init:
        command: ["python", "-c", "import os,sys; print(os.environ['DB']); sys.exit(int(os.environ['CODE']))"]
        environment: {DB: "postgresql://app:secret@postgres/appdb", CODE: "${INIT_CODE:-0}"}
        depends_on: {postgres: {condition: service_healthy}}
      web:
        command: ["python", "-m", "http.server", "--bind", "0.0.0.0", "8000", "--directory", "/srv/www"]
        environment: {TOKEN: "${WEB_TOKEN:?set WEB_TOKEN}"}
        ports: ["127.0.0.1:8000:8000"]
        volumes: ["site:/srv/www"]
        healthcheck: {test: ["CMD", "curl", "--fail", "--silent", "http://localhost:8000/"], interval: 1s, retries: 20}
        depends_on: {init: {condition: service_completed_successfully}}
    volumes:
      site: {}
"""


def test_up_status_exec_down_on_a_small_stack(state):
    compose = _compose(state, SMALL)
    sd = state / "state"
    up = _weaver("services", "up", "--compose", str(compose), "--state-dir", str(sd), "--free-ports", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    st = json.loads(up.stdout.strip().splitlines()[-1])
    rows = {r["service"]: r for r in st["services"]}
    assert [r["service"] for r in st["services"]] == ["postgres", "init", "web"]
    assert rows["init"]["state"] == "completed" and rows["web"]["healthy"] is True and rows["postgres"]["healthy"]
    pg_port, web_port = int(rows["postgres"]["ports"]["5432"]), int(rows["web"]["ports"]["8000"])
    # The init job saw the translated address; the web server binds loopback only.
    log = Path(json.loads((sd / "state.json").read_text())["services"]["init"]["log"]).read_text()
    assert f"postgresql://app:secret@127.0.0.1:{pg_port}/appdb" in log
    assert listen_addresses(web_port) == {"127.0.0.1"}
    # The required secret was generated once and kept private.
    secrets = sd / "secrets.env"
    assert "WEB_TOKEN=" in secrets.read_text() and oct(secrets.stat().st_mode & 0o777) == "0o600"
    # exec runs with the service's environment (wal_level from the compose command reached Postgres).
    ex = _weaver("services", "exec", "--state-dir", str(sd), "web", "--", "python", "-c",
                 "import os; print(os.environ['TOKEN'] != '')")
    assert ex.returncode == 0 and ex.stdout.strip() == "True"
    from weaver.deploy.postgres import LocalPostgres

    pg = LocalPostgres(sd / "postgres", user="app", password="secret")
    pg.port = pg_port
    assert pg.psql("SHOW wal_level", db="appdb") == "logical"
    status = _weaver("services", "status", "--state-dir", str(sd), "--json")
    assert status.returncode == 0, status.stdout
    # A second `up` is refused while the stack runs.
    again = _weaver("services", "up", "--compose", str(compose), "--state-dir", str(sd), "--free-ports")
    assert again.returncode == 2 and "already running" in again.stderr
    down = _weaver("services", "down", "--state-dir", str(sd), "--json")
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == ["web", "postgres"]
    _nothing_running(sd)
    after = _weaver("services", "status", "--state-dir", str(sd), "--json")
    assert after.returncode == 1 and {r["state"] for r in json.loads(after.stdout)["services"]} <= {"stopped", "completed"}


def test_a_published_port_in_use_is_named_and_nothing_starts(state):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        compose = _compose(state, SMALL.replace("127.0.0.1:8000:8000", f"127.0.0.1:{port}:8000"))
        r = _weaver("services", "up", "--compose", str(compose), "--state-dir", str(state / "state"))
    assert r.returncode == 2
    assert "PortInUseError" in r.stderr and f"127.0.0.1:{port}" in r.stderr and "--free-ports" in r.stderr
    assert not (state / "state" / "postgres").exists()


def test_java_missing_is_named_and_nothing_starts(state):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=f"{Path(sys.executable).parent}:/nonexistent", PYTHONPATH=str(ROOT))
    r = _weaver("services", "up", "--compose", str(_compose(state, SMALL)), "--state-dir", str(state / "state"),
                "--free-ports", env=env)
    assert r.returncode == 2 and "Java not found" in r.stderr, r.stderr
    assert not (state / "state").exists()


def test_postgres_that_will_not_start_leaves_nothing_running(state):
    compose = _compose(state, SMALL.replace('"wal_level=logical"', '"shared_buffers=lots"'))
    r = _weaver("services", "up", "--compose", str(compose), "--state-dir", str(state / "state"), "--free-ports")
    assert r.returncode == 2
    assert "ServiceStartError" in r.stderr and "shared_buffers" in r.stderr
    _nothing_running(state / "state")


def test_a_failing_init_job_stops_what_was_started(state):
    compose = _compose(state, SMALL)
    env = dict(os.environ, PYTHONPATH=str(ROOT), INIT_CODE="3")
    r = _weaver("services", "up", "--compose", str(compose), "--state-dir", str(state / "state"), "--free-ports",
                env=env)
    assert r.returncode == 2
    assert "init exited with code 3" in r.stderr
    _nothing_running(state / "state")
