"""Every way a `weaver` command can be given bad input ends the same way: a named error, one JSON
object with ``--json`` (else one unwrapped line on stderr), exit 2, and the lake as it was.

Through the real Typer app (CliRunner). The expectations are hand-written: the error class a
docs/api.md reader is promised, the files of the lake before and after (hashed), and for the
commands that succeed the rows of the brute-force fold (tests/oracle.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from tests.cli import file_tree, json_error, run_cli
from tests.lakes import add_weave, split_log, standard_lake, weave_id_of, write_lake
from weaver.core import storage

AT = "2026-01-01T00:00:05Z"


_run, _error, _tree = run_cli, json_error, file_tree


@pytest.fixture
def lake(tmp_path) -> str:
    log, snaps = split_log()
    return write_lake(tmp_path / "lake", log, snaps)


# --- 1. Click's own parse errors: the project's JSON error object, exit 2 ------------------------
PARSE_ERRORS = [
    (["recover", "--partition", "p0001", "--at", AT, "--out", "x.parquet", "--confidence-threshold", "abc"],
     "--confidence-threshold"),
    (["query", "--partition", "p0001", "--at", AT, "--confidence-threshold", "abc"], "--confidence-threshold"),
    (["predict", "--at", AT, "--confidence-threshold", "abc"], "--confidence-threshold"),
    (["weave", "--at", AT, "--confidence-threshold", "abc"], "--confidence-threshold"),
    (["whatif", "advise", "--at", AT, "--confidence-threshold", "abc"], "--confidence-threshold"),
    (["query", "--partition", "p0001", "--at", AT, "--as-of-version", "-1"], "--as-of-version"),
    (["query", "--partition", "p0001", "--at", AT, "--show", "-1"], "--show"),
    (["recover", "--partition", "p0001", "--out", "x.parquet"], "--at"),
    (["predict", "--at", AT, "--workers", "-1"], "--workers"),
    (["predict", "--at", AT, "--workers", "0"], "--workers"),
    (["quarantine", "list", "--kind", "bogus"], "--kind"),
    (["quarantine", "clear", "--kind", "bogus"], "--kind"),
    (["restore", "--partition", "p0001", "--at", AT, "--out", "x.parquet", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("args,option", PARSE_ERRORS, ids=[" ".join(a[:2]) + " " + o for a, o in PARSE_ERRORS])
def test_a_value_click_refuses_is_a_json_error_with_json(tmp_path, args, option):
    nowhere = tmp_path / "nolake"
    res = _run(*args, "--lake", str(nowhere), "--json")
    obj = _error(res)
    assert obj["error"] == "InvalidParameterError" and option in obj["message"], obj
    assert "Usage:" not in res.output and "╭" not in res.output
    assert not nowhere.exists()


@pytest.mark.parametrize("args,option", PARSE_ERRORS[:3] + PARSE_ERRORS[7:8] + PARSE_ERRORS[10:11])
def test_a_value_click_refuses_is_one_line_without_json(tmp_path, args, option):
    res = _run(*args, "--lake", str(tmp_path / "nolake"))
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "InvalidParameterError" in lines[0] and option in lines[0], res.stderr


def test_ingest_parses_its_numbers_the_same_way(tmp_path):
    """`ingest` reads its whole numbers itself; a bad one and a bad value Click refuses elsewhere
    give the same error object."""
    nowhere = tmp_path / "nolake"
    own = _error(_run("ingest", "--source", "debezium", "--input", "x", "--keys", "pk", "--partitions", "abc",
                      "--lake", str(nowhere), "--json"))
    click = _error(_run("ingest", "--source", "debezium", "--input", "x", "--keys", "pk", "--bogus",
                        "--lake", str(nowhere), "--json"))
    generic = _error(_run("query", "--partition", "p1", "--at", AT, "--show", "x", "--lake", str(nowhere), "--json"))
    assert own["error"] == click["error"] == generic["error"] == "InvalidParameterError"
    assert "--partitions" in own["message"] and "--bogus" in click["message"] and "--show" in generic["message"]
    assert not nowhere.exists()


def test_help_without_arguments_is_still_help():
    res = _run("quarantine")
    assert "Usage" in res.output and "InvalidParameterError" not in res.output


# --- 2. the human error is one line, however long --------------------------------------------------
def test_a_long_human_error_is_one_unwrapped_line(lake, tmp_path):
    res = _run("restore", "--partition", "p0042", "--at", AT, "--out", str(tmp_path / "x.parquet"), "--lake", lake)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "UnknownPartitionError" in lines[0] and len(lines[0]) > 80
    assert "known partitions include: p0000, p0001, p0002" in lines[0]


# --- 3. maintenance commands refuse a root that is no lake -----------------------------------------
MAINTENANCE = [["maintain"], ["woven-vacuum"], ["quarantine", "list"], ["quarantine", "clear"]]


@pytest.mark.parametrize("cmd", MAINTENANCE, ids=" ".join)
def test_maintenance_on_a_missing_lake_is_table_not_found(tmp_path, cmd):
    nowhere = tmp_path / "nolake"
    obj = _error(_run(*cmd, "--lake", str(nowhere), "--json"))
    assert obj["error"] == "TableNotFoundError" and "changelog" in obj["message"]
    assert not nowhere.exists()


@pytest.mark.parametrize("cmd", MAINTENANCE, ids=" ".join)
def test_maintenance_on_a_folder_that_is_no_lake_is_table_not_found(tmp_path, cmd):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a lake")
    before = _tree(folder)
    obj = _error(_run(*cmd, "--lake", str(folder), "--json"))
    assert obj["error"] == "TableNotFoundError"
    assert _tree(folder) == before


@pytest.mark.parametrize("cmd", MAINTENANCE, ids=" ".join)
def test_maintenance_on_a_change_log_without_its_delta_log_is_corrupt(lake, cmd):
    (Path(lake) / "changelog" / "_delta_log" / "00000000000000000000.json").unlink()
    before = _tree(Path(lake))
    obj = _error(_run(*cmd, "--lake", lake, "--json"))
    assert obj["error"] == "CorruptTableError" and "changelog" in obj["message"]
    assert _tree(Path(lake)) == before


# --- 4. no traceback: instants and windows past the calendar, a damaged data file -------------------
@pytest.mark.parametrize("args", [
    ["vacuum", "--now", "0001-01-01T00:00:00Z", "--dry-run"],
    ["vacuum", "--now", "0001-01-01T00:00:00Z"],
    ["maintain", "--now", "0001-01-01T00:00:00Z"],
    ["vacuum", "--recovery-window", "99999999d"],
    ["vacuum", "--recovery-window", "9999999999d"],
    ["vacuum", "--recovery-window", "9" * 400 + "d"],
], ids=["vacuum-year1-dry", "vacuum-year1", "maintain-year1", "window-99999999d", "window-9999999999d", "window-huge"])
def test_a_window_reaching_before_year_1_is_a_named_error(lake, args):
    before = _tree(Path(lake))
    obj = _error(_run(*args, "--lake", lake, "--json"))
    assert obj["error"] == "InvalidParameterError", obj
    assert _tree(Path(lake)) == before


def test_a_too_long_duration_is_refused_by_name():
    from weaver.core.errors import InvalidParameterError
    from weaver.core.time import parse_duration

    with pytest.raises(InvalidParameterError, match="too long"):
        parse_duration("9999999999d")
    assert parse_duration("999999d").days == 999999  # long, but a timedelta holds it


@pytest.mark.parametrize("cmd", [["vacuum"], ["vacuum", "--dry-run"], ["maintain"]], ids=" ".join)
def test_a_damaged_change_log_file_is_corrupt_table_error(tmp_path, cmd):
    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps, log_chunk=4)  # seq 1-4 in the first file, 5-8 in the next
    now = log["changes"][-1]["ts"]
    window = f"{int((now - log['changes'][9]['ts']).total_seconds())}s"  # starts at seq 10: 8 rows to delete
    # The window's start is found from the files' statistics; only counting the prefix reads seq 1-4.
    first = storage.open_table(storage.table_uri(lake, storage.CHANGELOG)).get_add_actions(flatten=True)
    first = pa.table(first).sort_by("min.seq").column("path")[0].as_py()
    data = Path(lake) / "changelog" / first
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    before = _tree(Path(lake))
    obj = _error(_run(*cmd, "--now", now.isoformat(), "--lake", lake, "--json",
                      env={"WEAVER_RECOVERY_WINDOW": window}))
    assert obj["error"] == "CorruptTableError" and "changelog" in obj["message"], obj
    assert _tree(Path(lake)) == before


# --- 5. an expired weave: weaving again will not bring it back -------------------------------------
def test_impact_of_an_expired_weave_says_it_expired(tmp_path):
    lk = standard_lake(tmp_path / "lake")
    end = lk.ts_of(len(lk.changes))
    row = add_weave(lk, "P0", "k1", 0.95, [lk.ts_of(30), lk.ts_of(40)], prediction_id="pred-old", status="expired")
    vac = _run("woven-vacuum", "--now", end.isoformat(), "--lake", lk.settings.lake, "--json")
    assert vac.exit_code == 0, vac.output
    assert json.loads(vac.stdout)["rows_deleted"] > 0  # the expired weave's rows are gone
    obj = _error(_run("whatif", "impact", "--weave", row["weave_id"], "--no-recovery", "--lake", lk.settings.lake,
                      "--json"))
    assert obj["error"] == "NoDataError"
    assert "expired" in obj["message"] and "will not bring it back" in obj["message"]
    assert "run `weaver weave` once data" not in obj["message"]


# --- 6. minor: weave ids in any case --------------------------------------------------------------
def test_query_accepts_an_upper_case_weave_id(tmp_path):
    lk = standard_lake(tmp_path / "lake")
    wid = weave_id_of("pred-P0")
    tp = lk.ts_of(60)
    for given in (wid[:8].upper(), wid.upper()):
        res = _run("query", "--partition", "P0", "--at", lk.ts_of(70).isoformat(), "--weave", given,
                   "--lake", lk.settings.lake, "--json")
        assert res.exit_code == 0, res.output
        obj = json.loads(res.stdout)
        assert obj["weave_id"] == wid and obj["timepoint"] == tp.isoformat()
        assert obj["rows"] == len(lk.expected("P0", tp))
