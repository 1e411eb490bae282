"""Guards on three inputs that used to write where or what they should not: a ``--woven-root``
inside a lake, a cadence giving millions of timepoints, and advice on a damaged change log.

Each refusal is a named error (one JSON object with ``--json``, exit 2) and the lake's files are
byte-for-byte what they were (hashed before and after). The expected counts are worked out by hand
from the inputs (a span divided by a cadence), never taken from weaver's own output.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from tests.cli import file_tree, json_error, run_cli
from tests.lakes import H, T0, make_log, prediction, put_predictions, weave_settings, write_lake
from weaver.core import storage

#: make_log's change log runs from T0 to about T0 + 10 h; p1 = [k20, +inf) never splits.
RUN = T0 + 2 * H
AT = (T0 + 9 * H).isoformat()


_run, _error, _tree = run_cli, json_error, file_tree


def _lake(root: Path, *, probability: float = 0.9, log_chunk: int | None = None) -> str:
    """A two-partition lake with one prediction of p1 (split at k25 at 3:30, window 2-8 h)."""
    lake = write_lake(root, make_log(1), log_chunk=log_chunk)
    put_predictions(weave_settings(lake), [prediction("p1", run_ts=RUN, split_key="k25", probability=probability)])
    return lake


@pytest.fixture
def lake(tmp_path) -> str:
    return _lake(tmp_path / "lake")


# --- 1. --woven-root -------------------------------------------------------------------------------
def _bad_roots(tmp_path: Path, lake: str) -> dict[str, str]:
    other = _lake(tmp_path / "other")  # another lake: its root and its tables are no woven root either
    return {
        "own changelog": f"{lake}/changelog",
        "inside own partitions": f"{lake}/partitions/woven",
        "own root": lake,
        "inside own root": f"{lake}/cheap",
        "other lake root": other,
        "other changelog": f"{other}/changelog",
        "inside other lake": f"{other}/woven2",
    }


@pytest.mark.parametrize("cmd", [["weave", "--at", AT], ["woven-vacuum"]], ids=lambda c: c[0])
def test_a_woven_root_inside_a_lake_is_refused_and_nothing_changes(tmp_path, lake, cmd):
    for what, root in _bad_roots(tmp_path, lake).items():
        before = _tree(tmp_path)
        obj = _error(_run(*cmd, "--woven-root", root, "--lake", lake, "--json"))
        assert obj["error"] == "InvalidParameterError", (what, obj)
        assert "--woven-root" in obj["message"], (what, obj)
        assert _tree(tmp_path) == before, what


def test_a_woven_root_from_the_environment_is_refused_before_weaving(tmp_path, lake):
    from weaver.core.errors import InvalidParameterError
    from weaver.weave import weave

    s = weave_settings(lake, woven_root=f"{lake}/changelog")  # as WEAVER_WOVEN_ROOT or the spark job pass it
    before = _tree(tmp_path)
    with pytest.raises(InvalidParameterError, match="changelog"):
        weave(None, s, at=T0 + 9 * H, stage=True)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("cmd", [["weave", "--at", AT], ["woven-vacuum"], ["maintain", "--now", AT]],
                         ids=lambda c: c[0])
def test_a_woven_root_inside_the_lake_from_the_environment_is_refused(tmp_path, lake, cmd):
    before = _tree(tmp_path)
    obj = _error(_run(*cmd, "--lake", lake, "--json", env={"WEAVER_WOVEN_ROOT": f"{lake}/changelog"}))
    assert obj["error"] == "InvalidParameterError" and "WEAVER_WOVEN_ROOT" in obj["message"], obj
    assert _tree(tmp_path) == before


def test_maintain_refuses_such_a_root_before_its_snapshot_vacuum_writes(tmp_path):
    from tests.lakes import split_log

    log, snaps = split_log()
    lake = write_lake(tmp_path / "lake", log, snaps, log_chunk=4)
    now = log["changes"][-1]["ts"]
    window = f"{int((now - log['changes'][9]['ts']).total_seconds())}s"  # the vacuum would delete seq 1-9
    before = _tree(tmp_path)
    obj = _error(_run("maintain", "--now", now.isoformat(), "--lake", lake, "--json",
                      env={"WEAVER_RECOVERY_WINDOW": window, "WEAVER_WOVEN_ROOT": f"{lake}/snapshots"}))
    assert obj["error"] == "InvalidParameterError" and "WEAVER_WOVEN_ROOT" in obj["message"], obj
    assert _tree(tmp_path) == before


def test_the_default_and_a_separate_woven_root_still_work(tmp_path, lake):
    cheap = tmp_path / "cheap" / "woven"
    lake_before = _tree(lake)
    for _ in range(2):  # the second run finds an existing woven tier there
        res = _run("weave", "--at", AT, "--woven-root", str(cheap), "--lake", lake, "--json")
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in cheap.iterdir()) == ["woven_catalog", "woven_snapshots"]
    assert _tree(lake) == lake_before  # nothing of the woven tier in the lake
    res = _run("weave", "--at", AT, "--woven-root", f"{lake}/woven", "--lake", lake, "--json")
    assert res.exit_code == 0, res.output
    assert (Path(lake) / "woven" / "woven_snapshots" / "_delta_log").is_dir()


def test_object_store_woven_roots_are_checked_by_name_only():
    from weaver.core.errors import InvalidParameterError
    from weaver.core.settings import Settings

    def check(lake, root):
        storage.check_woven_root(Settings(lake=lake, woven_root=root), what="--woven-root")

    check("s3://bucket/lake", "s3://bucket/lake/woven/")  # the default, spelled with a slash
    check("s3://bucket/lake", "s3://cold/woven")  # another bucket: nothing to decide without listing it
    check("./lake", "s3://cold/woven")
    for bad in ("s3://bucket/lake/changelog", "s3://bucket/lake/splits/x", "s3://bucket/lake", "s3://bucket/lake/x"):
        with pytest.raises(InvalidParameterError, match="--woven-root"):
            check("s3://bucket/lake", bad)


# --- 2. cadence: the number of timepoints is capped ------------------------------------------------
def test_whatif_with_a_one_second_cadence_is_refused_and_nothing_changes(tmp_path, lake):
    before = _tree(tmp_path)
    # T = 1 h, until = T + the 24 h window: 86,400 s / 1 s + 1 = 86,401 timepoints.
    obj = _error(_run("whatif", "weave", "--partition", "p1", "--at", (T0 + H).isoformat(), "--cadence", "1s",
                      "--lake", lake, "--json"))
    assert obj["error"] == "InvalidParameterError", obj
    assert "86,401 timepoints" in obj["message"] and "10,000" in obj["message"], obj
    assert "coarser cadence" in obj["message"], obj
    assert _tree(tmp_path) == before


def test_weave_with_a_one_second_cadence_is_refused_and_nothing_changes(tmp_path, lake):
    before = _tree(tmp_path)
    # The prediction's sequence runs from its split at 3:30 to the window's end at 8:00: 16,200 s -> 16,201.
    obj = _error(_run("weave", "--at", AT, "--cadence", "1s", "--lake", lake, "--json"))
    assert obj["error"] == "InvalidParameterError", obj
    assert "16,201 timepoints" in obj["message"] and "10,000" in obj["message"], obj
    assert _tree(tmp_path) == before


def test_the_cap_is_ten_thousand_timepoints(lake):
    from weaver.core.errors import InvalidParameterError
    from weaver.whatif import plan_whatif

    s = weave_settings(lake, woven_cadence="1s")
    at = T0 + H
    plan_whatif(s, "p1", at, until=at + timedelta(seconds=9_999))  # 10,000 timepoints: allowed
    with pytest.raises(InvalidParameterError, match="10,001 timepoints"):
        plan_whatif(s, "p1", at, until=at + timedelta(seconds=10_000))


def test_api_whatif_answers_400_for_too_many_timepoints(tmp_path, lake):
    from fastapi.testclient import TestClient

    from weaver.api import create_app

    s = weave_settings(lake, woven_cadence="1s", api_token="tok")
    before = _tree(tmp_path)
    with TestClient(create_app(s)) as client:
        r = client.post("/v1/whatif", json={"partition_id": "p1", "at": (T0 + H).isoformat()},
                        headers={"Authorization": "Bearer tok"})
    assert r.status_code == 400, r.text
    assert "86,401 timepoints" in r.text, r.text
    assert _tree(tmp_path) == before


# --- 3. advice on a damaged change log -------------------------------------------------------------
def _truncate_a_data_file(lake: str) -> None:
    f = sorted((Path(lake) / "changelog").glob("*.parquet"))[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_a_data_file(lake: str) -> None:
    sorted((Path(lake) / "changelog").glob("*.parquet"))[0].unlink()


def _delete_the_delta_log(lake: str) -> None:
    shutil.rmtree(Path(lake) / "changelog" / "_delta_log")


@pytest.mark.parametrize("damage", [_truncate_a_data_file, _delete_a_data_file, _delete_the_delta_log],
                         ids=lambda d: d.__name__.strip("_"))
@pytest.mark.parametrize("probability", [0.1, 0.9], ids=["all-wait", "advised"])
def test_advise_on_a_damaged_change_log_is_corrupt_and_writes_nothing(tmp_path, damage, probability):
    lake = _lake(tmp_path / "lake", probability=probability, log_chunk=40)  # four change-log files
    damage(lake)
    before = _tree(tmp_path)
    obj = _error(_run("whatif", "advise", "--at", (T0 + 3 * H).isoformat(), "--lake", lake, "--json"))
    assert obj["error"] == "CorruptTableError" and "changelog" in obj["message"], obj
    assert _tree(tmp_path) == before
    assert not (Path(lake) / "advice").exists()


def test_advise_on_an_intact_lake_still_writes_its_waits(tmp_path):
    lake = _lake(tmp_path / "lake", probability=0.1, log_chunk=40)
    res = _run("whatif", "advise", "--at", (T0 + 3 * H).isoformat(), "--lake", lake, "--json")
    assert res.exit_code == 0, res.output
    assert [r["action"] for r in json.loads(res.stdout)["items"]] == ["wait"]
    assert (Path(lake) / "advice" / "_delta_log").is_dir()
