"""`weaver services up|down|status`: the docker-compose.yml deployment as local processes.

Every service of the compose file runs here with its own command and compose environment
(translated by `weaver.deploy.compose`): Postgres through `LocalPostgres`, everything else as a
process in its own session, started in dependency order with `depends_on` conditions and
healthchecks honoured. State (pids, ports, the environments, logs) lives in one folder, by default
``.services/`` in the project. A start that fails stops what it had started, so nothing is left
half-running; `down` is bounded in time and ends every process of every service's session.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from weaver.core.errors import EnvironmentProblem, NotOnObjectStoreError, PortInUseError, ServiceStartError
from weaver.core.jars import check_java
from weaver.core.procs import pid_alive
from weaver.core.settings import PROJECT_ROOT, is_remote
from weaver.deploy.compose import (
    ComposeError,
    Health,
    Service,
    container_ports,
    load_compose,
    local_services,
    required_variables,
    start_order,
)
from weaver.deploy.postgres import (
    LOOPBACK,
    LocalPostgres,
    free_port,
    port_is_free,
)

STATE_FILE = "state.json"
SECRETS_FILE = "secrets.env"
# Variables of the caller that must not leak into a service: a container starts without them.
_PRIVATE_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "WEAVER_", "SPARK_", "PYSPARK_", "PYTHONPATH")


def default_state_dir() -> Path:
    """Where `weaver services` keeps its state: $WEAVER_SERVICES_DIR or <project>/.services."""
    return Path(os.environ.get("WEAVER_SERVICES_DIR") or PROJECT_ROOT / ".services").resolve()


def default_compose() -> Path:
    return PROJECT_ROOT / "docker-compose.yml"


@dataclass
class Stack:
    """What `up` started: the translated services and where their state lives."""

    state_dir: Path
    services: dict[str, Service]
    state: dict


# --- state ---------------------------------------------------------------------------------------
def _read_state(state_dir: Path) -> dict | None:
    p = state_dir / STATE_FILE
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _write_state(state_dir: Path, state: dict) -> None:
    p = state_dir / STATE_FILE
    tmp = p.with_suffix(".tmp")
    # The environments hold the generated secrets: readable by us only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=1, sort_keys=True)
    os.replace(tmp, p)


def _secrets(state_dir: Path, names: list[str], env: dict[str, str]) -> dict[str, str]:
    """Values for the compose file's required variables: the caller's, else generated once and kept."""
    p = state_dir / SECRETS_FILE
    kept: dict[str, str] = {}
    if p.exists():
        for line in p.read_text().splitlines():
            k, _, v = line.partition("=")
            if k:
                kept[k] = v
    generated = {n: secrets.token_urlsafe(32) for n in names if not env.get(n) and not kept.get(n)}
    out = {n: env.get(n) or kept.get(n) or generated[n] for n in names}
    if generated:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in {**kept, **generated}.items()))
    return out


def _session_members(sid: int) -> list[int]:
    """Every live process whose session is `sid` (a service and all it started, e.g. task JVMs)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.getsid(int(d)) == sid:
                out.append(int(d))
        except (ProcessLookupError, PermissionError):
            continue
    return out


def _stop_session(pid: int, timeout: float) -> None:
    """SIGTERM the service's session, wait up to `timeout`, then SIGKILL what is left."""
    members = set(_session_members(pid)) | ({pid} if pid_alive(pid) else set())
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for m in list(members):
            try:
                os.kill(m, sig)
            except ProcessLookupError:
                members.discard(m)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            members = {m for m in members | set(_session_members(pid)) if pid_alive(m)}
            if not members:
                return
            time.sleep(0.2)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


# --- health --------------------------------------------------------------------------------------
def check_health(svc: Service, project: Path, timeout: float | None = None) -> bool:
    """Run the service's compose healthcheck once, here; True when it exits 0."""
    if svc.health is None:
        return True
    h = svc.health
    cmd = h.argv if h.argv else ["/bin/sh", "-c", h.shell or "false"]
    try:
        proc = subprocess.run(cmd, env=svc.env, cwd=project, capture_output=True,
                              timeout=timeout or h.timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return proc.returncode == 0


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines[-40:]):
        if any(w in ln for w in ("Error", "ERROR", "FATAL", "Exception", "error:")):
            return ln.strip()[:300]
    return " | ".join(ln.strip() for ln in lines[-n:])[:300]


# --- up ------------------------------------------------------------------------------------------
def _base_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    # The project's own package first, as the image's editable install would give it.
    env["PYTHONPATH"] = str(project)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "*"
    return env


def _choose_ports(compose: dict, free_ports: bool) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    taken: set[int] = set()
    for name, spec in compose["services"].items():
        mapping = {}
        for container, published in container_ports(spec).items():
            if published is not None and not free_ports:
                if not port_is_free(published) or published in taken:
                    raise PortInUseError(f"port {LOOPBACK}:{published} ({name}) is already in use: stop what "
                                         "listens there, or run `weaver services up --free-ports`")
                mapping[container] = published
            else:
                p = free_port()
                while p in taken:
                    p = free_port()
                mapping[container] = p
            taken.add(mapping[container])
        out[name] = mapping
    return out


def _postgres_settings(argv: list[str]) -> dict[str, str]:
    """`postgres -c key=value ...` (the compose command) as LocalPostgres settings."""
    out = {}
    for i, a in enumerate(argv):
        if a == "-c" and i + 1 < len(argv):
            k, _, v = argv[i + 1].partition("=")
            out[k] = v
        elif a.startswith("-c") and "=" in a[2:]:
            k, _, v = a[2:].partition("=")
            out[k] = v
    return out


def _is_postgres(svc: Service) -> bool:
    return bool(svc.image and svc.image.split("/")[-1].split(":")[0] == "postgres")


def up(compose_file: Path | None = None, state_dir: Path | None = None, *, lake: str | None = None,
       free_ports: bool = False, timeout: float = 600, progress: Callable[[str], None] | None = None) -> dict:
    """Start every compose service here, in dependency order; return `status()`.

    Refuses (nothing started) when the stack already runs, a published port is taken or Java is
    missing; on any later failure stops what it started and raises ServiceStartError.
    """
    if lake is not None and is_remote(lake):
        # The stack mounts the lake as its `lake` volume (WEAVER_LAKE=/data/lake in the compose file).
        raise NotOnObjectStoreError(f"`weaver services up --lake` takes a local folder (the stack's `lake` volume), "
                                    f"not {lake}; set WEAVER_LAKE and the WEAVER_S3_* settings in the compose "
                                    "file's x-weaver-env instead")
    say = progress or (lambda m: None)
    compose_file = Path(compose_file or default_compose()).resolve()
    state_dir = Path(state_dir or default_state_dir()).resolve()
    project = PROJECT_ROOT
    prior = _read_state(state_dir)
    if prior and any(pid_alive(s.get("pid")) for s in prior.get("services", {}).values()):
        raise ServiceStartError(f"services from {state_dir} are already running: "
                                "`weaver services status` shows them, `weaver services down` stops them")
    check_java()
    state_dir.mkdir(parents=True, exist_ok=True)
    # Searchable by others: the Postgres server runs as its own OS user under this folder.
    state_dir.chmod(0o711)
    names = required_variables(compose_file)
    env = dict(os.environ)
    env.update(_secrets(state_dir, names, env))
    compose = load_compose(compose_file, env)
    ports = _choose_ports(compose, free_ports)
    volumes = {}
    for vname in (compose.get("volumes") or {}):
        volumes[vname] = str((state_dir / "volumes" / vname).resolve())
    if lake is not None:
        if "lake" not in volumes:
            raise ComposeError(f"{compose_file} declares no `lake` volume to put {lake} on")
        volumes["lake"] = str(Path(lake).resolve())
    for v in volumes.values():
        Path(v).mkdir(parents=True, exist_ok=True)
    services = local_services(compose, ports=ports, volumes=volumes, project=project, base_env=_base_env(project))
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    state = {"compose": str(compose_file), "project": str(project), "started_at": time.time(),
             "order": list(services), "volumes": volumes, "services": {}}
    _write_state(state_dir, state)
    stack = Stack(state_dir, services, state)
    oneshots = {dep for s in services.values() for dep, cond in s.depends_on.items()
                if cond == "service_completed_successfully"}
    deadline = time.monotonic() + timeout
    # A SIGTERM/SIGHUP (a timeout, a closed terminal) must still stop what was started.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for name, svc in services.items():
            for dep, cond in svc.depends_on.items():
                _wait_condition(stack, dep, cond, deadline, project)
            say(f"starting {name}")
            _start(stack, svc, project, oneshot=name in oneshots)
            _write_state(state_dir, state)
        say("waiting for healthchecks")
        _wait_all_healthy(stack, deadline, project)
    except BaseException:
        down(state_dir, timeout=30)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state["ready_at"] = time.time()
    _write_state(state_dir, state)
    return status(state_dir)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start(stack: Stack, svc: Service, project: Path, *, oneshot: bool) -> None:
    entry: dict = {"ports": {str(k): v for k, v in svc.ports.items()}, "argv": svc.argv, "env": svc.env,
                   "kind": "oneshot" if oneshot else "process", "started_at": time.time(),
                   "health": (svc.health.argv or svc.health.shell) if svc.health else None}
    stack.state["services"][svc.name] = entry
    if _is_postgres(svc):
        pg_port = next(iter(svc.ports.values()), None)
        pg = LocalPostgres(stack.state_dir / "postgres", port=pg_port, settings=_postgres_settings(svc.raw_command),
                           user=svc.env.get("POSTGRES_USER", "postgres"), password=svc.env.get("POSTGRES_PASSWORD"))
        entry.update(kind="postgres", root=str(pg.root), log=str(pg.log_file))
        pg.start(timeout=60)
        entry["pid"] = pg.running_pid()
        if svc.env.get("POSTGRES_DB"):
            pg.create_database(svc.env["POSTGRES_DB"])
        return
    if not svc.argv:
        raise ComposeError(f"service {svc.name} has no `command:` to run here")
    log = stack.state_dir / "logs" / f"{svc.name}.log"
    entry["log"] = str(log)
    with open(log, "ab") as fh:
        fh.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {shlex.join(svc.argv)}\n".encode())
        fh.flush()
        try:
            proc = subprocess.Popen(svc.argv, env=svc.env, cwd=project, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ServiceStartError(f"{svc.name}: cannot run {svc.argv[0]!r} ({exc}); install it or fix "
                                    "the service's command in docker-compose.yml") from exc
    entry["pid"] = proc.pid
    _POPEN[proc.pid] = proc


# Popen objects of this process' children, so their exit codes can be collected (no zombies).
_POPEN: dict[int, subprocess.Popen] = {}


def _exit_code(pid: int) -> int | None:
    p = _POPEN.get(pid)
    if p is not None:
        return p.poll()
    return None if pid_alive(pid) else -1


def _wait_condition(stack: Stack, dep: str, cond: str, deadline: float, project: Path) -> None:
    entry = stack.state["services"].get(dep)
    if entry is None:
        raise ComposeError(f"dependency {dep} was not started")
    if cond == "service_started":
        return
    if cond == "service_completed_successfully":
        while True:
            rc = _exit_code(entry["pid"])
            if rc is not None:
                entry["exit_code"] = rc
                if rc != 0:
                    raise ServiceStartError(f"{dep} exited with code {rc} ({_tail(Path(entry['log']))}); "
                                            f"see {entry['log']}")
                return
            if time.monotonic() > deadline:
                raise ServiceStartError(f"{dep} did not complete in time; see {entry['log']}")
            time.sleep(0.5)
    if cond == "service_healthy":
        _wait_healthy(stack, dep, deadline, project)
        return
    raise ComposeError(f"unknown depends_on condition {cond!r} on {dep}")


def _check_alive(stack: Stack, name: str) -> None:
    entry = stack.state["services"][name]
    if entry["kind"] == "postgres":
        if not pid_alive(entry.get("pid")):
            raise ServiceStartError(f"postgres stopped; see {entry['log']}")
        return
    rc = _exit_code(entry["pid"])
    if rc is not None and entry["kind"] != "oneshot":
        raise ServiceStartError(f"{name} exited with code {rc} ({_tail(Path(entry['log']))}); see {entry['log']}")


def _wait_healthy(stack: Stack, name: str, deadline: float, project: Path) -> None:
    """Compose's semantics: failures inside start_period do not count; `retries` in a row after it do."""
    svc = stack.services[name]
    entry = stack.state["services"][name]
    if entry["kind"] == "postgres" or svc.health is None:
        return  # LocalPostgres.start() returns once the server accepts connections
    h = svc.health
    grace_end = entry["started_at"] + h.start_period
    failures = 0
    while True:
        _check_alive(stack, name)
        if check_health(svc, project):
            entry["healthy_at"] = time.time()
            return
        if time.time() >= grace_end:
            failures += 1
        if failures >= max(1, h.retries) or time.monotonic() > deadline:
            raise ServiceStartError(f"{name} is unhealthy after {failures} failed healthcheck(s) "
                                    f"({_tail(Path(entry['log']))}); see {entry['log']}")
        time.sleep(h.interval)


def _wait_all_healthy(stack: Stack, deadline: float, project: Path) -> None:
    pending = [n for n, s in stack.services.items()
               if s.health is not None and stack.state["services"][n]["kind"] == "process"]
    with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
        futures = [pool.submit(_wait_healthy, stack, n, deadline, project) for n in pending]
        for f in futures:
            f.result()


# --- down / status -------------------------------------------------------------------------------
def down(state_dir: Path | None = None, timeout: float = 30) -> dict:
    """Stop every service of the state folder, dependants first; each bounded by `timeout` seconds."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state = _read_state(state_dir)
    if not state:
        return {"stopped": []}
    stopped = []
    order = state.get("order") or list(state.get("services", {}))
    for name in reversed(order):
        entry = state.get("services", {}).get(name)
        if not entry:
            continue
        if entry.get("kind") == "postgres":
            LocalPostgres(entry["root"]).stop(timeout=timeout)
            stopped.append(name)
            continue
        pid = entry.get("pid")
        if pid and (pid_alive(pid) or _session_members(pid)):
            _stop_session(pid, timeout)
            stopped.append(name)
        proc = _POPEN.pop(pid, None) if pid else None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    for entry in state.get("services", {}).values():
        entry["pid"] = None
    state["stopped_at"] = time.time()
    _write_state(state_dir, state)
    return {"stopped": stopped}


def status(state_dir: Path | None = None, *, health: bool = True) -> dict:
    """Each service with pid, ports, running and (optionally) its healthcheck's verdict now."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state = _read_state(state_dir)
    if not state:
        return {"state_dir": str(state_dir), "services": []}
    project = Path(state.get("project") or PROJECT_ROOT)
    rows = []

    def one(name: str) -> dict:
        e = state["services"].get(name)
        if e is None:
            return {"service": name, "state": "not started", "pid": None, "ports": {}, "healthy": None}
        pid = e.get("pid")
        running = pid_alive(pid)
        if e.get("kind") == "oneshot" and not running:
            st = "completed" if e.get("exit_code", 0) == 0 and pid else ("exited" if pid else "stopped")
        else:
            st = "running" if running else "stopped"
        healthy = None
        if health and running:
            if e.get("kind") == "postgres":
                healthy = _pg_ready(int(next(iter(e["ports"].values()))))
            elif e.get("health"):
                h = e["health"]
                svc = Service(name=name, argv=e["argv"], env=e["env"])
                svc.health = Health(argv=h if isinstance(h, list) else None, shell=h if isinstance(h, str) else None)
                # Generous: an `airflow jobs check` alone takes tens of seconds on a loaded 2-core machine.
                healthy = check_health(svc, project, timeout=180)
        return {"service": name, "state": st, "pid": pid if running else None,
                "ports": {k: v for k, v in e.get("ports", {}).items()}, "healthy": healthy, "log": e.get("log")}

    order = state.get("order") or list(state["services"])
    with ThreadPoolExecutor(max_workers=max(1, len(order))) as pool:
        rows = list(pool.map(one, order))
    out = {"state_dir": str(state_dir), "compose": state.get("compose"), "services": rows}
    if state.get("ready_at") and state.get("started_at"):
        out["startup_s"] = round(state["ready_at"] - state["started_at"], 1)
    return out


def _pg_ready(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return True
    except OSError:
        return False


def service_env(name: str, state_dir: Path | None = None) -> dict[str, str]:
    """The environment service `name` runs with (to run `airflow ...` against the stack)."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state = _read_state(state_dir)
    if not state or name not in state.get("services", {}):
        raise EnvironmentProblem(f"no service {name!r} in {state_dir}: run `weaver services up` first")
    return dict(state["services"][name]["env"])


def service_port(name: str, container_port: int, state_dir: Path | None = None) -> int:
    """The local port of a service's container port (e.g. airflow-api-server, 8080)."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state = _read_state(state_dir) or {}
    try:
        return int(state["services"][name]["ports"][str(container_port)])
    except KeyError as exc:
        raise EnvironmentProblem(f"{name} has no port {container_port} in {state_dir}: is the stack up?") from exc


def exec_in(name: str, argv: list[str], state_dir: Path | None = None, timeout: float | None = None,
            **kw) -> subprocess.CompletedProcess:
    """Run `argv` with service `name`'s environment (like `docker compose exec`), bounded in time."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    env = service_env(name, state_dir)
    state = _read_state(state_dir) or {}
    return subprocess.run(argv, env=env, cwd=state.get("project") or PROJECT_ROOT, timeout=timeout, **kw)


__all__ = ["up", "down", "status", "service_env", "service_port", "exec_in", "default_state_dir", "start_order"]
