"""Postgres CDC in the Debezium envelope, from a REAL Postgres (LocalPostgres, 127.0.0.1) through wal2json.

The test makes its writes in its own transactions and records the table after each commit, with
that transaction's commit time from Postgres (track_commit_timestamp). Oracle: restoring a commit
instant through the weaver equals the recorded table; just before the next commit, still it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ingest_helpers import lake_fingerprint, lake_state
from weaver.core import storage
from weaver.ingest import Partitioning, ingest, load_watermark
from weaver.ingest.debezium import DebeziumFile
from weaver.ingest.errors import StaleInputError, UnknownEventError
from weaver.core.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    from weaver.deploy.postgres import LocalPostgres
    from weaver.ingest.pg_logical import ensure_wal2json

    ensure_wal2json()
    # Not tmp_path: pytest's base folder is 0700 root-only, and the server runs as an unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="weaver-pg-ingest-"))
    root.chmod(0o711)
    server = LocalPostgres(root, settings={
        "wal_level": "logical", "max_replication_slots": "4", "max_wal_senders": "4",
        "track_commit_timestamp": "on"})
    server.start()
    try:
        server.create_database("shop")
        yield server
    finally:
        server.stop(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


class Table:
    """Runs each write as one transaction and records the table and the commit time after it."""

    def __init__(self, pg):
        self.pg = pg
        self.rows: dict[int, dict] = {}
        self.history: list[tuple] = []  # (commit time, state)

    def tx(self, sql: str, apply) -> None:
        out = self.pg.psql(f"BEGIN; {sql}; SELECT txid_current(); COMMIT;", "shop")
        xid = [x for x in out.splitlines() if x.strip().isdigit()][-1].strip()
        ts = self.pg.psql(f"SELECT (extract(epoch from pg_xact_commit_timestamp('{xid}'::xid)) * 1000000)::bigint",
                          "shop")
        from tests.ingest_helpers import EPOCH

        apply(self.rows)
        self.history.append((EPOCH + timedelta(microseconds=int(ts)), self.state()))

    def state(self) -> dict:
        return {(Decimal(i),): {"id": {"N": str(i)}, "sku": {"S": r["sku"]}, "qty": {"N": r["qty"]}}
                for i, r in self.rows.items()}


def put(i, sku, qty):
    def f(rows):
        rows[i] = {"sku": sku, "qty": qty}
    return f


def many(*fs):
    def f(rows):
        for g in fs:
            g(rows)
    return f


def drop(*ids):
    def f(rows):
        for i in ids:
            rows.pop(i, None)
    return f


def check(s, history):
    for k, (at, state) in enumerate(history):
        assert lake_state(s, at) == state, f"commit {k} at {at}"
        if k + 1 < len(history):
            assert lake_state(s, history[k + 1][0] - timedelta(microseconds=1)) == state, f"before commit {k + 1}"


def test_wal2json_debezium_envelope_restores_every_commit(pg, tmp_path):
    from weaver.ingest import pg_logical

    run = pg.psql
    run("CREATE TABLE items (id int PRIMARY KEY, sku text NOT NULL, qty numeric(10,2) NOT NULL)", "shop")
    t = Table(pg)
    t.tx("INSERT INTO items VALUES (1, 'a', 1.50), (2, 'b', 2.00), (-4, 'neg', 0.25)",
         many(put(1, "a", "1.50"), put(2, "b", "2.00"), put(-4, "neg", "0.25")))
    lsn = pg_logical.create_slot(run, "shop", "weaver_items")
    snap = pg_logical.snapshot(run, "shop", "items", lsn)
    snap_state = t.state()
    t.history = []
    t.tx("INSERT INTO items VALUES (3, 'c', 3.00)", put(3, "c", "3.00"))
    t.tx("UPDATE items SET qty = qty + 1 WHERE id IN (1, 2)", many(put(1, "a", "2.50"), put(2, "b", "3.00")))
    t.tx("DELETE FROM items WHERE id = -4", drop(-4))
    t.tx("INSERT INTO items VALUES (10, 'x', 9.99); UPDATE items SET sku = 'c2' WHERE id = 3; DELETE FROM items WHERE id = 10",
         many(put(10, "x", "9.99"), put(3, "c2", "3.00"), drop(10)))
    first = pg_logical.drain(run, "shop", "weaver_items")
    f1 = pg_logical.write_events(snap + first, tmp_path / "events-1.json")

    s = load_settings(lake=str(tmp_path / "lake"))
    r1 = ingest(s, DebeziumFile(f1, keys="id"), partitioning=Partitioning(partitions=2, tag="N"))
    assert r1.source == "debezium:shop.public.items" and r1.changes_written == len(snap) + len(first)
    assert lake_state(s, t.history[0][0] - timedelta(microseconds=1)) == snap_state
    check(s, t.history)

    # Second window: more transactions, with the {schema, payload} wrapper this time.
    t.tx("UPDATE items SET qty = 0 WHERE id = 1", put(1, "a", "0.00"))
    t.tx("INSERT INTO items VALUES (4, 'd', 4.00), (5, 'e', 5.00)", many(put(4, "d", "4.00"), put(5, "e", "5.00")))
    t.tx("DELETE FROM items WHERE id IN (2, 5)", drop(2, 5))
    second = pg_logical.drain(run, "shop", "weaver_items")
    f2 = pg_logical.write_events(second, tmp_path / "events-2.json", wrapped=True)
    r2 = ingest(s, DebeziumFile(f2, keys="id"))
    assert r2.first_seq == r1.last_seq + 1 and r2.duplicates_skipped == 0
    assert r2.new_watermark.startswith("LSN ") and r2.old_watermark == r1.new_watermark
    check(s, t.history)

    # Re-delivery of the same events writes nothing; an overlapping file writes only what is new.
    before = lake_fingerprint(s)
    assert ingest(s, DebeziumFile(f2, keys="id")).changes_written == 0
    assert lake_fingerprint(s) == before
    t.tx("UPDATE items SET sku = 'z' WHERE id = 4", put(4, "z", "4.00"))
    third = pg_logical.drain(run, "shop", "weaver_items")
    f3 = pg_logical.write_events(second[-2:] + third, tmp_path / "events-3.json")
    r3 = ingest(s, DebeziumFile(f3, keys="id"))
    assert (r3.duplicates_skipped, r3.changes_written) == (2, len(third))
    check(s, t.history)
    # Events all below the watermark, never ingested as such (a subset): older than the watermark.
    f4 = pg_logical.write_events(first[:2], tmp_path / "events-4.json")
    with pytest.raises(StaleInputError):
        ingest(s, DebeziumFile(f4, keys="id"))

    # TRUNCATE deletes every key.
    t.tx("TRUNCATE items", lambda rows: rows.clear())
    f5 = pg_logical.write_events(pg_logical.drain(run, "shop", "weaver_items"), tmp_path / "events-5.json")
    assert [json.loads(x)["op"] for x in f5.read_text().splitlines()] == ["t"]
    ingest(s, DebeziumFile(f5, keys="id"))
    check(s, t.history)
    wm = load_watermark(s, "debezium:shop.public.items")
    assert wm.complete_to == t.history[-1][0] and wm.batch == 4
    run("SELECT pg_drop_replication_slot('weaver_items')", "shop")


def test_unknown_op_names_file_line_and_lsn(tmp_path):
    good = {"before": None, "after": {"id": 1}, "op": "c", "ts_ms": 1, "source": {"lsn": 100, "ts_ms": 1000, "db": "d",
                                                                                   "schema": "s", "table": "t"}}
    bad = {**good, "op": "x", "source": {**good["source"], "lsn": 200}}
    f = tmp_path / "ev.json"
    f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    s = load_settings(lake=str(tmp_path / "lake"))
    with pytest.raises(UnknownEventError, match=r"ev.json:2 \(LSN 0/C8\)"):
        ingest(s, DebeziumFile(f, keys="id"))
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))


def _dbz(op="c", after=None, before=None, **src):
    return {"before": before, "after": after, "op": op, "ts_ms": 1,
            "source": {"lsn": 100, "ts_ms": 1000, "db": "d", "schema": "s", "table": "t", **src}}


@pytest.mark.parametrize("line", [
    json.dumps(_dbz(after={"id": "\ud800"})),  # a lone surrogate in the key (JSON escape)
    json.dumps(_dbz(after={"id": "a", "v": "\udc00"})),  # ... in a value
    json.dumps(_dbz(op="d", before={"id": "\ud800"})),  # ... in a deleted key
    json.dumps(_dbz(after={"id": "a"}, ts_us=10 ** 20)),  # a commit time past year 9999
    json.dumps(_dbz(after={"id": "a"}, ts_ms="X")).replace('"ts_ms": "X"', '"ts_ms": 1e999'),  # an infinite one
], ids=["surrogate-key", "surrogate-value", "surrogate-deleted-key", "ts_us-overflow", "ts_ms-1e999"])
def test_an_unrepresentable_event_is_refused_by_name_and_writes_nothing(tmp_path, line):
    from weaver.ingest.errors import MalformedInputError

    good = json.dumps(_dbz(after={"id": "ok"}, lsn=50))
    f = tmp_path / "ev.json"
    f.write_text(good + "\n" + line + "\n")
    s = load_settings(lake=str(tmp_path / "lake"))
    with pytest.raises(MalformedInputError, match=r"ev.json:2 \(LSN 0/64\)"):
        ingest(s, DebeziumFile(f, keys="id"))
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))
    assert not storage.is_table(storage.uri_for(s, storage.INGEST_LOG))


@pytest.mark.parametrize("src", [
    {"lsn": -5},  # a negative integer
    {"lsn": True},  # a JSON boolean
    {"lsn": 2 ** 64},  # past an unsigned 64-bit position
    {"lsn": 1.5},  # a float
    {"lsn": "0/-5"},  # a signed hex half
    {"lsn": "123456789/0"},  # a hex half of more than 32 bits
    {"lsn": "-7"},  # a negative decimal string
    {"lsn": 100, "sequence": json.dumps(["-1", "100"])},  # a negative commit LSN
], ids=["negative", "bool", "2^64", "float", "signed-hex", "long-hex", "negative-text", "negative-commit"])
def test_an_lsn_outside_an_unsigned_64_bit_position_is_refused_by_name_and_writes_nothing(tmp_path, src):
    from weaver.ingest.errors import MalformedInputError

    f = tmp_path / "ev.json"
    f.write_text(json.dumps(_dbz(after={"id": "ok"}, lsn=50)) + "\n" + json.dumps(_dbz(after={"id": "a"}, **src)) + "\n")
    s = load_settings(lake=str(tmp_path / "lake"))
    with pytest.raises(MalformedInputError, match=r"ev.json:2"):
        ingest(s, DebeziumFile(f, keys="id"))
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))
    assert not storage.is_table(storage.uri_for(s, storage.INGEST_LOG))


def test_lsn_text_and_integer_forms_parse_to_the_same_position():
    from weaver.ingest.debezium import parse_lsn

    assert parse_lsn("16/B374D848") == 97_500_059_720  # hand-computed: 0x16 * 2**32 + 0xB374D848
    assert parse_lsn(97_500_059_720) == parse_lsn("97500059720") == 97_500_059_720
    assert parse_lsn(0) == parse_lsn("0/0") == 0 and parse_lsn(str(2 ** 64 - 1)) == 2 ** 64 - 1
