"""A kept Delta handle (weaver/core/deltafiles.py) skips delta-rs' log listing while the log shows
no later commit: its next commit file absent and `_last_checkpoint` unchanged. Checked against the
rows written (plain Python), for a commit by another writer, a table recreated at the same path,
and a log whose commit files after the handle's version were cleaned up behind a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa


def _write(uri: str, ids: list[int], mode: str = "append") -> None:
    from deltalake import write_deltalake

    write_deltalake(uri, pa.table({"id": pa.array(ids, pa.int64())}), mode=mode)


def _ids(snap) -> list[int]:
    return sorted(snap.read(None, ["id"], None).column("id").to_pylist())


def test_a_kept_handle_sees_every_later_commit_and_only_those(tmp_path):
    from weaver.core.deltafiles import delta_files

    uri = str(tmp_path / "t")
    _write(uri, [1])
    first = delta_files(uri, "t")
    assert _ids(first) == [1]
    assert delta_files(uri, "t") is first  # no commit since: the same version, derived data kept
    _write(uri, [2, 3])  # another writer's commit (its own handle)
    later = delta_files(uri, "t")
    assert later.version == 1 and _ids(later) == [1, 2, 3]
    _write(uri, [9], mode="overwrite")
    assert _ids(delta_files(uri, "t")) == [9]
    import shutil

    shutil.rmtree(uri)  # recreated at the same path: a new log, version 0 again
    _write(uri, [5])
    again = delta_files(uri, "t")
    assert again.version == 0 and _ids(again) == [5]


def test_commit_files_cleaned_up_behind_a_checkpoint_do_not_hide_the_later_versions(tmp_path):
    """Clean-up removes commit files before the latest checkpoint: a handle at version 0 then finds
    no `1.json`, and only the rewritten `_last_checkpoint` says the table moved."""
    from deltalake import DeltaTable

    from weaver.core.deltafiles import delta_files

    uri = str(tmp_path / "t")
    _write(uri, [0])
    assert _ids(delta_files(uri, "t")) == [0]
    for v in range(1, 6):
        _write(uri, [v])
    DeltaTable(uri).create_checkpoint()  # at version 5
    log = Path(uri) / "_delta_log"
    for v in range(1, 5):
        (log / f"{v:020d}.json").unlink()  # what log clean-up past the retention does
    assert not (log / f"{1:020d}.json").exists()  # the premise: the next commit file is gone
    snap = delta_files(uri, "t")
    assert snap.version == 5 and _ids(snap) == [0, 1, 2, 3, 4, 5]
