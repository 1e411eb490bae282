"""Malformed and repeated input through the source adapters: named errors with nothing written, and
repeats inside one input kept once.

Oracles: the test's own hand-built inputs and the rows they must give (a fold of the events the
test wrote, written out by hand); "nothing written" is every ingestion table's Delta version
before and after (tests/ingest_helpers.lake_fingerprint), or no table at all in a fresh lake.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ingest_helpers import lake_fingerprint, lake_state, us, write_export
from weaver.core import storage
from weaver.core.errors import CorruptTableError
from weaver.core.settings import load_settings
from weaver.ingest import ingest
from weaver.ingest.debezium import DebeziumFile
from weaver.ingest.delta_cdf import DeltaCDF
from weaver.ingest.dynamodb import DynamoDBExport
from weaver.ingest.errors import MalformedInputError
from weaver.ingest.sources import SourceSpec, partitioning_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)
W = us(T0 + timedelta(minutes=5))  # a write time inside the window [T0, T1)
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
CDF = {"delta.enableChangeDataFeed": "true"}


# --- DynamoDB exports ----------------------------------------------------------------------------
def rewrite_export(d: Path, lines: list[bytes], **entry_patch) -> Path:
    """Replace the export's one data file by `lines` (raw bytes) and keep its manifest consistent."""
    f = sorted((d / "data").glob("*.json.gz"))[0]
    raw = gzip.compress(b"".join(line + b"\n" for line in lines))
    f.write_bytes(raw)
    entry = json.loads((d / "manifest-files.json").read_text().splitlines()[0])
    entry.update(itemCount=len(lines), md5Checksum=base64.b64encode(hashlib.md5(raw).digest()).decode())
    entry.update(entry_patch)
    (d / "manifest-files.json").write_text(json.dumps(entry) + "\n")
    return f


def incremental(root: Path, export_id: str, lines_per_file: list[list[dict]], **kw) -> Path:
    return write_export(root, export_id, table="orders", export_type="INCREMENTAL_EXPORT", from_time=T0, to_time=T1,
                        lines_per_file=lines_per_file, **kw)


def put(pk: str, image: dict | None = None, when: int = W) -> dict:
    return {"Metadata": {"WriteTimestampMicros": {"N": str(when)}}, "Keys": {"pk": {"S": pk}},
            "NewImage": {"pk": {"S": pk}, **(image or {"qty": {"N": "1"}})}}


@pytest.fixture()
def dyn(tmp_path):
    """A lake holding a full export at T0 (item 'base'), and the bucket the test writes exports to."""
    root = tmp_path / "bucket"
    s = load_settings(lake=str(tmp_path / "lake"))
    full = write_export(root, "00-full", table="orders", export_type="FULL_EXPORT", export_time=T0,
                        lines_per_file=[[{"Item": {"pk": {"S": "base"}, "qty": {"N": "7"}}}]])
    ingest(s, DynamoDBExport(full, keys="pk"))
    return root, s


@pytest.mark.parametrize("value,attribute", [
    ({"S": {"a": 1}}, "NewImage.note"),
    ({"S": 5}, "NewImage.note"),
    ({"N": "not-a-number"}, "NewImage.note"),
    ({"N": "NaN"}, "NewImage.note"),
    ({"ZZ": "1"}, "NewImage.note"),
    ({"B": "not base64!"}, "NewImage.note"),
    ({"BOOL": "true"}, "NewImage.note"),
    ({"NULL": False}, "NewImage.note"),
    ({"L": {"S": "x"}}, "NewImage.note"),
    ({"M": {"inner": {"N": 5}}}, "NewImage.note.inner"),
    ({"L": [{"S": "ok"}, {"QQ": 1}]}, r"NewImage.note\[1\]"),
    ({"SS": []}, "NewImage.note"),
    ({"NS": ["1", "one"]}, "NewImage.note"),
    ({"BS": [5]}, "NewImage.note"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_a_wrong_typed_attribute_value_is_refused_naming_file_line_and_attribute(dyn, value, attribute):
    root, s = dyn
    d = incremental(root, "01-inc", [[put("a"), put("b", {"note": value})]])
    before = lake_fingerprint(s)
    with pytest.raises(MalformedInputError, match=rf"01-inc-000.json.gz:2: attribute {attribute}"):
        ingest(s, DynamoDBExport(d, keys="pk"))
    assert lake_fingerprint(s) == before


def test_export_window_instants_without_a_timezone_are_refused(dyn):
    root, s = dyn
    d = incremental(root, "01-inc", [[put("a")]])
    summary = json.loads((d / "manifest-summary.json").read_text())
    summary.update(exportFromTime="2026-03-01T12:00:00", exportToTime="2026-03-01T13:00:00")
    (d / "manifest-summary.json").write_text(json.dumps(summary))
    before = lake_fingerprint(s)
    with pytest.raises(MalformedInputError, match="exportFromTime.*no timezone"):
        ingest(s, DynamoDBExport(d, keys="pk"))
    summary.update(exportFromTime="2026-03-01T12:00:00Z")  # the end alone without one: refused too
    (d / "manifest-summary.json").write_text(json.dumps(summary))
    with pytest.raises(MalformedInputError, match="exportToTime.*no timezone"):
        ingest(s, DynamoDBExport(d, keys="pk"))
    assert lake_fingerprint(s) == before


META = '"Metadata": {"WriteTimestampMicros": {"N": "%d"}}' % W


@pytest.mark.parametrize("line,where", [
    ('{%s, "Keys": "pkx"}' % META, "Keys"),
    ('{%s, "Keys": null}' % META, "Keys"),
    ('{%s, "Keys": 5}' % META, "Keys"),
    ('{%s, "Keys": {"pk": {"S": "a"}}, "NewImage": 7}' % META, "NewImage"),
    ('{%s, "Keys": {"pk": {"M": []}}}' % META, "Keys.pk"),
    ('{%s, "Keys": {"pk": {"S": "a"}}, "x": %s}' % (META, "9" * 5000), "4300"),
    ('{%s, "Keys": {"pk": {"S": "a"}}, "OldImage": {"pk": {"S": 1}}}' % META, "OldImage.pk"),
], ids=["keys-text", "keys-null", "keys-number", "newimage-number", "key-M-list", "int-5000-digits",
        "oldimage-wrong-type"])
def test_a_malformed_record_is_a_named_error_not_a_traceback(dyn, line, where):
    root, s = dyn
    d = incremental(root, "01-inc", [[put("a")]])
    f = rewrite_export(d, [json.dumps(put("a")).encode(), line.encode()])
    before = lake_fingerprint(s)
    with pytest.raises(MalformedInputError, match=rf"{f.name}:2:.*{where}"):
        ingest(s, DynamoDBExport(d, keys="pk"))
    assert lake_fingerprint(s) == before


@pytest.mark.parametrize("damage,match", [
    ({"itemCount": "two"}, "itemCount 'two'"),
    ({"itemCount": None}, "itemCount None"),
    ({"dataFileS3Key": 5}, "dataFileS3Key"),
    ("summary-exportArn", "exportArn"),
    ("summary-not-utf8", "manifest-summary.json: bytes that are not UTF-8"),
    ("files-not-utf8", r"manifest-files.json:1: bytes that are not UTF-8"),
    ("data-not-utf8", r"01-inc-000.json.gz:2: bytes that are not UTF-8"),
], ids=["itemCount-text", "itemCount-null", "dataFileS3Key-number", "exportArn-number", "summary-not-utf8",
        "files-not-utf8", "data-not-utf8"])
def test_a_malformed_manifest_or_file_is_a_named_error_not_a_traceback(dyn, damage, match):
    root, s = dyn
    d = incremental(root, "01-inc", [[put("a")]])
    if isinstance(damage, dict):
        rewrite_export(d, [json.dumps(put("a")).encode()], **damage)
    elif damage == "summary-exportArn":
        summary = json.loads((d / "manifest-summary.json").read_text())
        (d / "manifest-summary.json").write_text(json.dumps({**summary, "exportArn": 12}))
    elif damage == "summary-not-utf8":
        (d / "manifest-summary.json").write_bytes(b'{"exportArn": "arn:\xff"}')
    elif damage == "files-not-utf8":
        (d / "manifest-files.json").write_bytes(b'{"dataFileS3Key": "data/\xfe.json.gz"}\n')
    else:
        rewrite_export(d, [json.dumps(put("a")).encode(), b'{"Keys": {"pk": {"S": "\xff"}}}'])
    before = lake_fingerprint(s)
    with pytest.raises(MalformedInputError, match=match):
        ingest(s, DynamoDBExport(d, keys="pk"))
    assert lake_fingerprint(s) == before


EVERY_TYPE = {"n": {"N": "-1.50E3"}, "b": {"B": "AAE="}, "t": {"BOOL": False}, "z": {"NULL": True},
              "l": {"L": [{"S": "x"}, {"N": "1"}]}, "m": {"M": {"k": {"SS": ["p", "q"]}}}, "ns": {"NS": ["1", "2.5"]},
              "bs": {"BS": ["AA=="]}, "s": {"S": ""}}


def test_an_export_record_repeated_is_kept_once_and_items_sharing_a_write_time_are_all_kept(dyn):
    root, s = dyn
    a = put("a", EVERY_TYPE)  # every attribute type, valid: none is refused
    b = put("b", {"qty": {"N": "2"}})  # another item written in the same microsecond: a real change
    d = incremental(root, "01-inc", [[a, b], [a]])  # the first record again, in the second data file
    batch = DynamoDBExport(d, keys="pk").read(None)
    assert batch.records_read == 3 and len(batch.changes) == 2
    assert any("1 repeated" in n for n in batch.notes)
    r = ingest(s, DynamoDBExport(d, keys="pk"))
    assert r.records_read == 3 and r.changes_written == 2
    assert lake_state(s, T1 - timedelta(microseconds=1)) == {
        ("base",): {"pk": {"S": "base"}, "qty": {"N": "7"}},
        ("a",): {"pk": {"S": "a"}, **EVERY_TYPE},
        ("b",): {"pk": {"S": "b"}, "qty": {"N": "2"}},
    }

    # Two DIFFERENT records of one item at one write time: no order between them, refused.
    before = lake_fingerprint(s)
    d2 = write_export(root, "02-inc", table="orders", export_type="INCREMENTAL_EXPORT", from_time=T1,
                      to_time=T1 + timedelta(hours=1),
                      lines_per_file=[[put("c", when=us(T1)), put("c", {"qty": {"N": "9"}}, when=us(T1))]])
    with pytest.raises(MalformedInputError, match="02-inc-000.json.gz:2: a different record of the same item"):
        ingest(s, DynamoDBExport(d2, keys="pk"))
    assert lake_fingerprint(s) == before


# --- Debezium ------------------------------------------------------------------------------------
def dbz(op, lsn, commit, ms, after=None, before=None, **src) -> dict:
    return {"op": op, "after": after, "before": before, "ts_ms": ms + 3,
            "source": {"db": "shop", "schema": "public", "table": "items", "lsn": lsn, "ts_ms": ms,
                       "sequence": json.dumps([None if commit is None else str(commit), str(lsn)]), **src}}


def lines(path: Path, events: list) -> Path:
    raw = [e if isinstance(e, bytes) else (e if isinstance(e, str) else json.dumps(e)).encode() for e in events]
    path.write_bytes(b"".join(line + b"\n" for line in raw))
    return path


MS = 1772366400000  # 2026-03-01T12:00:00Z


@pytest.fixture()
def dbz_lake(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    ingest(s, DebeziumFile(lines(tmp_path / "e0.json", [dbz("c", 50, 60, MS, {"id": 0, "v": "seed"})]), keys="id"))
    return s


GOOD = json.dumps(dbz("c", 500, 510, MS + 5000, {"id": 2, "v": "x"}))


@pytest.mark.parametrize("line,error", [
    (json.dumps(dbz("c", 500, 510, MS, {"id": 2})).replace('"op": "c"', '"op": ["c"]'), "op \\['c'\\]"),
    (json.dumps(dbz("c", 500, 510, MS, {"id": 2})).replace('"op": "c"', '"op": {}'), "op {}"),
    (json.dumps({**dbz("c", 500, 510, MS, {"id": 2}), "source": {
        "db": "shop", "schema": "public", "table": "items", "lsn": 500, "ts_ms": MS, "sequence": {"a": 1}}}),
     "source.sequence"),
    (json.dumps({**dbz("c", 500, 510, MS, {"id": 2}), "source": {
        "db": "shop", "schema": "public", "table": "items", "lsn": 500, "ts_ms": MS, "sequence": '{"a":1}'}}),
     "source.sequence"),
    (GOOD.replace('"v": "x"', '"v": ' + "9" * 5000), "4300"),
    (GOOD.replace('"v": "x"', '"v": "a\\u00ff"').encode().replace(b"\\u00ff", b"\xff"), "not UTF-8"),
], ids=["op-list", "op-dict", "sequence-dict", "sequence-text-dict", "int-5000-digits", "not-utf8"])
def test_a_malformed_debezium_event_is_a_named_error_not_a_traceback(tmp_path, dbz_lake, line, error):
    f = lines(tmp_path / "ev.json", [json.dumps(dbz("c", 400, 410, MS + 4000, {"id": 1})), line])
    before = lake_fingerprint(dbz_lake)
    with pytest.raises(MalformedInputError, match=rf"ev.json:2.*{error}"):
        ingest(dbz_lake, DebeziumFile(f, keys="id"))
    assert lake_fingerprint(dbz_lake) == before


def test_a_redelivered_debezium_event_is_kept_once_and_a_differing_one_is_refused(tmp_path, dbz_lake):
    s = dbz_lake
    create = dbz("c", 200, 210, MS + 1000, {"id": 1, "v": "a"})
    update = dbz("u", 300, 310, MS + 2000, {"id": 1, "v": "b"}, before={"id": 1})
    again = {**create, "ts_ms": create["ts_ms"] + 999}  # redelivered later: only the connector's clock moved
    f = lines(tmp_path / "dup.json", [create, update, again])
    batch = DebeziumFile(f, keys="id").read(None)
    assert batch.records_read == 3 and len(batch.changes) == 2
    assert any("1 repeated" in n for n in batch.notes)
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert r.records_read == 3 and r.changes_written == 2
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).sort_by("seq")
    assert log.column("op").to_pylist() == ["PUT", "PUT", "PUT"]  # the seed, the create, the update
    at = datetime(2026, 3, 1, 12, 0, 1, tzinfo=timezone.utc)
    seed = {"id": {"N": "0"}, "v": {"S": "seed"}}
    assert lake_state(s, at) == {(Decimal(0),): seed, (Decimal(1),): {"id": {"N": "1"}, "v": {"S": "a"}}}
    assert lake_state(s, at + timedelta(seconds=1)) == {(Decimal(0),): seed,
                                                        (Decimal(1),): {"id": {"N": "1"}, "v": {"S": "b"}}}

    # Two different events at one position (and key): the input holds two versions of one event.
    before = lake_fingerprint(s)
    other = dbz("c", 400, 410, MS + 4000, {"id": 4, "v": "one"})
    f2 = lines(tmp_path / "conflict.json", [other, {**other, "after": {"id": 4, "v": "two"}}])
    with pytest.raises(MalformedInputError, match="conflict.json:2.*different change.*conflict.json:1"):
        ingest(s, DebeziumFile(f2, keys="id"))
    assert lake_fingerprint(s) == before


def test_snapshot_rows_sharing_one_position_are_all_kept_and_a_repeated_one_once(tmp_path):
    # A Debezium snapshot gives every 'r' event the slot's LSN and no commit LSN: one position, many keys.
    rows = [dbz("r", 100, None, MS, {"id": i, "v": f"r{i}"}) for i in (3, 1, 2)]
    f = lines(tmp_path / "snap.json", rows + [rows[1]])
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert r.records_read == 4 and r.changes_written == 3
    assert lake_state(s, T0) == {(Decimal(i),): {"id": {"N": str(i)}, "v": {"S": f"r{i}"}} for i in (1, 2, 3)}


# --- identity ------------------------------------------------------------------------------------
def test_each_adapter_names_what_it_read_beyond_the_source_name(tmp_path):
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    d = incremental(tmp_path / "bucket", "01-inc", [[put("a")]])
    assert DynamoDBExport(d, keys="pk").read(None).identity == TABLE_ARN
    summary = json.loads((d / "manifest-summary.json").read_text())
    del summary["tableArn"]
    (d / "manifest-summary.json").write_text(json.dumps(summary))
    assert DynamoDBExport(d, keys="pk", name="orders").read(None).identity is None

    uri = str(tmp_path / "orders")
    write_deltalake(uri, pa.table({"id": [1], "v": ["a"]}), configuration=CDF)
    assert DeltaCDF(uri, keys="id").read(None).identity == DeltaTable(uri).metadata().id

    named = lines(tmp_path / "ev.json", [dbz("c", 5, 6, MS, {"id": 1}, name="eu-shop")])
    assert DebeziumFile(named, keys="id").read(None).identity == "eu-shop"
    two = lines(tmp_path / "ev2.json", [dbz("c", 5, 6, MS, {"id": 1}, name="eu-shop"),
                                        dbz("c", 7, 8, MS, {"id": 2}, name="us-shop")])
    with pytest.raises(MalformedInputError, match="ev2.json:2.*us-shop"):
        DebeziumFile(two, keys="id")


# --- Delta CDF -----------------------------------------------------------------------------------
def test_a_range_read_again_through_another_spelling_of_its_location_is_recognised(tmp_path, monkeypatch):
    import pyarrow as pa
    from deltalake import write_deltalake

    monkeypatch.chdir(tmp_path)
    write_deltalake("src", pa.table({"id": [1, 2], "v": ["a", "b"]}), configuration=CDF)
    write_deltalake("src", pa.table({"id": [3], "v": ["c"]}), mode="append")
    s = load_settings(lake=str(tmp_path / "lake"))
    first = ingest(s, DeltaCDF("src", keys="id", name="orders", starting_version=0, ending_version=1))
    assert first.changes_written == 3
    before = lake_fingerprint(s)
    for spelling in ("src/", "./src", str(tmp_path / "src"), str(tmp_path / "src") + "/", f"file://{tmp_path}/src"):
        again = ingest(s, DeltaCDF(spelling, keys="id", name="orders", starting_version=0, ending_version=1))
        assert (again.changes_written, again.first_seq, again.last_seq) == (0, 1, 3), spelling
    assert lake_fingerprint(s) == before

    # A lake that committed the range under the fingerprint of the location as spelled then (sha256 of
    # "<uri>@<start>-<end>", as it was computed before locations were normalised) still recognises it.
    class SpelledAsGiven:
        def __init__(self, adapter):
            self.adapter, self.source, self.keys = adapter, adapter.source, adapter.keys

        def read(self, since, progress=None):
            batch = self.adapter.read(since, progress)
            batch.fingerprint = "delta-cdf:" + hashlib.sha256(b"src/@0-1").hexdigest()
            return batch

        def describe(self, pos):
            return self.adapter.describe(pos)

        def contiguous(self, watermark, start):
            return self.adapter.contiguous(watermark, start)

    old = load_settings(lake=str(tmp_path / "old-lake"))
    ingest(old, SpelledAsGiven(DeltaCDF("src/", keys="id", name="orders", starting_version=0, ending_version=1)))
    before = lake_fingerprint(old)
    again = ingest(old, DeltaCDF("src/", keys="id", name="orders", starting_version=0, ending_version=1))
    assert again.changes_written == 0 and lake_fingerprint(old) == before


def test_a_source_table_with_a_corrupt_log_is_a_named_error(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    uri = tmp_path / "src"
    write_deltalake(str(uri), pa.table({"id": [1], "v": ["a"]}), configuration=CDF)
    s = load_settings(lake=str(tmp_path / "lake"))
    adapter = DeltaCDF(str(uri), keys="id")  # opened while the log was whole...
    write_deltalake(str(uri), pa.table({"id": [2], "v": ["b"]}), mode="append")
    (uri / "_delta_log" / "00000000000000000001.json").write_text("{oops")
    with pytest.raises(CorruptTableError, match="src"):  # ...then its next commit is unreadable
        ingest(s, adapter)
    (uri / "_delta_log" / "00000000000000000000.json").write_text("{oops")
    with pytest.raises(CorruptTableError, match="_delta_log"):
        DeltaCDF(str(uri), keys="id")
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))
    assert not storage.is_table(storage.uri_for(s, storage.PARTITIONS))


# --- boundaries file and the CLI -----------------------------------------------------------------
def test_a_malformed_boundaries_file_is_a_named_error(tmp_path):
    b = tmp_path / "bounds.json"
    spec = SourceSpec(source="debezium", input="x", keys="id", boundaries=str(b))
    b.write_text('[{"M": []}]')
    with pytest.raises(MalformedInputError, match="bounds.json.*'M'"):
        partitioning_for(spec)
    b.write_bytes(b'["a\xff"]')
    with pytest.raises(MalformedInputError, match="bounds.json.*not UTF-8"):
        partitioning_for(spec)
    b.write_text("[%s]" % ("9" * 5000))
    with pytest.raises(MalformedInputError, match="bounds.json"):
        partitioning_for(spec)


def _cli(*args: str):
    from typer.testing import CliRunner

    from weaver.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("option,value", [("--starting-version", "abc"), ("--ending-version", "1.5"),
                                          ("--partitions", "many")])
def test_a_bad_option_value_under_json_is_the_json_error_object(tmp_path, option, value):
    lake = str(tmp_path / "lake")
    res = _cli("ingest", "--source", "delta-cdf", "--input", str(tmp_path / "t"), "--keys", "id", option, value,
               "--lake", lake, "--json")
    assert res.exit_code == 2
    err = json.loads(res.stdout.strip().splitlines()[-1])
    assert err["error"] == "InvalidParameterError" and option in err["message"] and value in err["message"]
    assert not Path(lake).exists()


def test_a_malformed_event_through_the_cli_exits_2_with_the_json_error(tmp_path):
    lake = str(tmp_path / "lake")
    f = lines(tmp_path / "ev.json", [json.dumps(dbz("c", 5, 6, MS, {"id": 1})).replace('"op": "c"', '"op": ["c"]')])
    res = _cli("ingest", "--source", "debezium", "--input", str(f), "--keys", "id", "--lake", lake, "--json")
    assert res.exit_code == 2, res.output
    err = json.loads(res.stdout.strip().splitlines()[-1])
    assert err["error"] == "MalformedInputError" and "ev.json:1" in err["message"]
    assert not Path(lake).exists()


@pytest.mark.parametrize("n, ok", [
    ("9" * 38, True), ("-" + "9" * 38, True), ("0." + "1" * 36, True), ("1" * 38 + "00", True),
    ("9" * 39, False), ("-" + "9" * 39, False), ("1." + "1" * 38, False), ("1E126", False), ("1E-131", False),
    ("9.99E125", True), ("1E-130", True), ("0", True), ("-0.0", True),
], ids=lambda v: str(v)[:12])
def test_dynamodb_numbers_are_held_to_38_digits_and_their_range_at_every_length(n, ok):
    """DynamoDB numbers: at most 38 significant digits, magnitude in [1E-130, 1E+126) - checked the
    same way whether the text is short (no Decimal needed) or long (hand-picked on both sides)."""
    from weaver.ingest.errors import MalformedInputError
    from weaver.ingest.values import check_value

    if ok:
        check_value({"N": n}, where="t")
    else:
        with pytest.raises(MalformedInputError, match="outside DynamoDB's numbers"):
            check_value({"N": n}, where="t")
