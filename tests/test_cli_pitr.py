"""`weaver snapshot | restore | restore-table | vacuum` through the real Typer app."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.lakes import split_log, write_lake
from tests.oracle import fold, rows_to_dict


def _run(*args: str):
    from weaver.cli import app

    return CliRunner().invoke(app, list(args))


def _json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_restore_writes_the_oracle_rows_and_a_json_summary(tmp_path):
    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps)
    at = log["changes"][10]["ts"]  # seq 11
    out = tmp_path / "out" / "p0001.parquet"
    res = _run("restore", "--partition", "p0001", "--at", at.isoformat(), "--out", str(out), "--lake", lake, "--json")
    assert res.exit_code == 0, res.output
    obj = _json(res)
    assert obj["partition_id"] == "p0001" and obj["as_of_seq"] == 11 and obj["path"] == "standard"
    assert obj["source"] == "p0001@9" and obj["changes_replayed"] == 1  # seq 11 (k15); seq 10 is k60, not in range
    table = pq.read_table(out)
    assert table.column_names == ["key", "value"]
    assert rows_to_dict(table) == fold(log["changes"], key_hi="k50", at=at)
    assert obj["rows"] == table.num_rows

    human = _run("restore", "--partition", "p0001", "--at", at.isoformat(), "--out", str(out), "--lake", lake)
    assert human.exit_code == 0 and "p0001" in human.stdout and "p0001@9" in human.stdout


def test_bad_input_exits_2_with_a_named_error(tmp_path):
    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps)
    out = tmp_path / "x.parquet"
    naive = _run("restore", "--partition", "p0001", "--at", "2026-01-01T00:00:05", "--out", str(out), "--lake", lake)
    assert naive.exit_code == 2 and "timezone" in naive.output
    unknown = _run("restore", "--partition", "p0042", "--at", "2026-01-01T00:00:05Z", "--out", str(out),
                   "--lake", lake, "--json")
    assert unknown.exit_code == 2 and _json(unknown)["error"] == "UnknownPartitionError"
    not_parquet = _run("restore", "--partition", "p0001", "--at", "2026-01-01T00:00:05Z", "--out",
                       str(tmp_path / "x.csv"), "--lake", lake, "--json")
    assert not_parquet.exit_code == 2 and _json(not_parquet)["error"] == "InvalidParameterError"
    assert not out.exists() and not (tmp_path / "x.csv").exists()


def test_vacuum_dry_run_then_real(tmp_path):
    from weaver.pitr import read_snapshot_catalog
    from weaver.core.settings import load_settings

    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps)
    now = log["changes"][-1]["ts"]
    window = f"{int((now - log['changes'][9]['ts']).total_seconds())}s"  # starts at seq 10
    dry = _run("vacuum", "--dry-run", "--now", now.isoformat(), "--recovery-window", window, "--lake", lake, "--json")
    assert dry.exit_code == 0, dry.output
    obj = _json(dry)
    assert obj["dry_run"] is True and obj["expire"] == ["p0000@3"] and obj["log_rows_deleted"] == 8
    assert len(read_snapshot_catalog(load_settings(lake=lake))) == 3
    real = _run("vacuum", "--now", now.isoformat(), "--recovery-window", window, "--lake", lake, "--json")
    assert real.exit_code == 0 and _json(real)["snapshots_expired"] == 1
    assert sorted(read_snapshot_catalog(load_settings(lake=lake)).column("snapshot_id").to_pylist()) == ["p0001@9", "p0002@9"]
    bad = _run("vacuum", "--now", now.isoformat(), "--recovery-window", "soon", "--lake", lake, "--json")
    assert bad.exit_code == 2 and _json(bad)["error"] == "InvalidParameterError"


@pytest.mark.spark
def test_snapshot_command_takes_then_skips(spark, tmp_path):
    log, _ = split_log()
    lake = write_lake(tmp_path / "lake", log)
    at = log["changes"][8]["ts"].isoformat()  # seq 9
    first = _run("snapshot", "--at", at, "--lake", lake, "--json")
    assert first.exit_code == 0, first.output
    obj = _json(first)
    assert obj["as_of_seq"] == 9 and obj["taken"] == ["p0001@9", "p0002@9"]
    assert obj["rows"] == len(fold(log["changes"], upto_seq=9))
    again = _run("snapshot", "--at", at, "--lake", lake, "--json")
    assert _json(again)["taken"] == [] and _json(again)["skipped"] == ["p0001@9", "p0002@9"]


def test_restore_out_inside_the_lakes_tables_is_refused_and_nothing_changes(tmp_path):
    """`weaver restore --out` naming a change-log data file (or a new file in a contract table)
    exits 2 with a named error before restoring; every file of the lake stays as it was."""
    from pathlib import Path

    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps)
    at = log["changes"][10]["ts"].isoformat()
    before = {p: p.read_bytes() for p in sorted(Path(lake).rglob("*")) if p.is_file()}
    data_file = next(str(p) for p in before if "changelog" in p.parts and p.suffix == ".parquet")
    for out in (data_file, str(Path(lake) / "changelog" / "new.parquet"), str(Path(lake) / "snapshots" / "a.parquet")):
        res = _run("restore", "--partition", "p0001", "--at", at, "--out", out, "--lake", lake, "--json")
        assert res.exit_code == 2, res.output
        assert _json(res)["error"] == "InvalidParameterError" and "inside the lake's own" in _json(res)["message"]
    assert {p: p.read_bytes() for p in sorted(Path(lake).rglob("*")) if p.is_file()} == before
