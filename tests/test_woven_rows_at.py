"""`WovenTable.rows_at` (weaver/weave/files.py): every row of one (weave, timepoint), both children,
from the files its per-weave index picks - what recovery serves and what the Arrow weave extends a
sequence from. Checked against the hand-built rows filtered in plain Python, on a tier laid out as
the engines write it (partitioned by weave_id, several files per weave over several commits) and
on one that is not (files holding several weaves: no partition value to index them by).
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from tests.lakes import H, T0, weave_settings


def _rows(weaves: list[str], tps: list, seed: int) -> list[dict]:
    out = []
    for wi, w in enumerate(weaves):
        for ti, tp in enumerate(tps):
            for k in range(3 + (wi + ti + seed) % 4):
                key = f"k{k:02d}"
                out.append({"weave_id": w, "woven_partition_id": f"{w}-{'a' if k < 2 else 'b'}",
                            "source_partition_id": "p0", "timepoint": tp, "as_of_seq": 10 * ti + wi,
                            "key": key, "value": None if (k + ti) % 5 == 0 else f"{w}|{tp:%H}|{key}".encode()})
    return out


def _write(uri: str, rows: list[dict], partition_by) -> None:
    from deltalake import write_deltalake

    from weaver.core import storage

    schema = storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]
    write_deltalake(uri, pa.Table.from_pylist(rows, schema=schema), mode="append", partition_by=partition_by)


def _expected(rows: list[dict], weave: str, tp) -> list[tuple]:
    return sorted((r["key"], r["value"], r["woven_partition_id"]) for r in rows
                  if r["weave_id"] == weave and r["timepoint"] == tp)


@pytest.mark.parametrize("partition_by", [["weave_id"], None], ids=["by-weave", "several-weaves-a-file"])
def test_rows_at_returns_exactly_one_weaves_rows_at_one_timepoint(tmp_path, partition_by):
    from weaver.core import storage
    from weaver.weave.files import WovenTable

    s = weave_settings(tmp_path / "lake")
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    tps = [T0 + i * H for i in range(4)]
    weaves = ["w1", "w2", "w3"]
    rows = []
    # Three commits: each weave gets files in several of them, each file several timepoints.
    for c, (ws, span) in enumerate([(weaves, tps[:2]), (["w1", "w3"], tps[2:]), (["w2"], tps[2:])]):
        batch = _rows(ws, span, seed=c)
        rows += batch
        _write(uri, batch, partition_by)
    table = WovenTable.open(s)
    assert (None in {f.weave_id for f in table.files}) == (partition_by is None)
    cols = ["key", "value", "woven_partition_id"]
    for w in weaves:
        for tp in tps:
            got = table.rows_at(w, tp, cols)
            assert got.column_names == cols
            assert sorted(zip(*(got.column(c).to_pylist() for c in cols))) == _expected(rows, w, tp), (w, tp)
    # A timepoint between two woven ones, and a weave the tier does not hold: no rows.
    assert table.rows_at("w1", tps[1] + timedelta(minutes=30), cols).num_rows == 0
    assert table.rows_at("w9", tps[0], cols).num_rows == 0
    # For a partitioned tier rows_at reads only the weave's own files.
    if partition_by:
        read: list[str] = []
        real = table.scan
        table.scan = lambda paths, columns, expr: (read.extend(paths), real(paths, columns, expr))[1]
        table.rows_at("w2", tps[3], cols)
        assert read and all("weave_id=w2/" in p for p in read)


@pytest.mark.parametrize("layout", ["by-weave", "several-weaves-a-file", "one-timepoint-a-file"])
def test_rows_of_and_timepoints_held_match_the_rows_written(tmp_path, layout):
    """What the woven check reads a weave through: its timepoints (Parquet footers where each row
    group holds one timepoint, a read of the other files) and its rows at several timepoints in one
    read - each equal to the hand-built rows filtered in plain Python."""
    from weaver.core import storage
    from weaver.weave.files import WovenTable

    s = weave_settings(tmp_path / "lake")
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    tps = [T0 + i * H for i in range(5)]
    weaves = ["w1", "w2", "w3"]
    # w1 at every timepoint, w2 at the first three, w3 at the last two.
    held = {"w1": tps, "w2": tps[:3], "w3": tps[3:]}
    partition_by = None if layout == "several-weaves-a-file" else ["weave_id"]
    rows = []
    for c, tp in enumerate(tps):
        batch = _rows([w for w in weaves if tp in held[w]], [tp], seed=c)
        rows += batch
        if layout == "one-timepoint-a-file":
            _write(uri, batch, partition_by)
    if layout != "one-timepoint-a-file":
        _write(uri, rows[: len(rows) // 2], partition_by)
        _write(uri, rows[len(rows) // 2:], partition_by)
    table = WovenTable.open(s)
    got = table.timepoints_held(["w1", "w2", "w3", "w9"])
    assert got == {"w1": set(tps), "w2": set(tps[:3]), "w3": set(tps[3:]), "w9": set()}
    if layout == "one-timepoint-a-file":  # answered from footers, no data read
        assert all(table._footer(f.path) is not None for f in table.files)
    cols = ["timepoint", "key", "value", "woven_partition_id"]
    for w in weaves:
        for pick in (tps[:1], [tps[0], tps[2], tps[4]], tps, [tps[1] + timedelta(minutes=30)]):
            t = table.rows_of(w, pick, cols)
            assert t.column_names == cols
            want = sorted((r["timepoint"], r["key"], r["value"], r["woven_partition_id"]) for r in rows
                          if r["weave_id"] == w and r["timepoint"] in pick)
            assert sorted(zip(*(t.column(c).to_pylist() for c in cols))) == want, (w, pick)
    assert table.rows_of("w9", tps, cols).num_rows == 0
    assert table.rows_of("w1", [], cols).num_rows == 0
    if layout == "one-timepoint-a-file":
        # A sample of the first and last timepoints reads the files holding them, not those between.
        import pyarrow.parquet as pq

        holds = {f.path: set(pq.read_table(table.table.local_path(f.path), columns=["timepoint"])
                             .column("timepoint").to_pylist()) for f in table.files if f.weave_id == "w1"}
        read: list[str] = []
        read_expr: list = []
        real = table.scan
        table.scan = lambda paths, columns, expr: (read.extend(paths), read_expr.append(expr),
                                                   real(paths, columns, expr))[2]
        table.rows_of("w1", [tps[4], tps[0]], cols)
        assert sorted(read) == sorted(p for p, held_tps in holds.items() if held_tps & {tps[0], tps[4]})
        assert len(read) < len(holds)
        assert read_expr == [None]  # footers prove the files hold only those timepoints: read unfiltered


@pytest.mark.parametrize("partition_by", [["weave_id"], None], ids=["by-weave", "several-weaves-a-file"])
def test_files_for_lookup_holds_each_weaves_latest_timepoint_and_no_other_weaves_files(tmp_path, partition_by):
    """The files a recovery or API look-up reads: for every set of weaves and instant, they hold
    each weave's latest timepoint <= the instant (found by plain Python over the rows written),
    and, in a tier partitioned by weave, no file of a weave outside the set."""
    from itertools import combinations

    import pyarrow.parquet as pq

    from weaver.core import storage
    from weaver.weave.files import WovenTable

    s = weave_settings(tmp_path / "lake")
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    tps = [T0 + i * H for i in range(6)]
    weaves = ["w1", "w2", "w3", "w4"]
    rows = []
    for c in range(3):  # three commits of two timepoints each; w4 only in the last
        batch = _rows([w for w in weaves if w != "w4" or c == 2], tps[2 * c:2 * c + 2], seed=c)
        rows += batch
        _write(uri, batch, partition_by)
    table = WovenTable.open(s)
    # Each file's (weave, timepoint) rows; a partitioned file's weave is its folder's value.
    content = {}
    for f in table.files:
        t = pq.read_table(table.table.local_path(f.path))
        ws_of = (t.column("weave_id").to_pylist() if "weave_id" in t.column_names
                 else [f.path.split("weave_id=")[1].split("/")[0]] * t.num_rows)
        content[f.path] = [{"weave_id": w, "timepoint": tp} for w, tp in zip(ws_of, t.column("timepoint").to_pylist())]
    for n in (1, 2, 4):
        for ws in combinations(weaves, n):
            for at in [T0 - H, T0, tps[1] + timedelta(minutes=30), tps[3], tps[5] + H]:
                got = table.files_for_lookup(set(ws), at)
                assert len(got) == len(set(got))
                for w in ws:
                    latest = max((r["timepoint"] for r in rows if r["weave_id"] == w and r["timepoint"] <= at),
                                 default=None)
                    if latest is not None:
                        assert any({"weave_id": w, "timepoint": latest} in content[p] for p in got), (ws, at, w)
                if partition_by:
                    assert all(r["weave_id"] in ws for p in got for r in content[p]), (ws, at)
    assert table.files_for_lookup({"w9"}, tps[5]) == ([] if partition_by else
                                                     table.files_for_lookup(set(), tps[5]))


def test_a_file_of_one_timepoint_a_row_group_is_read_for_the_asked_timepoints_only(tmp_path):
    """A file whose footer answers exactly (each row group one timepoint) but holds several
    timepoints: a read of some of them must not be taken unfiltered."""
    from deltalake import WriterProperties, write_deltalake

    from weaver.core import storage
    from weaver.weave.files import WovenTable

    s = weave_settings(tmp_path / "lake")
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    tps = [T0 + i * H for i in range(3)]
    rows = [{"weave_id": "w1", "woven_partition_id": "w1-a", "source_partition_id": "p0", "timepoint": tp,
             "as_of_seq": i, "key": f"k{k}", "value": f"{i}{k}".encode()} for i, tp in enumerate(tps) for k in range(4)]
    write_deltalake(uri, pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                    partition_by=["weave_id"], writer_properties=WriterProperties(max_row_group_size=4))
    table = WovenTable.open(s)
    [f] = table.files
    assert [g[1] for g in table._footer(f.path)] == tps  # the premise: the footer answers, one timepoint a group
    for pick in ([tps[1]], [tps[0], tps[2]], tps):
        got = table.rows_of("w1", pick, ["timepoint", "key", "value"]) if len(pick) > 1 else \
            table.rows_at("w1", pick[0], ["timepoint", "key", "value"])
        want = sorted((r["timepoint"], r["key"], r["value"]) for r in rows if r["timepoint"] in pick)
        assert sorted(zip(*(got.column(c).to_pylist() for c in got.column_names))) == want, pick
