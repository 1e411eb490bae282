"""Where forecast fits run: the run's process pool or Spark (`settings.forecast_engine`,
`weaver.predict.forecasting.fit_engine`; docs/prediction.md §2, 6).

A Spark application costs its start whatever it fits, so `auto` takes Spark only on a cluster
master and only for fits planned to outlast that start. The expected engines below are worked out
by hand from the per-fit CPU costs at 72 history buckets and 200 sample paths
(`forecasting.FIT_CPU_S`, from bench/results/forecast_engine.json: path 0.0073 s, Prophet 0.85 s)
and the 60 s default.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, WRITE_T, event_log, flat, forecast_settings, growing, part, write_lake

CLUSTER = "spark://127.0.0.1:7077"
HOURS = 72


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    """g grows 10 000 bytes an hour and crosses 800 000 at the end of hour 81; f stays flat."""
    root = tmp_path_factory.mktemp("engine") / "lake"
    ev = growing("g", "a", HOURS) + flat("f", "f", HOURS)
    return write_lake(root, event_log([part("g", "", "f"), part("f", "f", None)], ev),
                      policy={"size_threshold_bytes": 800_000, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


@pytest.fixture()
def handed(monkeypatch) -> list[int]:
    """The sizes of the job lists the run hands to Spark (`forecasting._run_spark`), which fits
    them in this process instead: the cluster in CLUSTER does not exist."""
    from weaver.predict import forecasting

    sizes: list[int] = []

    def spark_fits(jobs, settings, spark=None):
        sizes.append(len(jobs))
        return forecasting.run_jobs(jobs, settings, engine="process")

    monkeypatch.setattr(forecasting, "_run_spark", spark_fits)
    return sizes


def _jobs(model: str, n: int, samples: int = 200, buckets: int = 72) -> list:
    from weaver.predict.models import Job

    ds = np.arange(buckets, dtype=np.int64) * 3_600_000_000
    ones = np.ones(buckets)
    return [Job(f"p{i:05d}", ds, ones, ones, ds[:1], 10.0, 1.0, samples, i, model) for i in range(n)]


def test_auto_takes_spark_only_on_a_cluster_for_a_long_run(tmp_path):
    from weaver.core.settings import load_settings
    from weaver.predict.forecasting import fit_engine

    local = load_settings(lake=str(tmp_path / "lake"), forecast_workers=2)
    assert local.forecast_engine == "auto" and local.forecast_spark_min_s == 60.0
    # No cluster: every run fits in the pool, even 1,000 Prophet fits (1,000 x 0.85 / 2 = 425 s).
    assert fit_engine(_jobs("prophet", 1000), local) == "process"
    cluster = replace(local, spark_master=CLUSTER)
    # The default model: 10,000 partitions plan 10,000 x 0.0073 / 2 = 36.5 s in the pool.
    assert fit_engine(_jobs("path", 10_000), cluster) == "process"
    # Prophet: 100 fits plan 42.5 s (the pool), 200 plan 85 s (Spark).
    assert fit_engine(_jobs("prophet", 100), cluster) == "process"
    assert fit_engine(_jobs("prophet", 200), cluster) == "spark"
    # Sample paths and history scale the cost: 100 fits at 400 paths plan 85 s, at a week of
    # history (168 buckets) 99.2 s; 300 fits at 24 buckets plan 42.5 s.
    assert fit_engine(_jobs("prophet", 100, samples=400), cluster) == "spark"
    assert fit_engine(_jobs("prophet", 100, buckets=168), cluster) == "spark"
    assert fit_engine(_jobs("prophet", 300, buckets=24), cluster) == "process"
    # One worker: 100 Prophet fits plan 85 s.
    assert fit_engine(_jobs("prophet", 100), replace(cluster, forecast_workers=1)) == "spark"
    # The threshold and the engine are settings; a forced engine holds whatever the run's size.
    assert fit_engine(_jobs("path", 1), replace(cluster, forecast_spark_min_s=0)) == "spark"
    assert fit_engine(_jobs("path", 1), replace(local, forecast_engine="spark")) == "spark"
    assert fit_engine(_jobs("prophet", 5000), replace(cluster, forecast_engine="process")) == "process"
    # A backtest's instants share one application. An instant of 20 Prophet fits plans
    # 20 x 0.85 / 2 = 8.5 s: the pool alone, Spark with a quarter of hourly instants (2,160) still
    # to fit, since it also outweighs one more Spark job's share, 60 x 3.0 / 25.7 = 7.0 s; 15
    # fits (6.4 s) do not, not even in an application already started.
    assert fit_engine(_jobs("prophet", 20), cluster) == "process"
    assert fit_engine(_jobs("prophet", 20), cluster, runs=2160) == "spark"
    assert fit_engine(_jobs("prophet", 20), cluster, runs=1, started=True) == "spark"
    assert fit_engine(_jobs("prophet", 15), cluster, runs=2160, started=True) == "process"
    # Ten instants of 20 fits (85 s together) start it; seven (59.5 s) do not.
    assert fit_engine(_jobs("prophet", 20), cluster, runs=10) == "spark"
    assert fit_engine(_jobs("prophet", 20), cluster, runs=7) == "process"
    assert fit_engine(_jobs("prophet", 20), replace(cluster, forecast_engine="process"), runs=2160) == "process"


@pytest.mark.parametrize("env, named", [({"WEAVER_FORECAST_ENGINE": "gpu"}, "forecast_engine"),
                                        ({"WEAVER_FORECAST_SPARK_MIN_S": "-1"}, "forecast_spark_min_s"),
                                        ({"WEAVER_FORECAST_SPARK_MIN_S": "nan"}, "forecast_spark_min_s"),
                                        ({"WEAVER_FORECAST_SPARK_MIN_S": "a minute"}, "WEAVER_FORECAST_SPARK_MIN_S")])
def test_a_bad_engine_setting_is_refused_by_name(tmp_path, monkeypatch, env, named):
    from weaver.core.errors import InvalidParameterError
    from weaver.core.settings import load_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(InvalidParameterError, match=named):
        load_settings(lake=str(tmp_path / "lake"))


def test_a_default_run_on_a_cluster_master_fits_in_its_own_process(lake, handed):
    """The hourly run of the default model on a `spark://` master starts no Spark application;
    told `forecast_engine=spark`, the same run hands every fit to Spark."""
    from weaver.predict import predict

    at = T0 + HOURS * H
    local = predict(forecast_settings(lake), at=at, model="path", write=False, calibration="none")
    s = forecast_settings(lake, spark_master=CLUSTER)
    on_cluster = predict(s, at=at, model="path", write=False, calibration="none")
    assert handed == []
    fitted = [r for r in on_cluster.to_pylist() if r["skip_reason"] is None]
    # g's known answer (it crosses 9 h into the 24 h window), and the same rows as off the cluster.
    g = next(r for r in fitted if r["partition_id"] == "g")
    assert g["reason"] == "size" and g["probability"] >= 0.9
    assert on_cluster.to_pylist() == local.to_pylist()
    forced = predict(s.with_overrides(forecast_engine="spark"), at=at, model="path", write=False,
                     calibration="none")
    assert handed == [len(fitted)] and forced.to_pylist() == local.to_pylist()


def test_a_batched_run_chooses_once_for_all_of_its_fits(lake, handed):
    """A run gathered in batches (one partition each here) is one decision: its fits together
    reach the threshold though neither batch's does alone, and every batch goes to Spark - one
    application for the run, not one start per batch."""
    from weaver.predict import predict

    at = T0 + HOURS * H
    s = forecast_settings(lake, spark_master=CLUSTER, forecast_batch_partitions=1, forecast_triage=False)
    one = 0.0073  # one path fit at 72 buckets on one worker (module docstring); two plan about 2x
    want = predict(forecast_settings(lake, forecast_triage=False), at=at, model="path", write=False,
                   calibration="none").to_pylist()
    got = predict(s.with_overrides(forecast_spark_min_s=1.5 * one), at=at, model="path", write=False,
                  calibration="none").to_pylist()
    assert handed == [1, 1] and got == want
    handed.clear()
    got = predict(s.with_overrides(forecast_spark_min_s=2.5 * one), at=at, model="path", write=False,
                  calibration="none").to_pylist()
    assert handed == [] and got == want


def test_the_cli_takes_the_engine_and_refuses_an_unknown_one_by_name(lake, handed, tmp_path):
    """`weaver predict --engine`: `spark` hands the fits to Spark, `process` keeps them in the
    pool on a `spark://` master; `gpu` is a named error and the lake stays as it was."""
    from tests.cli import file_tree, json_error, run_cli

    at = (T0 + HOURS * H).isoformat()
    env = {"WEAVER_SPARK_MASTER": CLUSTER, "WEAVER_FORECAST_WORKERS": "1"}
    before = file_tree(lake)
    res = run_cli("predict", "--lake", str(lake), "--at", at, "--engine", "gpu", "--json", env=env)
    err = json_error(res)
    assert err["error"] == "InvalidParameterError" and "forecast_engine 'gpu'" in err["message"], err
    assert file_tree(lake) == before
    for engine, fits in (("process", []), ("spark", [2])):
        res = run_cli("predict", "--lake", str(lake), "--at", at, "--engine", engine, "--no-write",
                      "--calibration", "none", "--json", env=dict(env, WEAVER_FORECAST_TRIAGE="0"))
        assert res.exit_code == 0, res.output
        assert handed == fits
        assert {r["partition_id"] for r in json.loads(res.stdout)["rows"]} == {"g", "f"}


def test_a_backtest_shares_one_application_among_its_instants(lake, handed, tmp_path):
    """A backtest fits all of its instants in one process: an instant goes to Spark when its fits
    times the instants left outweigh the application's start, and its own fits outweigh one more
    Spark job (`spark_floor_s`: 3.0 / 25.7 of the threshold). Each instant here fits g and f (two
    path fits at 48 history buckets, one worker): 2 x 0.0073 x 48 / 72 = 0.0097 s, `one` below."""
    import shutil
    from datetime import timedelta

    from weaver.predict.backtest import backtest

    copy = str(tmp_path / "lake")
    shutil.copytree(lake, copy)
    one = 2 * 0.0073 * 48 / 72
    local = forecast_settings(copy, forecast_triage=False, forecast_history=timedelta(hours=48))

    def scores(s, hours: int) -> dict:
        out = backtest(s, start=T0 + (HOURS - hours) * H, end=T0 + HOURS * H, model="path", calibration="none",
                       out_dir=tmp_path / "report", write_predictions=False)
        return out["scores"]

    want = {n: scores(local, n) for n in (4, 12)}
    assert handed == []
    cluster = local.with_overrides(spark_master=CLUSTER)
    # 4 instants, threshold 3 x one: no instant alone reaches it, the four together do, and one
    # instant (one) outweighs a further job (0.35 x one): all four go to one application.
    assert scores(cluster.with_overrides(forecast_spark_min_s=3 * one), 4) == want[4]
    assert handed == [2, 2, 2, 2]
    handed.clear()
    # Threshold 5 x one: the four instants together do not reach it.
    assert scores(cluster.with_overrides(forecast_spark_min_s=5 * one), 4) == want[4]
    assert handed == []
    # 12 instants, threshold 10 x one: together they reach it, but one instant's fits fall short
    # of a further Spark job's share (10 x one x 3.0 / 25.7 = 1.17 x one): none goes.
    assert scores(cluster.with_overrides(forecast_spark_min_s=10 * one), 12) == want[12]
    assert handed == []
