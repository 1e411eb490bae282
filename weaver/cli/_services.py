"""CLI commands: `weaver services up|down|status|exec` (the docker-compose.yml stack as local processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from weaver.cli._app import JsonOpt, app, console, emit, fail, reported
from weaver.deploy.services import down, exec_in, status, up

services_app = typer.Typer(name="services", no_args_is_help=True,
                           help="Run docker-compose.yml's services as local processes (no container engine).")
app.add_typer(services_app, name="services")

StateOpt = typer.Option(None, "--state-dir", envvar="WEAVER_SERVICES_DIR",
                        help="State folder (pids, ports, logs, Postgres data); default ./.services.")
ComposeOpt = typer.Option(None, "--compose", help="Compose file (default: the project's docker-compose.yml).")


def _table(st: dict):

    t = Table(title=f"services in {st['state_dir']}" + (f" (started in {st['startup_s']} s)" if st.get("startup_s") else ""))
    for c in ("service", "state", "pid", "ports (container -> 127.0.0.1)", "healthy"):
        t.add_column(c)
    for r in st["services"]:
        ports = ", ".join(f"{k}->{v}" for k, v in r["ports"].items())
        healthy = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[r["healthy"]]
        t.add_row(r["service"], r["state"], str(r["pid"] or "-"), ports, healthy)
    return t


@services_app.command("up")
def up_cmd(
    lake: Optional[str] = typer.Option(None, "--lake", help="Folder mounted as the `lake` volume (default .services/volumes/lake)."),
    free_ports: bool = typer.Option(False, "--free-ports", help="Free local ports instead of the compose file's published ones."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds for the whole start-up, healthchecks included."),
    state_dir: Optional[Path] = StateOpt,
    compose: Optional[Path] = ComposeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start Postgres, Airflow (init, api-server, scheduler, dag-processor, triggerer), Spark and the API."""

    with reported(as_json):
        with console.status("starting services...") as s:
            st = up(compose, state_dir, lake=lake, free_ports=free_ports, timeout=timeout,
                    progress=lambda m: s.update(m))
    emit(st, as_json, _table(st))


@services_app.command("down")
def down_cmd(
    timeout: float = typer.Option(30, "--timeout", help="Seconds each service gets to stop before SIGKILL."),
    state_dir: Optional[Path] = StateOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop every service (dependants first), bounded in time."""

    with reported(as_json):
        r = down(state_dir, timeout=timeout)
    emit(r, as_json, f"stopped {len(r['stopped'])} service(s): {', '.join(r['stopped']) or 'none were running'}")


@services_app.command("status")
def status_cmd(
    state_dir: Optional[Path] = StateOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Each service with its pid, ports and healthcheck verdict; exit 1 when one is down or unhealthy."""

    with reported(as_json):
        st = status(state_dir)
    emit(st, as_json, _table(st))
    bad = [r for r in st["services"] if r["state"] not in ("running", "completed") or r["healthy"] is False]
    if bad or not st["services"]:
        raise typer.Exit(code=1)


@services_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_cmd(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="Service whose environment to use, e.g. airflow-scheduler."),
    state_dir: Optional[Path] = StateOpt,
) -> None:
    """Run a command with a service's environment, e.g. `weaver services exec airflow-scheduler -- airflow dags list`."""

    argv: List[str] = list(ctx.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise fail(ValueError("give the command to run after `--`"))
    with reported(False):
        rc = exec_in(service, argv, state_dir).returncode
    sys.exit(rc)
