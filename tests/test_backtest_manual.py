"""Backtest scoring with an operator's split: a manual split is no outcome a model can be scored on.

A hand-built lake (tests/lakes.py `manual_split_lake`) holds one size split and one manual split;
the model's predictions are set by hand (``forecasting.predict`` replaced), so every count and score
below is worked out by hand.
"""

from __future__ import annotations

import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, forecast_settings, manual_split_lake

# Runs at 10, 14, 18 h, window 8 h: (10, 18], (14, 22], (18, 26]; the log reaches ~40 h, so none is
# censored. Hand-set probabilities (threshold 0.75) and predicted split times:
PROB = {
    (10, "s"): (0.9, 17), (10, "m"): (0.8, 17), (10, "c"): (0.1, None),      # s TP (split 16 h); m FP; c TN
    (14, "s"): (0.85, 16), (14, "m"): (0.9, 20), (14, "c"): (0.0, None),     # s TP; m manual split in window
    (18, "s1"): (0.0, None), (18, "s2"): (0.0, None), (18, "m"): (0.3, None),  # m manual split in window
    (18, "c"): (0.95, 25),                                                   # c FP
}
ACTIVE = {10: {"s", "m", "c"}, 14: {"s", "m", "c"}, 18: {"s1", "s2", "m", "c"}}


def _fake_predict(seen):
    import pyarrow as pa

    from weaver.predict import forecasting

    def predict(settings, *, at, model, run_input, **_):
        h = round((at - T0) / H)
        window = run_input[0].params.window
        pids = [p.partition.partition_id for run in run_input for p in run.partitions]
        seen[h] = set(pids)
        rows = []
        for pid in pids:
            p, ts = PROB[(h, pid)]
            rows.append({"prediction_id": forecasting.prediction_id(at, pid, model), "run_ts": at,
                         "partition_id": pid, "model": model, "window_end": at + window, "probability": p,
                         "probability_raw": p, "predicted_split_ts": T0 + ts * H if ts is not None else None})
        return pa.Table.from_pylist(rows)

    return predict


@pytest.fixture(scope="module")
def manual_scored(tmp_path_factory):
    from weaver.predict import backtest, forecasting

    lake = manual_split_lake(tmp_path_factory.mktemp("manual") / "lake")
    seen: dict[int, set] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(forecasting, "predict", _fake_predict(seen))
        r = backtest(forecast_settings(lake), start=T0 + 10 * H, end=T0 + 22 * H, every="4h", window="8h",
                     model="path", out_dir=tmp_path_factory.mktemp("report"), write_predictions=False)
    assert seen == ACTIVE  # the partitions the hand-set rows assume are the ones each run saw
    return lake, r


def test_a_manual_split_is_neither_a_hit_nor_a_miss(manual_scored):
    _, r = manual_scored
    s = r["scores"]["path"]
    # Scored: s@10 (0.9, split) TP, m@10 (0.8, none) FP, c@10 TN, s@14 (0.85, split) TP, c@14 TN,
    # s1@18, s2@18 TN, c@18 (0.95) FP. m@14 and m@18 (manual split in the window) are left out.
    assert s["rows"] == 8
    assert s["actual_splits"] == 2 and s["predicted_splits"] == 4 and s["true_positives"] == 2
    assert s["recall"] == 1.0 and s["precision"] == 0.5
    brier = (0.1 ** 2 + 0.8 ** 2 + 0.1 ** 2 + 0.15 ** 2 + 0 + 0 + 0 + 0.95 ** 2) / 8
    assert s["brier"] == pytest.approx(brier)
    # timing of the true positives: s@10 predicted 17 h (+1 h), s@14 16 h (0 h)
    assert s["median_timing_error_h"] == pytest.approx(0.5) and s["median_abs_timing_error_h"] == pytest.approx(0.5)
    assert r["censored"] == {"path": 0, "baseline_linear": 0, "baseline_near": 0}
    # m's windows at 14 h and 18 h, for the model and for each baseline
    assert r["excluded_manual"] == {"path": 2, "baseline_linear": 2, "baseline_near": 2}
    for b in ("baseline_linear", "baseline_near"):
        assert r["scores"][b]["rows"] == 8 and r["scores"][b]["actual_splits"] == 2


def test_manual_rows_are_not_written_and_the_split_is_listed_unscored(manual_scored):
    from weaver.predict import read_results

    lake, r = manual_scored
    rows = read_results(forecast_settings(lake), r["backtest_id"]).to_pylist()
    mine = {(round((x["run_ts"] - T0) / H), x["partition_id"]): x["actual_split"] for x in rows if x["model"] == "path"}
    assert mine == {(10, "s"): True, (10, "m"): False, (10, "c"): False, (14, "s"): True, (14, "c"): False,
                    (18, "s1"): False, (18, "s2"): False, (18, "c"): False}
    by_parent = {x["parent_id"]: x for x in r["splits"]}
    assert by_parent["s"]["reason"] == "size" and by_parent["s"]["scored"]
    assert by_parent["s"]["lead_time_h"] == pytest.approx(6.0)  # first confident run 10 h, split 16 h
    # m had p >= 0.75 at 14 h, but an operator's split is no hit: no lead time
    assert by_parent["m"]["reason"] == "manual" and not by_parent["m"]["scored"]
    assert by_parent["m"]["lead_time_h"] is None
    page = open(r["report"]["html"]).read()
    assert "manual split" in page


def test_the_clis_table_view_shows_the_manual_windows_left_out(manual_scored):
    """`weaver backtest` without --json: the table has a column per model for them (2 each, as above)."""
    from rich.console import Console

    from weaver.cli._predict import _scores

    _, r = manual_scored
    con = Console(width=250, record=True)
    con.print(_scores(r))
    text = con.export_text()
    assert "manual splits" in text
    for m in ("path", "baseline_linear", "baseline_near"):
        row = next(line for line in text.splitlines() if line.strip("│ ").startswith(m + " "))
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[0] == m and cells[-1] == "2" and cells[-2] == "0"  # manual splits, censored
