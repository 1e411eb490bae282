"""docker-compose.yml read as the one description of the deployment, translated for local processes.

The compose file names every service, its command, environment, ports, volumes, healthcheck and
dependencies. `weaver services` runs the same services as processes on this machine; this module
is the translation, and nothing else about the services is written down anywhere else:

- ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$`` are interpolated as Compose does;
- a service's hostname (``postgres``, ``spark-master``, ...) becomes 127.0.0.1, and each container
  port it publishes or exposes becomes a local port (the published host port, or a free one);
- ``0.0.0.0`` (bind everywhere, right inside a container) becomes 127.0.0.1: loopback only here;
- container paths become local folders: the image's ``working_dir`` is the project, each volume a
  folder under the state directory (or a folder the caller names, e.g. the lake).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from weaver.core.errors import InvalidParameterError

LOOPBACK = "127.0.0.1"
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


class ComposeError(InvalidParameterError):
    """docker-compose.yml is malformed or lacks what a local run needs."""


class MissingVariableError(ComposeError):
    """A required ``${VAR:?message}`` has no value in the environment."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution on one string (``$$`` is a literal ``$``)."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        b = _BRACED.match(m.group("braced") or "")
        if not b:
            raise ComposeError(f"invalid variable reference {m.group(0)!r}")
        name, op, arg = b.group("name"), b.group("op"), b.group("arg") or ""
        val = env.get(name)
        unset_or_empty = val is None or (val == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env) if unset_or_empty else val
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariableError(f"${name} is required: {arg or 'set it'}")
            return val
        if op in (":+", "+"):
            return "" if unset_or_empty else interpolate(arg, env)
        return val or ""

    return _VAR.sub(sub, value)


def _walk(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, list):
        return [_walk(x, fn) for x in obj]
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    return obj


def load_compose(path: Path | str, env: dict[str, str] | None = None) -> dict:
    """Parse and interpolate a compose file (YAML anchors and ``<<`` merges resolved)."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ComposeError(f"cannot read {p}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ComposeError(f"{p} has no `services:` mapping")
    env = dict(os.environ if env is None else env)
    return _walk(raw, lambda s: interpolate(s, env))


def required_variables(path: Path | str) -> list[str]:
    """Names used as ``${NAME:?...}`` / ``${NAME?...}`` in the compose file (the required secrets)."""
    text = Path(path).read_text()
    return sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text)))


# --- the services, as local processes ----------------------------------------------------------
@dataclass
class Health:
    """A compose healthcheck: the command (argv, or a shell line) and its timing."""

    argv: list[str] | None = None
    shell: str | None = None
    interval: float = 5.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass
class Service:
    """One compose service, ready to run here."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    health: Health | None = None
    image: str | None = None
    raw_command: list[str] = field(default_factory=list)


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    m = re.fullmatch(r"\s*(?:(\d+)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", str(value))
    if not m or not any(m.groups()):
        try:
            return float(value)
        except ValueError as exc:
            raise ComposeError(f"duration {value!r} is not like '30s' or '1m30s'") from exc
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def _command(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for item in value:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def container_ports(spec: dict) -> dict[int, int | None]:
    """Container port -> the host port it is published on (None when only exposed)."""
    out: dict[int, int | None] = {}
    for p in spec.get("ports") or []:
        parts = str(p).split(":")
        container = int(parts[-1].split("/")[0])
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        out[container] = host
    for p in spec.get("expose") or []:
        out.setdefault(int(str(p).split("/")[0]), None)
    return out


def _depends(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(v): "service_started" for v in value}
    return {str(k): str((v or {}).get("condition", "service_started")) for k, v in value.items()}


def start_order(services: dict[str, dict]) -> list[str]:
    """Service names in dependency order (a dependency before its dependants); cycles refused."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ComposeError(f"depends_on cycle: {' -> '.join(path + (name,))}")
        if name not in services:
            raise ComposeError(f"{path[-1] if path else '?'} depends on unknown service {name!r}")
        state[name] = 1
        for dep in sorted(_depends(services[name].get("depends_on"))):
            visit(dep, path + (name,))
        state[name] = 2
        order.append(name)

    for n in services:
        visit(n, ())
    return order


class Translator:
    """Rewrites container hostnames, ports and paths into local ones (see the module docstring)."""

    def __init__(self, ports: dict[str, dict[int, int]], paths: dict[str, str]):
        self.ports = ports
        # Longest container path first, so /opt/airflow/logs wins over /opt/airflow.
        self.paths = sorted(paths.items(), key=lambda kv: -len(kv[0]))
        names = sorted(ports, key=len, reverse=True)
        alt = "|".join(re.escape(n) for n in names) or r"(?!x)x"
        # A hostname stands after '//', '@' or at a token start, and ends at ':', '/', a quote or the end.
        self._host = re.compile(rf"(?P<pre>^|(?<=//)|(?<=@)|(?<=\s)|(?<=\"))(?P<host>{alt}|localhost)"
                                rf"(?::(?P<port>\d+))?(?=$|[/:\"\s,])")

    def host_port(self, service: str, port: int) -> int:
        try:
            return self.ports[service][port]
        except KeyError as exc:
            raise ComposeError(f"{service}:{port} is used but {service} neither publishes nor exposes "
                               f"port {port}: add it to `expose:`") from exc

    def text(self, value: str, own: str | None = None) -> str:
        """Translate one string of service `own` (its 'localhost' is itself)."""
        def host(m: re.Match) -> str:
            name = m.group("host")
            svc = own if name == "localhost" else name
            if m.group("port"):
                if svc is None or svc not in self.ports:
                    return m.group(0)
                return f"{LOOPBACK}:{self.host_port(svc, int(m.group('port')))}"
            if name == "localhost":
                return LOOPBACK
            # Bare '//postgres/db' means the scheme's default port: the service's only port.
            own_ports = self.ports.get(svc, {})
            start = m.start()
            if start >= 2 and m.string[start - 2:start] in ("//",) or (start >= 1 and m.string[start - 1] == "@"):
                if len(own_ports) == 1:
                    return f"{LOOPBACK}:{next(iter(own_ports.values()))}"
            return LOOPBACK

        out = self._host.sub(host, value)
        out = re.sub(r"(?<![\d.])0\.0\.0\.0(?![\d.])", LOOPBACK, out)
        for container, local in self.paths:
            out = re.sub(rf"(?<![\w/.-]){re.escape(container)}(?=$|[/\s\"':,])", local, out)
        return out

    def own_ports(self, argv: list[str], own: str) -> list[str]:
        """A service's own listening ports in its command: `--port 8080` becomes the local port."""
        mapping = {str(c): str(h) for c, h in self.ports.get(own, {}).items() if c != h}
        if not mapping:
            return argv
        pat = re.compile(r"(?<![\d.:])(" + "|".join(map(re.escape, mapping)) + r")(?!\d)")
        return [pat.sub(lambda m: mapping[m.group(1)], a) for a in argv]


def local_services(compose: dict, *, ports: dict[str, dict[int, int]], volumes: dict[str, str],
                   project: Path, base_env: dict[str, str]) -> dict[str, Service]:
    """Every compose service as a local `Service` (argv, env, ports, health, dependencies).

    `ports` is the already chosen local port of every container port; `volumes` maps each named
    volume to a local folder. `base_env` is what every process inherits (PATH, JAVA_HOME, ...).
    """
    specs = compose["services"]
    paths: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.get("working_dir"):
            paths[str(spec["working_dir"]).rstrip("/")] = str(project)
        for v in spec.get("volumes") or []:
            src, _, rest = str(v).partition(":")
            target = rest.split(":")[0]
            if not target:
                continue
            if src in volumes:
                paths[target.rstrip("/")] = volumes[src]
            elif src.startswith(".") or src.startswith("/"):
                paths[target.rstrip("/")] = str((project / src).resolve())
            else:
                raise ComposeError(f"service {name} mounts volume {src!r}, which is not declared under `volumes:`")
    tr = Translator(ports, paths)
    out: dict[str, Service] = {}
    for name in start_order(specs):
        spec = specs[name]
        cmd = _command(spec.get("command"))
        env = dict(base_env)
        own_env = {k: tr.text(v, name) for k, v in _environment(spec.get("environment")).items()}
        # A bare port number in the service's own environment (AIRFLOW__API__PORT: "8080") is its listening port.
        env.update({k: tr.own_ports([v], name)[0] if v.isdigit() else v for k, v in own_env.items()})
        argv = tr.own_ports([tr.text(a, name) for a in cmd], name)
        health = None
        hc = spec.get("healthcheck")
        if hc and not hc.get("disable"):
            test = hc.get("test")
            h = Health(interval=_seconds(hc.get("interval"), 5), timeout=_seconds(hc.get("timeout"), 30),
                       retries=int(hc.get("retries", 3)), start_period=_seconds(hc.get("start_period"), 0))
            if isinstance(test, str):
                h.shell = tr.text(test, name)
            elif test and test[0] == "CMD-SHELL":
                h.shell = tr.text(" ".join(test[1:]), name)
            elif test and test[0] == "CMD":
                h.argv = [tr.text(a, name) for a in test[1:]]
            if h.shell or h.argv:
                health = h
        out[name] = Service(name=name, argv=argv, env=env, ports=dict(ports.get(name, {})),
                            depends_on=_depends(spec.get("depends_on")), health=health,
                            image=spec.get("image"), raw_command=cmd)
    return out
