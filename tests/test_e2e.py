"""End to end through Airflow: the real DAGs run by `airflow dags test` on small lakes.

1. A bad batch fails the changelog GX suite and the run stops before metrics, forecasting and
   weaving (nothing downstream is written).
2. The demo on tiny data: predictions are woven by spark-submit, and one recovery is served from
   a woven snapshot and by the standard path with the same rows as an independent fold of the log.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from tests.oracle import fold, rows_to_dict
from weaver.core import storage
from weaver.core.errors import EnvironmentProblem

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    from weaver.pipeline.airflow_env import airflow_env, migrate

    home = tmp_path_factory.mktemp("airflow_home")
    migrate(home, airflow_env(home))
    return home


def test_bad_batch_stops_the_run_before_the_next_stage(small_lake, tmp_path, airflow_home):
    from deltalake import DeltaTable

    from weaver.pipeline.demo import run_dag

    lake = tmp_path / "lake"
    shutil.copytree(small_lake, lake)
    changes = storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    end = max(c["ts"] for c in changes).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    victim = max(c["seq"] for c in changes if c["ts"] < end - timedelta(minutes=30))
    DeltaTable(storage.table_uri(str(lake), storage.CHANGELOG)).delete(f"seq = {victim}")  # a gap in seq

    with pytest.raises(EnvironmentProblem) as err:
        run_dag("temporal_weaver", end, home=airflow_home, lake=str(lake), log_dir=tmp_path / "logs", timeout=900)
    log = (tmp_path / "logs").glob("temporal_weaver-*.log").__next__().read_text(errors="replace")
    assert "ExpectationFailedError" in log and "seq_step" in log
    # The run stopped at the boundary: nothing of the later stages exists.
    for name in (storage.PARTITION_METRICS, storage.PREDICTIONS):
        assert not storage.is_table(storage.table_uri(str(lake), name)), f"{name} was written after a failed check"
    assert not (lake / "woven").exists()
    assert "failed" in str(err.value)


def test_demo_on_tiny_data_recovers_equal_rows_both_ways(tmp_path, airflow_home):
    from weaver.pipeline.demo import demo
    from weaver.core.settings import load_settings
    from weaver.simulate import SimConfig

    lake = tmp_path / "lake"
    cfg = SimConfig(seed=7, partitions=2, days=3, base_rate=80.0, size_threshold_bytes=900_000,
                    write_threshold_per_s=0.5)
    res = demo(str(lake), home=str(airflow_home), config=cfg)
    assert [r["dag"] for r in res.runs] == ["weaver_snapshots", "temporal_weaver", "temporal_weaver"]
    assert res.predictions, "the forecasting stage wrote no predictions"
    assert res.weaves, "nothing was woven: no prediction reached the confidence threshold"
    rc = res.recovery
    assert rc is not None and rc["path"] == "woven"
    assert rc["rows_equal"] is True

    # Independent oracle: fold the raw change log over the partition's key range at T.
    from weaver.pitr import restore_partition
    from weaver.recover import recover

    s = load_settings(lake=str(lake))
    changes = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    parts = {p["partition_id"]: p for p in
             storage.read(storage.uri_for(s, storage.PARTITIONS), storage.PARTITIONS).to_pylist()}
    p = parts[rc["partition_id"]]
    expected = fold(changes, key_lo=p["key_lo"], key_hi=p["key_hi"], at=rc["at"])
    woven = recover(s, rc["partition_id"], rc["at"])
    assert woven.path == "woven"
    assert rows_to_dict(woven.table) == expected
    assert rows_to_dict(restore_partition(s, rc["partition_id"], rc["at"]).table) == expected
    # Every woven sequence respects DESIGN §4.2 against the same oracle at its last timepoint.
    snaps = storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS).to_pylist()
    for w in res.weaves:
        if not w["timepoints"]:
            continue
        tp = w["last_timepoint"]
        src = parts[w["source_partition_id"]]
        want = fold(changes, key_lo=src["key_lo"], key_hi=src["key_hi"], at=tp)
        left = {r["key"]: r["value"] for r in snaps if r["weave_id"] == w["weave_id"] and r["timepoint"] == tp
                and r["woven_partition_id"] == w["child_ids"][0]}
        right = {r["key"]: r["value"] for r in snaps if r["weave_id"] == w["weave_id"] and r["timepoint"] == tp
                 and r["woven_partition_id"] == w["child_ids"][1]}
        assert left == {k: v for k, v in want.items() if k < w["split_key"]}
        assert right == {k: v for k, v in want.items() if k >= w["split_key"]}
