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

    # --- advice on every run (temporal_weaver's `advise` task) -----------------------------------
    # One advice row per prediction of each run, keyed on the prediction; below the confidence
    # threshold the only advice is to wait (hand rule of design.md A8, not the code's own output).
    from weaver.whatif import read_advice

    preds = {r["prediction_id"]: r for r in
             storage.read(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS).to_pylist()}
    advice = read_advice(s).to_pylist()
    assert sorted(a["prediction_id"] for a in advice) == sorted(preds)
    for a in advice:
        p = preds[a["prediction_id"]]
        assert (a["run_ts"], a["partition_id"], a["probability"]) == (p["run_ts"], p["partition_id"], p["probability"])
        if p["probability"] < 0.75:
            assert a["action"] == "wait", a
        else:
            assert a["action"] in ("pre_split", "raise_capacity"), a

    # --- the weaver_whatif DAG, run by Airflow with params ---------------------------------------
    # A leaf partition (never split) existing 6 h before the end: "what if it had split then?"
    from weaver.pipeline.demo import run_dag

    end = max(c["ts"] for c in changes)
    t = (end - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    split_parents = {x["parent_id"] for x in
                     storage.read(storage.uri_for(s, storage.SPLITS), storage.SPLITS).to_pylist()}
    leaf = next(p for p in sorted(parts.values(), key=lambda p: p["partition_id"])
                if p["partition_id"] not in split_parents and p["created_ts"] < t - timedelta(hours=1))
    until = t + timedelta(hours=2)
    run_dag("weaver_whatif", t, home=airflow_home, lake=str(lake), log_dir=tmp_path / "whatif-logs",
            conf={"partition": leaf["partition_id"], "at": t.isoformat(), "until": until.isoformat()})
    s = load_settings(lake=str(lake))
    manual = [w for w in storage.read(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG).to_pylist()
              if w["origin"] == "manual"]
    assert len(manual) == 1 and manual[0]["status"] == "active", manual
    w = manual[0]
    assert w["source_partition_id"] == leaf["partition_id"] and leaf["key_lo"] < w["split_key"]
    snaps = storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS).to_pylist()
    tps = sorted({r["timepoint"] for r in snaps if r["weave_id"] == w["weave_id"]})
    assert tps and tps[0] == t and tps[-1] <= until, tps
    for tp in tps:
        want = fold(changes, key_lo=leaf["key_lo"], key_hi=leaf["key_hi"], at=tp)
        got = {}
        for r in snaps:
            if r["weave_id"] == w["weave_id"] and r["timepoint"] == tp:
                left = r["woven_partition_id"].endswith("L")
                assert (r["key"] < w["split_key"]) == left, r  # each row in its child's range
                got[r["key"]] = r["value"]
        assert got == want, tp
    # The DAG's report task wrote the static page.
    assert list((lake / "_weaver" / "whatif").glob("*/*.html")), "weaver_whatif wrote no report"
