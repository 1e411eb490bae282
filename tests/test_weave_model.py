"""A weaving run weaves ONE model's predictions (Arrow engine, no Spark).

`predictions` holds several models' rows at one run instant (``weaver backtest --model X``
backfills X's; a second forecast writes its own), one row per (run, partition, model). Weaving
them all would give one partition two sequences of one run from different models. The lakes
here hold two models' predictions at the same instant (and a later run of one model only); the
expected sequences are named by hand: weave_id = sha1(prediction_id)[:16] (DESIGN A3), the
woven rows are checked against tests/oracle.py's fold.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, write_lake

RUN = T0 + 2 * H      # both models forecast at this instant
LATER = T0 + 3 * H    # a later run of arima only
AT = T0 + 5 * H


def _pred(pid: str, model: str, partition: str, split_key: str, *, run_ts=RUN, probability=0.9) -> dict:
    p = prediction(partition, run_ts=run_ts, split_key=split_key, probability=probability, model=model,
                   split_ts=run_ts + timedelta(minutes=90))
    return {**p, "prediction_id": pid}


# The default model (`weaver predict` without --model writes "path") and a backfilled one.
PATH_P0 = _pred("path-p0", "path", "p0", "k07")
PATH_P1 = _pred("path-p1", "path", "p1", "k30")
ARIMA_P0 = _pred("arima-p0", "arima", "p0", "k13", probability=0.95)
ARIMA_P1 = _pred("arima-p1", "arima", "p1", "k33", probability=0.8)
ARIMA_LATER_P0 = _pred("arima-later-p0", "arima", "p0", "k05", run_ts=LATER)


def wid(prediction_id: str) -> str:
    return hashlib.sha1(prediction_id.encode()).hexdigest()[:16]


@pytest.fixture()
def lake(tmp_path):
    data = make_log(seed=3)
    s = weave_settings(write_lake(tmp_path / "lake", data), weave_engine="arrow")
    put_predictions(s, [PATH_P0, PATH_P1, ARIMA_P0, ARIMA_P1])
    return s, data


def _catalog(s) -> dict[str, str]:
    """weave_id -> prediction_id of every catalog row."""
    from weaver.core import storage

    t = storage.read(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)
    return dict(zip(t.column("weave_id").to_pylist(), t.column("prediction_id").to_pylist()))


def _woven_ids(s) -> set[str]:
    from weaver.core import storage

    t = storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS, missing_ok=True)
    return set(t.column("weave_id").to_pylist())


def test_two_models_at_one_instant_only_the_default_models_predictions_become_sequences(lake):
    from weaver.weave import weave

    s, data = lake
    r = weave(None, s, at=AT)
    # Both path predictions (0.9 >= 0.75) and nothing of arima's, though arima's are above it too.
    assert _catalog(s) == {wid("path-p0"): "path-p0", wid("path-p1"): "path-p1"}
    assert _woven_ids(s) == {wid("path-p0"), wid("path-p1")}
    assert (r["run_ts"], r["new_sequences"], r["below_threshold"]) == (RUN.isoformat(), 2, 0)
    # Split at 03:30, woven at 03:30 and 04:30 (<= 05:00): 2 timepoints per sequence.
    assert r["timepoints_written"] == 4
    assert assert_matches_oracle(s, data, [PATH_P0, PATH_P1], at=AT) == 4

    # The other model, named: its own two sequences; the path ones only extend (nothing new due).
    r = weave(None, s, at=AT, model="arima")
    assert (r["run_ts"], r["new_sequences"]) == (RUN.isoformat(), 2)
    assert _catalog(s) == {wid(p): p for p in ("path-p0", "path-p1", "arima-p0", "arima-p1")}
    assert assert_matches_oracle(s, data, [PATH_P0, PATH_P1, ARIMA_P0, ARIMA_P1], at=AT) == 8


def test_the_latest_run_is_the_models_own_latest_run(lake):
    from weaver.weave import weave

    s, data = lake
    put_predictions(s, [ARIMA_LATER_P0])  # arima ran again at 03:00; path did not
    r = weave(None, s, at=AT)  # the default model's latest run <= 05:00 is 02:00, not arima's 03:00
    assert r["run_ts"] == RUN.isoformat()
    assert _catalog(s) == {wid("path-p0"): "path-p0", wid("path-p1"): "path-p1"}
    r = weave(None, s, at=AT, model="arima")  # arima's latest: 03:00, one prediction
    assert (r["run_ts"], r["new_sequences"]) == (LATER.isoformat(), 1)
    assert set(_catalog(s).values()) == {"path-p0", "path-p1", "arima-later-p0"}
    # 03:30 and 04:30 of each path sequence, 04:30 of the arima one (split at 03:00 + 90 min).
    assert assert_matches_oracle(s, data, [PATH_P0, PATH_P1, ARIMA_LATER_P0], at=AT) == 5


def test_an_explicit_run_without_the_models_predictions_is_refused_and_nothing_is_written(lake):
    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError
    from weaver.weave import planned_engine, weave

    s, _ = lake
    put_predictions(s, [ARIMA_LATER_P0])
    with pytest.raises(InvalidParameterError, match=r"no predictions of model 'path' with run_ts 2026-01-01T03:00") as e:
        weave(None, s, at=AT, run_ts=LATER)
    assert "arima" in str(e.value)  # what that run does hold
    with pytest.raises(InvalidParameterError, match="model 'prophet'"):
        planned_engine(s, at=AT, run_ts=RUN, model="prophet")
    assert not storage.is_table(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
    assert not storage.is_table(storage.uri_for(s, storage.WOVEN_CATALOG))


def test_an_unknown_model_is_refused_by_name_and_nothing_is_written(lake):
    """A typo (`patth`) used to weave nothing and report run_ts null, like a quiet run."""
    from typer.testing import CliRunner

    from weaver.cli import app
    from weaver.core import storage
    from weaver.core.errors import InvalidParameterError
    from weaver.weave import weave

    s, _ = lake
    with pytest.raises(InvalidParameterError, match=r"model 'patth' is unknown") as e:
        weave(None, s, at=AT, model="patth")
    assert "['arima', 'path']" in str(e.value)  # the models this table holds
    res = CliRunner().invoke(app, ["weave", "--lake", s.lake, "--at", AT.isoformat(), "--model", "patth",
                                   "--no-reconcile", "--json"])
    assert res.exit_code == 2, res.output
    err = json.loads(res.stdout.strip().splitlines()[-1])
    assert err["error"] == "InvalidParameterError" and "patth" in err["message"]
    assert not storage.is_table(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
    assert not storage.is_table(storage.uri_for(s, storage.WOVEN_CATALOG))


def test_a_name_outside_the_forecast_models_is_woven_once_the_table_holds_its_rows(lake):
    from weaver.weave import weave

    s, data = lake
    mine = _pred("mine-p0", "my-forecaster", "p0", "k09")
    put_predictions(s, [mine])
    r = weave(None, s, at=AT, model="my-forecaster")
    assert (r["run_ts"], r["new_sequences"]) == (RUN.isoformat(), 1)
    assert _catalog(s) == {wid("mine-p0"): "mine-p0"}
    assert assert_matches_oracle(s, data, [mine], at=AT) == 2


def test_cli_weave_model_option(lake):
    from typer.testing import CliRunner

    from weaver.cli import app

    s, data = lake
    res = CliRunner().invoke(app, ["weave", "--lake", s.lake, "--at", AT.isoformat(), "--model", "arima",
                                   "--run-ts", RUN.isoformat(), "--no-reconcile", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert (out["model"], out["run_ts"], out["new_sequences"]) == ("arima", RUN.isoformat(), 2)
    assert _catalog(s) == {wid("arima-p0"): "arima-p0", wid("arima-p1"): "arima-p1"}
    assert assert_matches_oracle(s, data, [ARIMA_P0, ARIMA_P1], at=AT) == 4


def test_the_dags_weave_tasks_weave_the_forecast_tasks_model(lake):
    from airflow.dag_processing.dagbag import DagBag

    s, _ = lake
    dag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags" / "temporal_weaver.py")).dags[
        "temporal_weaver"]
    params = {"lake": s.lake, "model": "arima", "confidence_threshold": 0.75, "weave_engine": None}
    run = {"at": AT.isoformat()}
    plan = dag.get_task("weave_engine").python_callable(run, params=params)
    assert plan == "weave_arrow"
    r = dag.get_task("weave_arrow").python_callable(run, params=params)
    assert r["new_sequences"] == 2
    assert _catalog(s) == {wid("arima-p0"): "arima-p0", wid("arima-p1"): "arima-p1"}
    # The spark-submit branch hands the same param to spark_jobs/weave.py.
    assert "--model={{ params.model }}" in dag.get_task("weave").application_args


def test_the_spark_job_passes_its_model(lake, monkeypatch, capsys):
    """spark_jobs/weave.py --model reaches weave() (the session stubbed: the Arrow engine needs none)."""
    import importlib.util

    from weaver.core import spark as core_spark

    s, _ = lake
    monkeypatch.setattr(core_spark, "get_spark", lambda settings, name: _NoSession())
    spec = importlib.util.spec_from_file_location(
        "weave_job", Path(__file__).resolve().parent.parent / "spark_jobs" / "weave.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    rc = job.main(["--lake", s.lake, "--at", AT.isoformat(), "--model", "arima", "--engine", "arrow"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, out
    assert (out["model"], out["new_sequences"]) == ("arima", 2)
    assert set(_catalog(s).values()) == {"arima-p0", "arima-p1"}


class _NoSession:
    class sparkContext:  # noqa: N801 - the attribute run_job reads
        master = "local[stub]"  # not a cluster: the Arrow engine stays in this process


def test_the_run_record_counts_only_the_runs_model(lake):
    """The DAG's publish summary names its model: a backfilled model's rows at the same instant
    are neither counted nor counted above the threshold (hand count: PATH_P0, PATH_P1 at 0.9)."""
    from weaver.pipeline import run_summary

    s, _ = lake
    mine = run_summary(s, at=RUN, model="path")
    assert (mine["model"], mine["predictions"], mine["above_threshold"]) == ("path", 2, 2)
    other = run_summary(s, at=RUN, model="prophet")
    assert (other["predictions"], other["above_threshold"]) == (0, 0)
    every = run_summary(s, at=RUN)
    assert (every["model"], every["predictions"], every["above_threshold"]) == (None, 4, 4)
