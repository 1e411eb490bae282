"""Whole-table restore through Spark: partitions with bases taken at different times coalesce to
one point in time; written as a new Delta table; the lake's tables are never mutated."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable

from tests.lakes import build_log, write_lake
from tests.oracle import fold

# Three partitions [ ,k33) [k33,k66) [k66, ); p0001 splits at k50 after seq 8 into p0003/p0004.
EVENTS = [(10, "PUT", 1000, 1, 1), (40, "PUT", 1000, 1, 1), (70, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1),
          (45, "PUT", 1000, 1, 1), (80, "PUT", 1000, 1, 1), (60, "PUT", 1000, 1, 1), (10, "DELETE", 1000, 1, 1),
          (45, "PUT", 1000, 0, 50),  # the split
          (55, "PUT", 1000, 1, 1), (35, "PUT", 1000, 1, 1), (70, "DELETE", 1000, 1, 1), (25, "PUT", 1000, 1, 1),
          (45, "DELETE", 1000, 1, 1), (99, "PUT", 1000, 1, 1), (60, "PUT", 1000, 1, 1)]
# Bases at different times: p0000 at seq 4, p0002 at seq 6, p0003 (a child) at 10, p0004 none at all.
CHOSEN = {"p0000@4", "p0002@6", "p0003@10"}


def _lake(tmp_path):
    from weaver.core.settings import load_settings

    log = build_log(EVENTS, 3)
    assert log["splits"][0]["split_seq"] == 8 and log["splits"][0]["parent_id"] == "p0001"
    lake = write_lake(tmp_path / "lake", log, [4, 6, 10], snapshot_ids=CHOSEN)
    return log, load_settings(lake=lake)


def _versions(s):
    from weaver.core import storage

    names = (storage.CHANGELOG, storage.PARTITIONS, storage.SPLITS, storage.SNAPSHOTS, storage.SNAPSHOT_CATALOG)
    return {n: DeltaTable(storage.uri_for(s, n)).version() for n in names}


def _by_partition(out_uri: str) -> dict[str, dict[str, bytes]]:
    t = DeltaTable(out_uri).to_pyarrow_table()
    out: dict[str, dict[str, bytes]] = {}
    for r in t.to_pylist():
        assert r["key"] not in out.setdefault(r["partition_id"], {})
        out[r["partition_id"]][r["key"]] = r["value"]
    return out


@pytest.mark.spark
@pytest.mark.slow
def test_restore_table_coalesces_bases_to_one_instant(spark, tmp_path):
    from typer.testing import CliRunner

    from weaver.cli import app
    from weaver.pitr import restore_table

    log, s = _lake(tmp_path)
    ranges = {p["partition_id"]: (p["key_lo"], p["key_hi"]) for p in log["partitions"]}
    before = _versions(s)
    out = str(tmp_path / "restored")
    at = log["changes"][13]["ts"]  # seq 14, after the split

    r = restore_table(spark, s, at, out)
    assert r["as_of_seq"] == 14 and r["partitions"] == 4
    assert r["base_seqs"] == [0, 4, 6, 10] and r["sources"] == sorted(CHOSEN)
    got = _by_partition(out)
    assert set(got) <= {"p0000", "p0002", "p0003", "p0004"}
    for pid in ("p0000", "p0002", "p0003", "p0004"):
        lo, hi = ranges[pid]
        assert got.get(pid, {}) == fold(log["changes"], key_lo=lo, key_hi=hi, at=at), pid
    assert r["rows"] == len(fold(log["changes"], at=at))
    assert _versions(s) == before  # the lake's tables were only read

    # Rerun into the same location at an instant before the split (via the CLI): replaced whole.
    early = log["changes"][6]["ts"]  # seq 7
    res = CliRunner().invoke(app, ["restore-table", "--at", early.isoformat(), "--out", out, "--lake", s.lake, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["as_of_seq"] == 7 and summary["partitions"] == 3
    got = _by_partition(out)
    for pid in ("p0000", "p0001", "p0002"):
        lo, hi = ranges[pid]
        assert got.get(pid, {}) == fold(log["changes"], key_lo=lo, key_hi=hi, at=early), pid
    assert sum(len(v) for v in got.values()) == len(fold(log["changes"], at=early))
    assert _versions(s) == before


def test_restore_table_refuses_to_write_into_the_lake(tmp_path):
    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError
    from weaver.pitr import restore_table

    log, s = _lake(tmp_path)
    with pytest.raises(InvalidParameterError, match="changelog"):
        restore_table(None, s, log["changes"][-1]["ts"], storage.uri_for(s, storage.CHANGELOG))


@pytest.mark.spark
def test_a_restore_killed_before_its_first_commit_is_finished_by_the_rerun(spark, tmp_path):
    """A kill inside the first Spark write into a new --out leaves data files and no Delta table.
    The folder carries weaver's unfinished-output marker, so the rerun clears it and writes the
    whole restore; a foreign folder with files (no marker) is still refused and left untouched."""
    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError
    from weaver.pitr import restore_table

    log, s = _lake(tmp_path)
    at = log["changes"][13]["ts"]
    out = tmp_path / "restored"
    out.mkdir()
    (out / storage.UNFINISHED).write_text("{}\n")
    (out / "part-00000-killed.snappy.parquet").write_bytes(b"PAR1 half a file")
    (out / "_delta_log").mkdir()  # Spark creates it before its first commit
    r = restore_table(spark, s, at, str(out))
    assert r["rows"] == len(fold(log["changes"], at=at))
    got = _by_partition(str(out))
    assert {(p, k) for p, kv in got.items() for k in kv} == {
        (p["partition_id"], k) for p in log["partitions"] for k in fold(log["changes"], key_lo=p["key_lo"],
                                                                       key_hi=p["key_hi"], at=at)
        if p["partition_id"] in got}
    assert sum(len(v) for v in got.values()) == len(fold(log["changes"], at=at))
    assert not (out / storage.UNFINISHED).exists() and not (out / "part-00000-killed.snappy.parquet").exists()

    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidParameterError, match="exists and is not a Delta table"):
        restore_table(spark, s, at, str(foreign))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
