"""Every contract violation of the change log gets a named error naming seq and partition, and
nothing is written (restore output, snapshots, catalog)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in the tests
import pytest

from tests.lakes import split_log, write_lake


def _gap(changes):
    return [c for c in changes if c["seq"] != 8]


def _duplicate(changes):
    extra = dict(changes[4], key="k11", value=b"dup")  # a second seq 5
    return changes[:5] + [extra] + changes[5:]


def _ts_backwards(changes):
    changes[9]["ts"] = changes[8]["ts"] - timedelta(seconds=5)  # seq 10 before seq 9
    return changes


def _unknown_op(changes):
    changes[3]["op"] = "UPSERT"  # seq 4
    return changes


def _put_without_value(changes):
    changes[3]["value"] = None  # seq 4 is a PUT
    return changes


def _key_outside_range(changes):
    changes[8]["partition_id"] = "p0001"  # seq 9, key k90, but p0001 holds [ , k50)
    return changes


def _partition_not_owning_seq(changes):
    changes[1]["partition_id"] = "p0002"  # seq 2, key k60 is in p0002's range, but p0002 starts after seq 6
    return changes


CASES = [
    ("gap", _gap, "SeqGapError", 8, "p0002"),
    ("duplicate", _duplicate, "DuplicateSeqError", 5, None),
    ("ts_backwards", _ts_backwards, "NonMonotonicTimestampError", 10, "p0002"),
    ("unknown_op", _unknown_op, "UnknownOpError", 4, "p0000"),
    ("put_without_value", _put_without_value, "UnknownOpError", 4, "p0000"),
    ("key_outside_range", _key_outside_range, "KeyOutOfRangeError", 9, "p0001"),
    ("partition_not_owning_seq", _partition_not_owning_seq, "KeyOutOfRangeError", 2, "p0002"),
]


def _set(i, **kw):
    def mutate(changes):
        changes[i].update(kw)
        return changes
    return mutate


# Ownership edges (validate_changes decides a valid batch per partition on min/max, and a
# violation by the join that names it): each must still be refused, naming seq and partition.
OWNERSHIP_EDGES = [
    ("key_at_the_exclusive_end", _set(7, key="k50"), 8, "p0001"),  # p0001 holds [ , k50)
    ("parent_after_its_split", _set(6, partition_id="p0000"), 7, "p0000"),  # retired at seq 6
    ("child_at_the_split_seq", _set(5, partition_id="p0002"), 6, "p0002"),  # created at seq 6: owns seq > 6
    ("unknown_partition", _set(2, partition_id="p9999"), 3, "p9999"),
    ("one_bad_row_among_two_partitions", _set(11, key="k05"), 12, "p0002"),  # k05 is p0001's
]


@pytest.mark.parametrize("name,mutate,seq,pid", OWNERSHIP_EDGES, ids=[c[0] for c in OWNERSHIP_EDGES])
def test_ownership_edges_are_refused(name, mutate, seq, pid):
    from weaver.core import storage
    from weaver.core.errors import KeyOutOfRangeError
    from weaver.log import Lineage, validate_changes

    log = _corrupt(mutate)
    table = pa.Table.from_pylist(log["changes"], schema=storage.SCHEMAS[storage.CHANGELOG])
    lineage = Lineage(pa.Table.from_pylist(log["partitions"], schema=storage.SCHEMAS[storage.PARTITIONS]))
    with pytest.raises(KeyOutOfRangeError) as info:
        validate_changes(table, lineage)
    assert info.value.seq == seq and info.value.partition_id == pid
    # The same batch without the bad row passes (the rest of it is valid).
    ok = table.filter(pa.compute.not_equal(table.column("seq"), seq))
    assert validate_changes(ok, lineage, check_gaps=False) == table.num_rows - 1


def _corrupt(mutate):
    log, _ = split_log()
    log = copy.deepcopy(log)
    log["changes"] = mutate(log["changes"])
    return log


def _settings(lake):
    from weaver.core.settings import load_settings

    return load_settings(lake=str(lake))


@pytest.mark.parametrize("name,mutate,error,seq,pid", CASES, ids=[c[0] for c in CASES])
def test_validate_changes_names_seq_and_partition(name, mutate, error, seq, pid):
    from weaver.core import errors
    from weaver.core import storage
    from weaver.log import Lineage, validate_changes

    log = _corrupt(mutate)
    table = pa.Table.from_pylist(log["changes"], schema=storage.SCHEMAS[storage.CHANGELOG])
    lineage = Lineage(pa.Table.from_pylist(log["partitions"], schema=storage.SCHEMAS[storage.PARTITIONS]))
    with pytest.raises(getattr(errors, error)) as info:
        validate_changes(table, lineage)
    assert info.value.seq == seq
    # A gap is reported by its neighbours ("gap in seq after 7: next is 9").
    assert (f"after {seq - 1}" if error == "SeqGapError" else f"seq {seq}") in str(info.value)
    if pid is not None:
        assert info.value.partition_id == pid and pid in str(info.value)


@pytest.mark.parametrize("name,mutate,error,seq,pid", CASES, ids=[c[0] for c in CASES])
def test_restore_refuses_corrupt_log_and_writes_nothing(tmp_path, name, mutate, error, seq, pid):
    from typer.testing import CliRunner

    from weaver.core import errors
    from weaver.cli import app
    from weaver.pitr import restore_partition

    log = _corrupt(mutate)
    lake = write_lake(tmp_path / "lake", log)
    at = max(c["ts"] for c in log["changes"])
    target = "p0000"  # its range holds every key, so every bad change is in its tail
    with pytest.raises(getattr(errors, error)) as info:
        restore_partition(_settings(lake), target, at)
    assert info.value.seq == seq

    out = tmp_path / "out" / "restored.parquet"
    res = CliRunner().invoke(app, ["restore", "--partition", target, "--at", at.isoformat(), "--out", str(out),
                                   "--lake", lake, "--json"])
    assert res.exit_code == 2, res.output
    assert error in res.output
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("name,mutate,error,seq,pid", CASES, ids=[c[0] for c in CASES])
def test_snapshot_validation_refuses_corrupt_log(tmp_path, name, mutate, error, seq, pid):
    from weaver.core import errors
    from weaver.pitr import validate_for_snapshot

    log = _corrupt(mutate)
    lake = write_lake(tmp_path / "lake", log)
    with pytest.raises(getattr(errors, error)) as info:
        validate_for_snapshot(_settings(lake), max(c["ts"] for c in log["changes"]))
    assert info.value.seq == seq


def test_schema_mismatch_is_named(tmp_path):
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.core.errors import SchemaMismatchError
    from weaver.pitr import restore_partition

    log, _ = split_log()
    lake = write_lake(tmp_path / "lake", log)
    bad = pa.Table.from_pylist(log["changes"], schema=storage.SCHEMAS[storage.CHANGELOG]).drop_columns(["op"])
    write_deltalake(storage.table_uri(lake, storage.CHANGELOG), bad, mode="overwrite", schema_mode="overwrite")
    with pytest.raises(SchemaMismatchError, match="'op'"):
        restore_partition(_settings(lake), "p0000", log["changes"][-1]["ts"])

    typed = pa.Table.from_pylist(log["changes"], schema=storage.SCHEMAS[storage.CHANGELOG])
    typed = typed.set_column(typed.schema.get_field_index("seq"), "seq", pa.array([str(s) for s in range(1, 13)]))
    write_deltalake(storage.table_uri(lake, storage.CHANGELOG), typed, mode="overwrite", schema_mode="overwrite")
    with pytest.raises(SchemaMismatchError, match="seq"):
        restore_partition(_settings(lake), "p0000", log["changes"][-1]["ts"])


@pytest.mark.spark
def test_snapshot_run_on_corrupt_log_writes_nothing(spark, tmp_path):
    from weaver.core import storage
    from weaver.core.errors import SeqGapError
    from weaver.pitr import take_snapshots

    log = _corrupt(_gap)
    lake = write_lake(tmp_path / "lake", log)
    s = _settings(lake)
    with pytest.raises(SeqGapError, match="after 7"):
        take_snapshots(spark, s, max(c["ts"] for c in log["changes"]))
    assert not storage.is_table(storage.uri_for(s, storage.SNAPSHOTS))
    assert not storage.is_table(storage.uri_for(s, storage.SNAPSHOT_CATALOG))
