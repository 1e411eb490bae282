"""Delta tables whose rows the readers here would get wrong are refused by name, nothing written.

Column mapping (``delta.columnMapping.mode``) keeps a table's data columns under physical names:
delta-rs' pyarrow dataset - every read here that is not Spark - reads them as nulls without an
error. Deletion vectors mark deleted rows outside the data files: delta-rs opens such a table and
fails only at the first read, with its own exception. Either kind of contract table is refused
with UnsupportedTableFeatureError (a CorruptTableError) naming the table and the way out, before
any row is read or written; so is a table that gains column mapping while a process keeps it open.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.lakes import standard_lake


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time: what "nothing written" compares."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = (Path(dirpath) / f).stat()
            out[str(Path(dirpath, f).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _rewrite_with_column_mapping(uri: str) -> pa.Table:
    """Replace the Delta table at `uri` by one holding the same rows under column mapping (name)."""
    from deltalake import DeltaTable, write_deltalake

    dt = DeltaTable(uri)
    rows = dt.to_pyarrow_dataset().to_table()
    parts = list(dt.metadata().partition_columns)
    shutil.rmtree(uri)
    write_deltalake(uri, rows, partition_by=parts or None, configuration={"delta.columnMapping.mode": "name"})
    return rows


def test_a_column_mapped_change_log_is_refused_by_recover_and_the_cli_with_nothing_written(tmp_path):
    from deltalake import DeltaTable

    from weaver.cli import app
    from weaver.core import storage
    from weaver.core.errors import CorruptTableError, UnsupportedTableFeatureError
    from weaver.recover import recover

    lake = standard_lake(tmp_path / "lake")
    s = lake.settings
    at = lake.ts_of(100)
    uri = storage.uri_for(s, storage.CHANGELOG)
    written = _rewrite_with_column_mapping(uri)
    # The premise: delta-rs' pyarrow reader gives this table's data columns as nulls, no error.
    seen = DeltaTable(uri).to_pyarrow_dataset().to_table()
    assert seen.num_rows == written.num_rows and seen.column("key").null_count == written.num_rows, \
        "delta-rs now reads column-mapped tables: check_read_features' column-mapping refusal may go"
    before = _listing(tmp_path / "lake")
    for prefer in ("woven", "standard"):
        with pytest.raises(UnsupportedTableFeatureError, match="column mapping") as err:
            recover(s, "P0", at, prefer=prefer)
        assert isinstance(err.value, CorruptTableError) and "changelog" in str(err.value)
    r = CliRunner().invoke(app, ["recover", "--lake", str(tmp_path / "lake"), "--partition", "P0",
                                 "--at", at.isoformat(), "--out", str(tmp_path / "p0.parquet"), "--json"],
                         env={"WEAVER_API_TOKEN": ""})
    assert r.exit_code == 2 and not (tmp_path / "p0.parquet").exists()
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] == "UnsupportedTableFeatureError" and "delta.columnMapping.mode = name" in out["message"]
    assert _listing(tmp_path / "lake") == before


def test_a_column_mapped_partitions_table_is_refused_where_it_would_have_read_null_ranges(tmp_path):
    """Null key ranges would make every partition cover every key: refused, not read."""
    from weaver.core import storage
    from weaver.core.errors import UnsupportedTableFeatureError
    from weaver.log.lineage import Lineage

    lake = standard_lake(tmp_path / "lake")
    _rewrite_with_column_mapping(storage.uri_for(lake.settings, storage.PARTITIONS))
    before = _listing(tmp_path / "lake")
    with pytest.raises(UnsupportedTableFeatureError, match="partitions"):
        Lineage.load(lake.settings)
    assert _listing(tmp_path / "lake") == before


def test_readable_features_are_ones_delta_rs_reads():
    """The features let through are a subset of what delta-rs' pyarrow reader applies."""
    from deltalake.table import SUPPORTED_READER_FEATURES

    from weaver.core.storage import READABLE_FEATURES

    assert READABLE_FEATURES <= set(SUPPORTED_READER_FEATURES)
    assert "deletionVectors" not in READABLE_FEATURES and "columnMapping" not in READABLE_FEATURES


def test_deletion_vectors_and_column_mapping_gained_under_an_open_handle_are_refused(tmp_path, spark):
    """Spark writes what delta-rs cannot read: a change log with a deletion vector (refused at
    open, where delta-rs would have raised its own error at the first read), and column mapping
    enabled on a log this process already holds open (refused on the handle's next version)."""
    from weaver.core import storage
    from weaver.core.deltafiles import delta_files
    from weaver.core.errors import UnsupportedTableFeatureError
    from weaver.log.changelog import ChangeLog
    from weaver.recover import recover

    lake = standard_lake(tmp_path / "lake")
    s = lake.settings
    at = lake.ts_of(100)
    uri = storage.uri_for(s, storage.CHANGELOG)
    # Deletion vectors: the same rows rewritten by Spark with the feature on, one row deleted.
    dv = str(tmp_path / "dv")
    (spark.read.format("delta").load(uri).write.format("delta")
        .option("delta.enableDeletionVectors", "true").save(dv))
    spark.sql(f"DELETE FROM delta.`{dv}` WHERE seq = 120")
    shutil.move(uri, str(tmp_path / "changelog-plain"))
    shutil.copytree(dv, uri)
    before = _listing(tmp_path / "lake")
    with pytest.raises(UnsupportedTableFeatureError, match="deletionVectors"):
        recover(s, "P0", at, prefer="standard")
    with pytest.raises(UnsupportedTableFeatureError, match="deletionVectors"):
        ChangeLog(s).read(0, 10)
    assert _listing(tmp_path / "lake") == before
    # Column mapping enabled on a log already open in this process (a kept handle moves forward).
    shutil.rmtree(uri)
    shutil.move(str(tmp_path / "changelog-plain"), uri)
    got = recover(s, "P0", at, prefer="standard").table
    assert dict(zip(got.column("key").to_pylist(), got.column("value").to_pylist())) == lake.expected("P0", at)
    first = delta_files(uri, storage.CHANGELOG)
    spark.sql(f"ALTER TABLE delta.`{uri}` SET TBLPROPERTIES ('delta.minReaderVersion' = '2', "
              "'delta.minWriterVersion' = '5', 'delta.columnMapping.mode' = 'name')")
    with pytest.raises(UnsupportedTableFeatureError, match="column mapping"):
        delta_files(uri, storage.CHANGELOG)
    with pytest.raises(UnsupportedTableFeatureError, match="column mapping"):
        recover(s, "P0", at, prefer="standard")
    from deltalake import DeltaTable

    assert DeltaTable(uri).version() == first.version + 1  # the handle's next version was the refused one
