"""A project-local PostgreSQL server from Debian's `postgresql` package: no system service.

The cluster lives in one folder (`root`): the data directory, its log, the unix socket and the
generated password. It listens on 127.0.0.1 only, on a free port unless one is given. When we are
root the server runs as an unprivileged OS user (postgres refuses to run as root), so `root` is
handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from weaver.core.errors import EnvironmentProblem, InvalidParameterError, PortInUseError, ServiceStartError
from weaver.core.procs import pid_alive

LOOPBACK = "127.0.0.1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A unix socket path is limited to 107 bytes; ".s.PGSQL.65535" takes 15 of them.
_MAX_SOCKET_DIR = 90
_RUN_AS = ("postgres", "weaver-pg")


class PostgresNotInstalled(EnvironmentProblem):
    """Debian's `postgresql` package (initdb, pg_ctl, postgres) is not installed."""


def _find_bindir() -> Path | None:
    # Newest major first: /usr/lib/postgresql/15/bin, /usr/lib/postgresql/16/bin, ...
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    for d in dirs:
        if all((Path(d) / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def ensure_postgres_binaries(install: bool = True) -> Path:
    """The directory holding initdb/pg_ctl/postgres; installs Debian's `postgresql` if missing and root.

    The package's own cluster (`main`) is never left running: whatever the install started is
    stopped, so the only server is the one this project starts itself.
    """
    found = _find_bindir()
    if found:
        return found
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresNotInstalled(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "run `sudo apt-get install -y postgresql` (Debian/Ubuntu) and try again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    # invoke-rc.d consults policy-rc.d: exit 101 means "do not start services" during the install.
    own_policy = not policy.exists()
    try:
        if own_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                raise PostgresNotInstalled(f"`{' '.join(cmd)}` failed ({tail[0]}): install Debian's "
                                           "`postgresql` package by hand and try again")
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    _stop_system_clusters()
    found = _find_bindir()
    if not found:
        raise PostgresNotInstalled("apt-get installed `postgresql` but no /usr/lib/postgresql/*/bin/pg_ctl exists: "
                                   "check the package and try again")
    return found


def _stop_system_clusters() -> None:
    """Stop any Debian cluster (pg_lsclusters) the package install may have started."""
    if shutil.which("pg_lsclusters") is None:
        return
    proc = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].startswith("online"):
            subprocess.run(["pg_ctlcluster", parts[0], parts[1], "stop", "-m", "fast"],
                           capture_output=True, timeout=60)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on host:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _RUN_AS[1]],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"postgres must not run as root and no `postgres` user exists; "
                                 f"`useradd {_RUN_AS[1]}` failed ({proc.stderr.strip()}): create one by hand")
    return pwd.getpwnam(_RUN_AS[1])


def _conf_value(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class LocalPostgres:
    """One PostgreSQL cluster in `root`, on 127.0.0.1, started and stopped by this process.

    ``settings`` are extra server parameters (e.g. ``{"wal_level": "logical"}``), rewritten at
    every start. ``user``/``password`` name the superuser; the password is generated once and kept
    in ``root/password`` (mode 0600) when not given.
    """

    def __init__(self, root: Path | str, port: int | None = None, settings: dict[str, str] | None = None,
                 *, user: str = "weaver", password: str | None = None):
        if not _IDENT.match(user):
            raise InvalidParameterError(f"postgres user {user!r} is not a plain identifier (letters, digits, _)")
        self.root = Path(root).resolve()
        self.requested_port = port
        self.port: int | None = port
        self.settings = {str(k): str(v) for k, v in (settings or {}).items()}
        self.user = user
        self._password = password
        self.bindir: Path | None = None
        self._account = None

    # --- layout --------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path | None:
        """The unix socket folder (root itself), or None when the path is too long for a socket."""
        return self.root if len(str(self.root)) <= _MAX_SOCKET_DIR else None

    @property
    def password(self) -> str:
        if self._password is None:
            pw = self.root / "password"
            if pw.exists():
                self._password = pw.read_text().strip()
            else:
                self._password = secrets.token_urlsafe(18)
        return self._password

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "LocalPostgres":
        """initdb `root` when empty, then start the server and wait until it accepts connections.

        Raises PortInUseError (nothing written) when the requested port is taken, and
        ServiceStartError (nothing left running) when the server does not come up.
        """
        self.bindir = ensure_postgres_binaries()
        if self.running_pid() is not None:
            raise ServiceStartError(f"a postgres server already runs from {self.data_dir} (pid {self.running_pid()}): "
                                    f"stop it first (pg_ctl stop -D {self.data_dir})")
        if self.requested_port is not None and not port_is_free(self.requested_port):
            raise PortInUseError(f"port {LOOPBACK}:{self.requested_port} is already in use: "
                                 "stop what listens there or choose another port")
        self._account = _run_as_user()
        self.port = self.requested_port or free_port()
        self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write_conf()
        out = self.root / "pg_ctl.out"
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        try:
            with open(out, "w") as fh:
                self._chown(out)
                proc = self._run([str(self.bindir / "pg_ctl"), "start", "-D", str(self.data_dir), "-l",
                                  str(self.log_file), "-w", "-t", str(int(max(1, timeout)))],
                                 stdout=fh, stderr=subprocess.STDOUT, timeout=timeout + 15)
            ok = proc.returncode == 0 and self._wait_ready(timeout=15)
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:
            reason = self._failure_reason(out, log_offset)
            self._kill_leftovers()
            raise ServiceStartError(f"postgres did not start on {LOOPBACK}:{self.port} ({reason}); "
                                    f"see {self.log_file}")
        return self

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (pg_ctl stop -m fast), bounded in time; SIGKILL as the last resort."""
        if self.running_pid() is None:
            return
        bindir = self.bindir or ensure_postgres_binaries(install=False)
        try:
            self._run([str(bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                       "-t", str(int(max(1, timeout)))], capture_output=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            pass
        self._kill_leftovers()

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- use -----------------------------------------------------------------------------------
    def dsn(self, db: str = "postgres", driver: str | None = None) -> str:
        """A SQLAlchemy/libpq URL, e.g. ``postgresql+psycopg2://user:pw@127.0.0.1:port/db``."""
        if self.port is None:
            raise ServiceStartError("postgres has no port yet: start() it first")
        scheme = "postgresql" + (f"+{driver}" if driver else "")
        return f"{scheme}://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres", timeout: float = 30) -> str:
        """Run SQL with the package's psql over TCP; returns unaligned, tuples-only output."""
        bindir = self.bindir or ensure_postgres_binaries()
        env = dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="5")
        proc = subprocess.run([str(bindir / "psql"), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user,
                               "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ServiceStartError(f"psql on {LOOPBACK}:{self.port}/{db} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create_database(self, name: str, owner: str | None = None) -> None:
        """CREATE DATABASE `name` unless it exists (idempotent)."""
        if not _IDENT.match(name) or (owner is not None and not _IDENT.match(owner)):
            raise InvalidParameterError(f"database/owner name {name!r}/{owner!r} is not a plain identifier")
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1":
            return
        self.psql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))

    def running_pid(self) -> int | None:
        """The postmaster's pid when a server runs from this data directory, else None."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    # --- internals -----------------------------------------------------------------------------
    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        if self._account is not None:
            kw.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
            kw.setdefault("env", dict(os.environ, HOME=str(self.root)))
        kw.setdefault("cwd", str(self.root))
        return subprocess.run(cmd, **kw)

    def _chown(self, *paths: Path) -> None:
        if self._account is not None:
            for p in paths:
                os.chown(p, self._account.pw_uid, self._account.pw_gid)

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pw = self.root / "password"
        if not pw.exists():
            pw.write_text(self.password + "\n")
        pw.chmod(0o600)
        self.root.chmod(0o700)
        self._chown(self.root, pw)
        if self.data_dir.exists():
            self._chown_tree(self.data_dir)
        if self._account is not None:
            test = shutil.which("test") or shutil.which("test", path="/usr/bin:/bin") or "test"
            probe = self._run([test, "-w", str(self.root)], capture_output=True, timeout=10)
            if probe.returncode != 0:
                raise EnvironmentProblem(
                    f"the `{self._account.pw_name}` OS user cannot reach {self.root}: make its parent folders "
                    "searchable (chmod o+x) or choose a root under /tmp or the project folder")

    def _chown_tree(self, top: Path) -> None:
        if self._account is None:
            return
        for dirpath, dirnames, filenames in os.walk(top):
            for n in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
                os.lchown(n, self._account.pw_uid, self._account.pw_gid)

    def _initdb(self) -> None:
        with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as fh:
            fh.write(self.password + "\n")
            pwfile = Path(fh.name)
        self._chown(pwfile)
        try:
            proc = self._run([str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                              f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=peer",
                              "-E", "UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale"],
                             capture_output=True, text=True, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise ServiceStartError(f"initdb into {self.data_dir} failed: {last[0]}")
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as fh:
            fh.write("\n# Written at every start by weaver.deploy.postgres (port, addresses, caller settings).\n"
                     "include_if_exists = 'weaver.conf'\n")

    def _write_conf(self) -> None:
        lines = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir) if self.socket_dir else "",
            "logging_collector": "off",
        }
        lines.update(self.settings)
        conf = self.data_dir / "weaver.conf"
        conf.write_text("".join(f"{k} = {_conf_value(v)}\n" for k, v in lines.items()))
        self._chown(conf)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.2)
        return False

    def _failure_reason(self, out: Path, log_offset: int) -> str:
        """The first telling line this start wrote (the root cause precedes the FATAL it causes)."""
        lines: list[str] = []
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(log_offset)
                lines += fh.read().decode(errors="replace").splitlines()
        except OSError:
            pass
        try:
            lines += out.read_text(errors="replace").splitlines()
        except OSError:
            pass
        for line in lines:
            if re.search(r"FATAL|ERROR|invalid|could not|No such", line):
                return re.sub(r"^(\S+ \S+ \S+ \[\d+\] )?(LOG|WARNING):\s+", "", line).strip()
        tail = [ln for ln in lines if ln.strip()]
        return tail[-1].strip() if tail else "no output"

    def _kill_leftovers(self) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        # SIGQUIT is postgres' immediate shutdown (children too); SIGKILL only if that is ignored.
        for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
            if not pid_alive(pid):
                return


def _has_c_utf8() -> bool:
    proc = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return any(x.lower() in ("c.utf8", "c.utf-8") for x in proc.stdout.split())

