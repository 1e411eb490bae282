"""Bad input to `predict`, `backtest` and `whatif report` is a named error and changes nothing on
disk: windows past the longest one a forecast extrapolates over, run instants far past the change
log's end (or at the ends of the calendar), a missing or broken lake, an unknown calibration or
model, an --out inside the lake. Oracle: the lake's files and their bytes before and after."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, event_log, flat, forecast_settings, growing, part, write_lake
from weaver.core.errors import InvalidParameterError, InvalidTimepointError, WeaverError

POLICY = {"size_threshold_bytes": 600_000, "write_threshold_per_s": 100 / 3600.0, "bucket": "1h"}
# The last change of the lake below: g's 10th insert of hour 47 and f's last update lie in (47 h, 48 h).
HOURS = 48


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """g grows 10 000 B an hour over 48 h, f stays flat; no split."""
    root = tmp_path_factory.mktemp("bad_input") / "lake"
    events = growing("g", "a", HOURS) + flat("f", "f", HOURS)
    write_lake(root, event_log([part("g", "", "f"), part("f", "f", None)], events), policy=POLICY)
    return root


@pytest.fixture()
def lake(built, tmp_path) -> Path:
    dst = tmp_path / "lake"
    shutil.copytree(built, dst)
    return dst


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, files with the hash of their bytes."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def last_change(lake: Path) -> datetime:
    """The lake's last change, by hand: the largest `ts` of the events written (no weaver code)."""
    events = growing("g", "a", HOURS) + flat("f", "f", HOURS)
    return max(e[0] for e in events)


# --- finding 1: the window has an upper bound ------------------------------------------------------
def test_window_longer_than_the_bound_is_refused_before_anything_is_written(lake):
    from weaver.predict import backtest, predict
    from weaver.predict.forecasting import run_params

    s = forecast_settings(lake)
    before = tree(lake)
    with pytest.raises(InvalidParameterError, match="longer than 30d"):
        predict(s, at=T0 + 40 * H, window="31d", write=False)
    with pytest.raises(InvalidParameterError, match="longer than 30d"):
        predict(s, at=T0 + 40 * H, window="3650d")
    with pytest.raises(InvalidParameterError, match="longer than 30d"):
        backtest(s, start=T0 + 30 * H, end=T0 + 32 * H, window="99999999d")
    assert tree(lake) == before
    assert run_params(s, at=T0 + 40 * H, window="30d").window == timedelta(days=30)  # the bound itself is kept


# --- finding 2: run instants far past the change log's end ----------------------------------------
def test_runs_more_than_a_window_past_the_log_end_are_refused(lake):
    from weaver.predict import backtest, predict

    s = forecast_settings(lake)
    end = last_change(lake)
    before = tree(lake)
    with pytest.raises(InvalidTimepointError, match="past the change log's last change"):
        predict(s, at=end + timedelta(hours=24, seconds=1), write=False)
    with pytest.raises(InvalidTimepointError, match="past the change log's last change"):
        predict(s, at=datetime(2100, 1, 1, tzinfo=timezone.utc), window="2h")
    # A backtest whose last run lies a window and more past the end: nothing built, nothing written.
    with pytest.raises(InvalidTimepointError, match="past the change log's last change"):
        backtest(s, start=end + 30 * H, end=end + 32 * H)
    assert tree(lake) == before
    # A run at the log's end, and one a window after it, are in range: one row per partition.
    for at in (end, end + 24 * H):
        rows = predict(s, at=at, write=False, calibration="none").to_pylist()
        assert [r["partition_id"] for r in rows] == ["g", "f"]


# --- finding 3: nothing is written before the lake and the instant are checked ---------------------
def test_predict_on_a_missing_lake_creates_nothing(tmp_path):
    from weaver.core.errors import TableNotFoundError
    from weaver.predict import predict

    missing = tmp_path / "nolake"
    with pytest.raises(TableNotFoundError):
        predict(forecast_settings(missing), at=T0 + 40 * H, write=False)
    assert not missing.exists()


def test_predict_on_a_broken_change_log_writes_no_calibration_map(lake):
    from weaver.predict import predict

    shutil.rmtree(lake / "changelog" / "_delta_log")
    before = tree(lake)
    with pytest.raises(WeaverError):
        predict(forecast_settings(lake), at=T0 + 40 * H, write=False)
    assert tree(lake) == before


def test_predict_at_the_end_of_the_calendar_is_refused_and_writes_nothing(lake):
    from weaver.predict import predict

    before = tree(lake)
    with pytest.raises(InvalidTimepointError):
        predict(forecast_settings(lake), at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), write=False)
    assert tree(lake) == before


def test_a_dry_run_that_stores_no_map_writes_nothing(lake):
    from weaver.predict import predict

    before = tree(lake)
    rows = predict(forecast_settings(lake), at=T0 + 40 * H, write=False, store_map=False).to_pylist()
    assert [r["partition_id"] for r in rows] == ["g", "f"]
    assert tree(lake) == before


# --- finding 4: backtest checks every parameter before it builds metrics --------------------------
def test_backtest_unknown_calibration_writes_nothing(lake):
    from weaver.predict import backtest

    before = tree(lake)
    with pytest.raises(InvalidParameterError, match="calibration 'bogus' is unknown"):
        backtest(forecast_settings(lake), start=T0 + 30 * H, end=T0 + 32 * H, calibration="bogus")
    assert tree(lake) == before


# --- finding 5: whatif report checks first, and leaves no empty folder ----------------------------
def test_whatif_report_unknown_model_writes_nothing(lake):
    from weaver.predict import predict
    from weaver.whatif import render_report

    s = forecast_settings(lake)
    predict(s, at=T0 + 40 * H)  # a published run to advise on
    before = tree(lake)
    with pytest.raises(InvalidParameterError, match="model 'bogus' is unknown"):
        render_report(s, at=T0 + 41 * H, model="bogus")
    assert tree(lake) == before


def test_whatif_report_that_fails_leaves_no_folder(lake, tmp_path):
    from weaver.whatif import render_report

    s = forecast_settings(lake)
    rows = [{"run_ts": T0 + 40 * H, "partition_id": "g", "action": "pre_split", "probability": 0.9,
             "reason": "size", "predicted_split_ts": T0 + 50 * H, "split_key": None,
             "largest_before_bytes": None, "largest_after_bytes": None}]
    shutil.rmtree(lake / "changelog" / "_delta_log")
    out = tmp_path / "report"
    with pytest.raises(WeaverError):
        render_report(s, at=T0 + 41 * H, advice_rows=rows, out_dir=out)
    assert not out.exists()
    assert not (lake / "_weaver" / "whatif").exists()


# --- finding 6: the first instants of the calendar ------------------------------------------------
def test_runs_before_the_first_change_answer_like_a_restore(lake):
    """As a restore before the first change gives the empty state, a run then has no partition."""
    from weaver.predict import backtest, predict

    s = forecast_settings(lake)
    year1 = datetime(1, 1, 1, tzinfo=timezone.utc)
    assert predict(s, at=year1, write=False).num_rows == 0
    r = backtest(s, start=year1, end=year1 + 2 * H, out_dir=lake.parent / "bt")
    assert r["runs"] == 2 and r["rows_scored"] == 0
    assert all(v["rows"] == 0 for v in r["scores"].values())


# --- finding 7: no report inside the lake's tables or at its root ---------------------------------
@pytest.mark.parametrize("where", ["changelog", "changelog/sub", "."])
def test_report_out_inside_the_lake_is_refused(lake, where):
    from weaver.predict import backtest
    from weaver.whatif import render_report

    s = forecast_settings(lake)
    out = lake / where
    before = tree(lake)
    with pytest.raises(InvalidParameterError, match="--out"):
        backtest(s, start=T0 + 30 * H, end=T0 + 32 * H, out_dir=out)
    rows = [{"run_ts": T0 + 40 * H, "partition_id": "g", "action": "wait", "probability": 0.1, "reason": None,
             "predicted_split_ts": None, "split_key": None, "largest_before_bytes": None,
             "largest_after_bytes": None}]
    with pytest.raises(InvalidParameterError, match="--out"):
        render_report(s, at=T0 + 41 * H, advice_rows=rows, out_dir=out)
    assert tree(lake) == before


# --- a change log that breaks DESIGN §4.5 under `weaver predict` / build_metrics ------------------
# `restore` refused these logs while `predict` published predictions from them (session 38's audit).
def _bad_events(kind: str) -> list[dict]:
    """The built lake's change log with one defect at hour 40, by hand: seq 2 000 missing (a gap),
    or g's change there given a key of f's range (misrouted)."""
    log = event_log([part("g", "", "f"), part("f", "f", None)], growing("g", "a", HOURS) + flat("f", "f", HOURS))
    changes = log["changes"]
    i = next(j for j, c in enumerate(changes) if c["ts"] >= T0 + 40 * H and c["partition_id"] == "g")
    if kind == "gap":
        del changes[i]
    else:
        changes[i] = {**changes[i], "key": "fzz-misrouted"}
    return changes


def _rewrite_log(lake: Path, changes: list[dict], *, after: datetime | None = None) -> None:
    """Replace the lake's change log by `changes` (only those with ts >= `after` appended, when given)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from weaver.core import storage

    rows = [c for c in changes if after is None or c["ts"] >= after]
    t = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.CHANGELOG])
    write_deltalake(str(lake / "changelog"), t, mode="append" if after is not None else "overwrite")


BAD_LOG = {"gap": "SeqGapError", "misrouted": "KeyOutOfRangeError"}


@pytest.mark.parametrize("kind", sorted(BAD_LOG))
def test_predict_and_metrics_refuse_a_bad_change_log_and_write_nothing(lake, kind):
    from weaver.core import errors
    from weaver.predict import build_metrics, predict

    _rewrite_log(lake, _bad_events(kind))
    s = forecast_settings(lake)
    before = tree(lake)
    err = getattr(errors, BAD_LOG[kind])
    with pytest.raises(err):
        predict(s, at=T0 + HOURS * H, stage=True)
    with pytest.raises(err):
        build_metrics(s, end=T0 + HOURS * H)
    assert tree(lake) == before
    # Before the defect (hour 40) the same log is fine: the run is not refused.
    assert predict(s, at=T0 + 39 * H, write=False, store_map=False).num_rows == 2


@pytest.mark.parametrize("kind", sorted(BAD_LOG))
def test_a_bad_increment_after_a_checkpoint_is_refused(lake, kind):
    """The DAG's shape: metrics (with a checkpoint) up to hour 30 on a clean log, then an extract
    appends hours 30-48 with the defect: the next metrics and predict runs are refused."""
    from weaver.core import errors
    from weaver.predict import build_metrics, predict
    from weaver.predict.metrics import checkpoints

    bad = _bad_events(kind)
    cut = T0 + 30 * H
    _rewrite_log(lake, [c for c in bad if c["ts"] < cut])
    s = forecast_settings(lake)
    build_metrics(s, end=cut)
    assert [c.as_of_us for c in checkpoints(s)]  # the premise: a checkpoint to continue from
    _rewrite_log(lake, bad, after=cut)
    before = tree(lake)
    err = getattr(errors, BAD_LOG[kind])
    with pytest.raises(err):
        build_metrics(s, start=cut, end=T0 + HOURS * H)
    with pytest.raises(err):
        predict(s, at=T0 + HOURS * H, stage=True)
    assert tree(lake) == before


def test_cli_predict_names_the_gap(lake):
    import json

    from typer.testing import CliRunner

    from weaver.cli import app

    _rewrite_log(lake, _bad_events("gap"))
    before = tree(lake)
    r = CliRunner().invoke(app, ["predict", "--at", (T0 + HOURS * H).isoformat(), "--lake", str(lake), "--json"])
    assert r.exit_code != 0
    out = json.loads(r.stdout)
    assert out["error"] == "SeqGapError", out
    assert tree(lake) == before
