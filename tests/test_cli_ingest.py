"""`weaver ingest` through the real Typer app: --json summary, exactly once, exit 2 on bad input."""

from __future__ import annotations

import gzip
import json

from typer.testing import CliRunner

from tests.ingest_helpers import lake_fingerprint
from tests.test_ingest_dynamodb import T0, T1, full_export, incremental, make_writes, state_at
from weaver.core.settings import load_settings


def _run(*args: str):
    from weaver.cli import app

    return CliRunner().invoke(app, list(args))


def _json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_ingest_dynamodb_exports_json_summary_and_rerun(tmp_path):
    writes = make_writes()
    lake = str(tmp_path / "lake")
    full = full_export(tmp_path / "b", writes, T0)
    inc = incremental(tmp_path / "b", writes, T0, T1, "02-inc")
    res = _run("ingest", "--source", "dynamodb-export", "--input", str(full), "--keys", "pk,sk", "--partitions", "4",
               "--lake", lake, "--json")
    assert res.exit_code == 0, res.output
    first = _json(res)
    n = len(state_at(writes, T0))
    assert (first["records_read"], first["changes_written"], first["duplicates_skipped"]) == (n, n, 0)
    assert first["old_watermark"] is None and first["new_watermark"] == "2026-03-01T12:00:00Z (exclusive)"
    res = _run("ingest", "--source", "dynamodb-export", "--input", str(inc), "--keys", "pk,sk", "--lake", lake, "--json")
    second = _json(res)
    assert second["old_watermark"] == first["new_watermark"]
    assert second["new_watermark"] == "2026-03-01T13:00:00Z (exclusive)" and second["first_seq"] == n + 1
    again = _json(_run("ingest", "--source", "dynamodb-export", "--input", str(inc), "--keys", "pk,sk", "--lake", lake,
                       "--json"))
    assert (again["changes_written"], again["duplicates_skipped"]) == (0, second["records_read"])
    human = _run("ingest", "--source", "dynamodb-export", "--input", str(inc), "--keys", "pk,sk", "--lake", lake)
    assert human.exit_code == 0 and "skipped" in human.stdout
    other = _run("ingest", "--source", "dynamodb-export", "--input", str(inc), "--keys", "pk", "--lake", lake, "--json")
    assert other.exit_code == 2 and "--keys pk,sk" in _json(other)["message"]  # keys stay encoded one way


def test_bad_input_exits_2_naming_file_and_line_and_writes_nothing(tmp_path):
    writes = make_writes()
    lake = str(tmp_path / "lake")
    full = full_export(tmp_path / "b", writes, T0)
    f = sorted((full / "data").glob("*.gz"))[0]
    lines = gzip.decompress(f.read_bytes()).decode().splitlines()
    lines[2] = lines[2][:-5]  # a truncated JSON line...
    f.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    res = _run("ingest", "--source", "dynamodb-export", "--input", str(full), "--keys", "pk,sk", "--lake", lake, "--json")
    assert res.exit_code == 2
    err = _json(res)
    assert err["error"] == "ChecksumMismatchError" and f.name in err["message"]  # ...caught by the manifest first

    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"op": "c", "after": {"id": 1}, "source": {"lsn": 5, "ts_ms": 1}}) + "\n{oops\n")
    res = _run("ingest", "--source", "debezium", "--input", str(ev), "--keys", "id", "--lake", lake, "--json")
    assert res.exit_code == 2
    err = _json(res)
    assert err["error"] == "MalformedInputError" and "ev.json:2" in err["message"]
    res = _run("ingest", "--source", "kafka", "--input", str(ev), "--keys", "id", "--lake", lake)
    assert res.exit_code == 2 and "dynamodb-export" in res.output
    assert set(lake_fingerprint(load_settings(lake=lake)).values()) == {None}


def test_boundaries_file_and_configured_source_specs(tmp_path):
    import pytest

    from weaver.core.errors import InvalidParameterError
    from weaver.ingest.keys import encode_key
    from weaver.ingest.sources import SourceSpec, configured_source, partitioning_for

    b = tmp_path / "bounds.json"
    b.write_text(json.dumps(["user#005", ["user#009", 3], {"S": "w"}]))
    spec = SourceSpec(source="debezium", input="x", keys="id", boundaries=str(b))
    assert partitioning_for(spec).bounds() == [encode_key(["user#005"]), encode_key(["user#009", 3]),
                                               encode_key(["w"])]
    b.write_text(json.dumps(["b", "a"]))
    with pytest.raises(InvalidParameterError, match="increasing"):
        partitioning_for(spec)
    assert configured_source(env={}) is None
    got = configured_source(env={"WEAVER_INGEST_SOURCE": '{"source": "delta-cdf", "input": "/t", "keys": "id"}'})
    assert (got.source, got.input, got.keys) == ("delta-cdf", "/t", "id")
    f = tmp_path / "src.json"
    f.write_text('{"source": "debezium", "input": "/e.json", "keys": "id", "name": "items"}')
    assert configured_source(env={}, value=str(f)).name == "items"
    with pytest.raises(InvalidParameterError, match="expected one of"):
        configured_source(env={}, value={"source": "kafka", "input": "/x", "keys": "id"})
