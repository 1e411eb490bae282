"""Debezium envelopes from Postgres logical decoding (wal2json), without a Kafka Connect deployment.

Why wal2json through SQL: ``pg_logical_slot_get_changes(slot, ..., 'format-version', '2')`` needs
only Debian's ``postgresql-<major>-wal2json`` and a plain SQL connection (psql), where the
Debezium embedded engine needs a JVM application of its own; both read the same logical
replication slot and give the same facts (the change, its LSN, its transaction's commit LSN and
commit time). :func:`drain` turns wal2json's actions into Debezium's envelope (``before``,
``after``, ``op``, ``ts_ms``, ``source`` with ``lsn``, ``txId``, ``ts_ms``/``ts_us`` = commit time,
``snapshot``, ``sequence`` = [commit LSN, event LSN]), so :class:`weaver.ingest.debezium.DebeziumFile`
reads them exactly as it reads Debezium's own output.

``run_sql`` is any callable ``(sql, db) -> str`` returning psql's unaligned, tuples-only output
(e.g. ``weaver.deploy.LocalPostgres.psql``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

from weaver.core.errors import EnvironmentProblem, InvalidParameterError
from weaver.deploy.postgres import ensure_postgres_binaries

RunSQL = Callable[..., str]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_OPS = {"I": "c", "U": "u", "D": "d", "T": "t"}


class Wal2JsonNotInstalled(EnvironmentProblem):
    """Debian's postgresql-<major>-wal2json output plugin is missing."""


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def ensure_wal2json(install: bool = True) -> Path:
    """The wal2json.so of the installed server; apt-get installs it when missing and we are root."""
    libs = sorted(glob.glob("/usr/lib/postgresql/*/lib/wal2json.so"))
    if libs:
        return Path(libs[-1])
    majors = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not majors:
        raise Wal2JsonNotInstalled("no PostgreSQL server under /usr/lib/postgresql: install Debian's `postgresql` first")
    major = Path(majors[-1]).parts[-3]
    pkg = f"postgresql-{major}-wal2json"
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Wal2JsonNotInstalled(f"wal2json is not installed: run `sudo apt-get install -y {pkg}` and try again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", pkg]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["?"])[-1]
            raise Wal2JsonNotInstalled(f"`{' '.join(cmd)}` failed ({tail}): install {pkg} by hand and try again")
    libs = sorted(glob.glob("/usr/lib/postgresql/*/lib/wal2json.so"))
    if not libs:
        raise Wal2JsonNotInstalled(f"{pkg} installed but no wal2json.so was found; check the package")
    return Path(libs[-1])


def create_slot(run_sql: RunSQL, db: str, slot: str) -> int:
    """Create a wal2json logical replication slot; returns its consistent point (LSN)."""
    _ident(slot)
    out = run_sql(f"SELECT lsn FROM pg_create_logical_replication_slot('{slot}', 'wal2json')", db)
    return _lsn(out.strip())


def snapshot(run_sql: RunSQL, db: str, table: str, slot_lsn: int, *, schema: str = "public") -> list[dict]:
    """'r' (read) events of every row of `table`, at the slot's consistent point.

    Exact when nothing commits between the slot's creation and this query (Debezium's own
    snapshot uses the slot's exported snapshot to lift that condition).
    """
    _ident(table), _ident(schema)
    rows = run_sql("SELECT json_build_object('us', (extract(epoch from clock_timestamp()) * 1000000)::bigint, "
                   f"'row', row_to_json(t))::text FROM \"{schema}\".\"{table}\" t", db)
    out = []
    for line in rows.splitlines():
        rec = json.loads(line, parse_float=Decimal)
        src = _source(db, schema, table, None, slot_lsn, slot_lsn, int(rec["us"]), snapshot="true")
        out.append({"before": None, "after": rec["row"], "op": "r", "ts_ms": int(rec["us"]) // 1000, "source": src,
                    "transaction": None})
    return out


def drain(run_sql: RunSQL, db: str, slot: str, *, upto_lsn: str | None = None) -> list[dict]:
    """Consume the slot's changes (whole transactions) as Debezium envelopes, in commit order."""
    _ident(slot)
    upto = "NULL" if upto_lsn is None else f"'{upto_lsn}'"
    out = run_sql(
        "SELECT json_build_object('lsn', lsn::text, 'data', data::json)::text FROM pg_logical_slot_get_changes("
        f"'{slot}', {upto}, NULL, 'format-version', '2', 'include-timestamp', '1', 'include-xids', '1', "
        "'include-lsn', '1', 'include-types', '0')", db, timeout=120)
    events: list[dict] = []
    pending: list[tuple[int, dict]] = []
    xid = None
    for line in out.splitlines():
        if not line.strip():
            continue
        rec = json.loads(line, parse_float=Decimal)
        lsn, data = _lsn(rec["lsn"]), rec["data"]
        action = data.get("action")
        if action == "B":
            pending, xid = [], data.get("xid")
        elif action in _OPS:
            pending.append((lsn, data))
        elif action == "C":
            commit_lsn = lsn
            us = _micros(data["timestamp"])
            for ev_lsn, d in pending:
                events.append(_envelope(db, d, xid, commit_lsn, ev_lsn, us))
            pending = []
        # 'M' (logical messages) carry no row change
    return events


def write_events(events: list[dict], path: str | Path, *, wrapped: bool = False) -> Path:
    """NDJSON of envelopes; ``wrapped`` puts each in Debezium's {"schema": ..., "payload": ...}."""
    p = Path(path)
    with p.open("w") as f:
        for ev in events:
            text = json.dumps({"schema": {"type": "struct", "name": "envelope"}, "payload": ev} if wrapped else ev,
                              default=_json_default)
            # numeric values keep their exact text (1.50 stays 1.50, not a float)
            f.write(_DEC.sub(r"\1", text) + "\n")
    return p


_DEC = re.compile(r'"@@weaver-decimal:([-+0-9.eE]+)"')


def _json_default(o):
    if isinstance(o, Decimal):
        return "@@weaver-decimal:" + str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _envelope(db: str, d: dict, xid, commit_lsn: int, lsn: int, us: int) -> dict:
    op = _OPS[d["action"]]
    cols = {c["name"]: c.get("value") for c in d.get("columns", [])}
    ident = {c["name"]: c.get("value") for c in d.get("identity", [])}
    before = ident or None
    after = cols or None
    if op == "d":
        after = None
    return {"before": before, "after": after, "op": op, "ts_ms": us // 1000,
            "source": _source(db, d.get("schema"), d.get("table"), xid, commit_lsn, lsn, us, snapshot="false"),
            "transaction": None}


def _source(db, schema, table, xid, commit_lsn: int, lsn: int, us: int, *, snapshot: str) -> dict:
    return {"version": "wal2json-2", "connector": "postgresql", "name": "weaver", "ts_ms": us // 1000, "ts_us": us,
            "snapshot": snapshot, "db": db, "schema": schema, "table": table, "txId": xid, "lsn": lsn,
            "sequence": json.dumps([str(commit_lsn), str(lsn)])}


def _micros(text: str) -> int:
    t = datetime.fromisoformat(text.replace(" ", "T"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - EPOCH).days * 86_400_000_000 + (t - EPOCH).seconds * 1_000_000 + (t - EPOCH).microseconds


def _ident(name: str) -> str:
    import re

    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", name or ""):
        raise InvalidParameterError(f"{name!r} is not a plain identifier (letters, digits, _)")
    return name


if __name__ == "__main__":  # `python -m weaver.ingest.pg_logical ensure`: the Makefile's system setup
    if sys.argv[1:] == ["ensure"]:
        ensure_postgres_binaries()
        try:
            print(f"wal2json: {ensure_wal2json()}")
        except Wal2JsonNotInstalled as exc:
            print(f"warning: {exc} (the Postgres CDC tests will fail)")
    else:
        sys.exit("usage: python -m weaver.ingest.pg_logical ensure")
