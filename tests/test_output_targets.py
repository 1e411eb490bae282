"""Where `recover`, `restore` and `restore-table` may write (the CLI audit's findings on --out).

An output lands only where nothing else lives: a new location (or an empty folder), or an earlier
Weaver output of the same kind, never inside any lake root or contract table (another lake's
too). Every refusal is a named error with the disk unchanged (compared file by file), and a
legitimate rerun into the same output still works. A whole-table restore rerun with the same rows
commits nothing. Expected rows come from the brute-force fold of tests/oracle.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from typer.testing import CliRunner

from tests.lakes import build_log, standard_lake, write_lake
from tests.oracle import fold, rows_to_dict
from weaver.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), env={"WEAVER_API_TOKEN": ""})


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def tree(root: Path) -> dict[str, str]:
    """Every file (by content hash) and folder under `root`: the disk as a refusal must leave it."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """Lake A (the one commands run on) and lake B (someone else's), side by side."""
    root = tmp_path_factory.mktemp("outputs")
    return standard_lake(root / "A"), standard_lake(root / "B", seed=5), root


def _refused(r, *, error: str = "InvalidParameterError") -> dict:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["error"] == error, obj
    return obj


# --- finding 1: an output never overwrites another lake or someone else's table ------------------
@pytest.mark.parametrize("where", ["changelog", "partitions", ".", "recoveries/r1"])
def test_rollback_into_another_lake_is_refused(lakes, where):
    a, b, _root = lakes
    target = Path(b.settings.lake) / where
    before = tree(Path(b.settings.lake))
    r = run("recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--mode", "rollback", "--out", str(target),
            "--lake", a.settings.lake, "--json")
    obj = _refused(r)
    assert "lake root" in obj["message"]
    assert tree(Path(b.settings.lake)) == before
    assert DeltaTable(str(Path(b.settings.lake) / "changelog")).to_pyarrow_table().num_rows == len(b.changes)


def test_point_in_time_out_onto_another_lakes_data_file_is_refused(lakes):
    a, b, _root = lakes
    log_dir = Path(b.settings.lake) / "changelog"
    before = tree(Path(b.settings.lake))
    data_file = next(p for p in log_dir.iterdir() if p.suffix == ".parquet")
    r = run("recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--out", str(data_file),
            "--lake", a.settings.lake, "--json")
    _refused(r)
    assert tree(Path(b.settings.lake)) == before


def test_rollback_into_a_foreign_delta_table_is_refused(lakes, tmp_path):
    """A Delta table outside any lake that Weaver did not write (no output marker) is someone's data."""
    a, _b, _root = lakes
    theirs = tmp_path / "theirs"
    write_deltalake(str(theirs), pa.table({"id": [1, 2, 3], "name": ["x", "y", "z"]}))
    before = tree(tmp_path)
    r = run("recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--mode", "rollback", "--out", str(theirs),
            "--lake", a.settings.lake, "--json")
    obj = _refused(r)
    assert "did not write" in obj["message"]
    assert tree(tmp_path) == before
    assert DeltaTable(str(theirs)).to_pyarrow_table().column("name").to_pylist() == ["x", "y", "z"]


def test_rollback_into_a_restore_table_output_is_refused(lakes, tmp_path):
    """An output of another kind is not the rollback's to overwrite either."""
    a, _b, _root = lakes
    other = tmp_path / "restored"
    write_deltalake(str(other), pa.table({"partition_id": ["P0"], "key": ["k1"], "value": [b"v"]}),
                    commit_properties=CommitProperties(custom_metadata={"weaver.output": "restore-table"}))
    before = tree(tmp_path)
    r = run("recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--mode", "rollback", "--out", str(other),
            "--lake", a.settings.lake, "--json")
    _refused(r)
    assert tree(tmp_path) == before


def test_rollback_rerun_into_its_own_output_still_works(lakes, tmp_path):
    a, _b, _root = lakes
    out = tmp_path / "rolled"
    for at in (a.ts_of(70), a.ts_of(70), a.ts_of(90)):  # a rerun, then another instant into the same output
        r = run("recover", "--partition", "P0", "--at", iso(at), "--mode", "rollback", "--out", str(out),
                "--lake", a.settings.lake, "--json")
        assert r.exit_code == 0, r.output
        assert rows_to_dict(DeltaTable(str(out)).to_pyarrow_table()) == a.expected("P0", at)


def test_restore_table_into_another_lake_or_a_foreign_table_is_refused_before_spark(lakes, tmp_path):
    """Checked before any work (spark=None here: no session is ever needed to refuse)."""
    from weaver.core.errors import InvalidParameterError
    from weaver.pitr import restore_table

    a, b, root = lakes
    theirs = tmp_path / "theirs"
    write_deltalake(str(theirs), pa.table({"partition_id": ["x"], "key": ["k"], "value": [b"v"]}))
    rolled = tmp_path / "rolled"
    write_deltalake(str(rolled), pa.table({"key": ["k"], "value": [b"v"]}),
                    commit_properties=CommitProperties(custom_metadata={"weaver.recovery_id": "abc"}))
    before_b, before_t = tree(Path(b.settings.lake)), tree(tmp_path)
    for out, match in ((Path(b.settings.lake) / "changelog", "lake root"), (Path(b.settings.lake), "lake root"),
                       (theirs, "did not write"), (rolled, "did not write")):
        with pytest.raises(InvalidParameterError, match=match):
            restore_table(None, a.settings, a.ts_of(70), str(out))
    assert tree(Path(b.settings.lake)) == before_b and tree(tmp_path) == before_t


# --- finding 3: an unwritable --out is a named error, nothing written ----------------------------
@pytest.mark.parametrize("mode, under", [("point_in_time", "x.parquet"), ("rollback", None)],
                         ids=["parquet-under-a-file", "rollback-onto-a-file"])
def test_recover_out_at_or_under_a_regular_file_is_refused(lakes, tmp_path, mode, under):
    a, _b, _root = lakes
    f = tmp_path / "afile"
    f.write_text("keep me")
    before = tree(tmp_path)
    r = run("recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--mode", mode,
            "--out", str(f / under if under else f), "--lake", a.settings.lake, "--json")
    _refused(r)
    assert tree(tmp_path) == before


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_restore_out_on_an_unwritable_file_system_is_refused(lakes):
    a, _b, _root = lakes
    r = run("restore", "--partition", "P0", "--at", iso(a.ts_of(70)), "--out", "/proc/weaver-x.parquet",
            "--lake", a.settings.lake, "--json")
    _refused(r)
    assert not Path("/proc/weaver-x.parquet").exists()


def test_write_parquet_under_a_file_is_a_named_error(tmp_path):
    from weaver.core import objstore
    from weaver.core.errors import InvalidParameterError

    f = tmp_path / "afile"
    f.write_text("keep me")
    with pytest.raises(InvalidParameterError, match="cannot write"):
        objstore.write_parquet(str(f / "sub" / "x.parquet"), pa.table({"a": [1]}), None)
    assert tree(tmp_path) == {"afile": hashlib.sha256(b"keep me").hexdigest()}


# --- finding 2: a restore-table rerun with the same rows commits nothing -------------------------
EVENTS = [(10, "PUT", 1000, 1, 1), (40, "PUT", 1000, 1, 1), (70, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1),
          (45, "PUT", 1000, 1, 1), (80, "PUT", 1000, 1, 1), (10, "DELETE", 1000, 1, 1), (55, "PUT", 1000, 1, 1)]


@pytest.mark.spark
def test_restore_table_rerun_with_the_same_rows_commits_nothing(spark, tmp_path):
    from weaver.core.settings import load_settings
    from weaver.pitr import restore_table

    log = build_log(EVENTS, 2)
    s = load_settings(lake=write_lake(tmp_path / "lake", log, [3]))
    out = tmp_path / "restored"
    at, later = log["changes"][5]["ts"], log["changes"][-1]["ts"]

    def held() -> tuple[int, list[str], dict[str, bytes]]:
        t = DeltaTable(str(out))
        rows = t.to_pyarrow_table()
        assert len(rows.column("key").to_pylist()) == len(set(rows.column("key").to_pylist()))
        return t.version(), sorted(p.name for p in out.glob("*.parquet")), rows_to_dict(rows)

    first = restore_table(spark, s, at, str(out))
    v1, files1, rows1 = held()
    assert rows1 == fold(log["changes"], at=at) and first["rows"] == len(rows1)

    again = restore_table(spark, s, at, str(out))
    assert held() == (v1, files1, rows1)  # no new version, no new data file, the same rows
    assert again["written"] is False and again["rows"] == len(rows1)
    # The CLI's summary says so too (it said "restored ..." when nothing was written).
    from typer.testing import CliRunner

    from weaver.cli import app

    res = CliRunner().invoke(app, ["restore-table", "--at", at.isoformat(), "--out", str(out), "--lake", s.lake],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "nothing written" in res.stdout and not res.stdout.startswith("restored "), res.stdout
    assert held() == (v1, files1, rows1)

    moved = restore_table(spark, s, later, str(out))  # another instant: replaced whole
    v2, _files2, rows2 = held()
    assert v2 == v1 + 1 and rows2 == fold(log["changes"], at=later) and moved["written"] is True
    # each commit names the restore's kind, so only a restore-table rerun may replace this table
    assert all(json.loads(c["userMetadata"])["weaver.output"] == "restore-table"
               for c in DeltaTable(str(out)).history())


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
@pytest.mark.parametrize("command", ["restore-table", "rollback"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(lakes, monkeypatch, command):
    """/proc refuses a new folder to root too. `restore-table` is refused before it starts Spark (a
    session started here fails the test), a rollback before its restore; before the probe both were
    refused only when the output folder was made after the work ("cannot create the output
    folder"). Nothing is written: not under /proc, not in the lakes."""
    import weaver.cli._pitr as cli_pitr

    def no_spark(*_args, **_kw):
        raise AssertionError("Spark was started for an output that cannot be written")

    monkeypatch.setattr(cli_pitr, "get_spark", no_spark)
    a, _b, root = lakes
    before = tree(root)
    out = f"/proc/weaver-{command}"
    args = (["restore-table", "--at", iso(a.ts_of(70)), "--out", out] if command == "restore-table" else
            ["recover", "--partition", "P0", "--at", iso(a.ts_of(70)), "--mode", "rollback", "--out", out])
    obj = _refused(run(*args, "--lake", a.settings.lake, "--json"))
    assert "cannot be written" in obj["message"] and "'/proc'" in obj["message"], obj
    assert not Path(out).exists() and tree(root) == before


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_restore_table_output_folder_that_cannot_be_made_is_a_named_error():
    """restore-table's folder is made (storage.claim_output) after Spark's work: should it fail
    there all the same (the folder's permissions changed since the check), a named error."""
    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="cannot create the output folder"):
        storage.claim_output("/proc/weaver-restored", "restore-table")
    assert not Path("/proc/weaver-restored").exists()
