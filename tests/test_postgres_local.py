"""The project-local PostgreSQL (Debian's package, one folder, 127.0.0.1 only, no system service)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.procs import listen_addresses
from weaver.deploy.postgres import LocalPostgres, ensure_postgres_binaries
from weaver.core.errors import EnvironmentProblem, PortInUseError, ServiceStartError

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_root():
    # Not tmp_path: pytest's base folder is 0700 root-only, and the server runs as an unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="weaver-pg-test-"))
    root.chmod(0o711)
    servers: list[LocalPostgres] = []
    yield root, servers
    for s in servers:
        s.stop(timeout=20)
    shutil.rmtree(root, ignore_errors=True)


def _postgres_processes(data_dir: Path) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if any(str(data_dir) in part for part in cmd) and any("postgres" in part for part in cmd[:1]):
            pids.append(p.pid)
    return pids


def test_binaries_found():
    bindir = ensure_postgres_binaries()
    for exe in ("initdb", "pg_ctl", "postgres", "psql"):
        assert (bindir / exe).exists()


def test_start_settings_database_restart_stop(pg_root):
    root, servers = pg_root
    settings = {"wal_level": "logical", "max_replication_slots": "4", "max_wal_senders": "4"}
    pg = LocalPostgres(root / "pg", settings=settings, user="airflow", password="airflow")
    servers.append(pg)
    pg.start(timeout=60)
    assert pg.dsn("airflow", driver="psycopg2") == f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{pg.port}/airflow"
    assert pg.psql("SHOW wal_level") == "logical"
    assert pg.psql("SHOW max_replication_slots") == "4"
    assert pg.psql("SHOW listen_addresses") == "127.0.0.1"
    assert listen_addresses(pg.port) == {"127.0.0.1"}

    pg.create_database("airflow")
    pg.create_database("airflow")  # idempotent
    pg.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (41), (1)", db="airflow")
    if os.geteuid() == 0:
        import psutil

        assert psutil.Process(pg.running_pid()).uids().real != 0, "postgres must not run as root"

    first_port = pg.port
    pg.stop(timeout=30)
    assert pg.running_pid() is None
    assert listen_addresses(first_port) == set()

    again = LocalPostgres(root / "pg", user="airflow", password="airflow")
    servers.append(again)
    again.start(timeout=60)
    assert again.psql("SELECT sum(x) FROM kept", db="airflow") == "42"
    assert again.psql("SELECT count(*) FROM pg_database WHERE datname = 'airflow'") == "1"
    # Settings are rewritten at each start: a server started without them has the defaults back.
    assert again.psql("SHOW wal_level") == "replica"
    again.stop(timeout=30)
    assert _postgres_processes(root / "pg" / "data") == []


def test_port_in_use_is_named_and_writes_nothing(pg_root):
    root, servers = pg_root
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        pg = LocalPostgres(root / "pg", port=port)
        servers.append(pg)
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            pg.start(timeout=30)
    assert not (root / "pg").exists()


def test_failed_start_is_one_line_and_leaves_nothing_running(pg_root):
    root, servers = pg_root
    pg = LocalPostgres(root / "pg", settings={"shared_buffers": "plenty"})
    servers.append(pg)
    with pytest.raises(ServiceStartError) as err:
        pg.start(timeout=30)
    msg = str(err.value)
    assert "\n" not in msg and "shared_buffers" in msg and "postgres.log" in msg
    assert isinstance(err.value, EnvironmentProblem)
    assert pg.running_pid() is None
    assert _postgres_processes(root / "pg" / "data") == []


def test_context_manager_stops_on_error(pg_root):
    root, _ = pg_root
    pg = LocalPostgres(root / "pg")
    with pytest.raises(RuntimeError):
        with pg:
            assert pg.psql("SELECT 1") == "1"
            raise RuntimeError("boom")
    assert pg.running_pid() is None
    assert subprocess.run([str(ensure_postgres_binaries() / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)],
                          capture_output=True).returncode != 0
