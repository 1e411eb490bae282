"""The scoring behind every committed forecast-quality figure (bench/forecast_quality.py, issue 15),
checked on hand-built rows against values worked out by hand: Brier, log loss, ECE, the best recall
at precision >= 0.8 and its threshold, the timing of its true positives, the per-kind scores, the
kind split of a recalibrated probability, and that a run's calibration map reads only windows
closed by the run."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import forecast_quality as fq  # noqa: E402

H_US = 3_600_000_000
P = [0.9, 0.8, 0.7, 0.6, 0.4, 0.2, 0.1, 0.05]
Y = [1, 1, 0, 1, 0, 1, 0, 0]


def _rows() -> list[dict]:
    rows = []
    for i, (p, y) in enumerate(zip(P, Y)):
        rows.append({"p": p, "y": y, "kind": "size" if y else None, "p_size": p, "p_throughput": 0.0,
                     "split_ts": 100 * H_US if y else None, "pred_ts": None})
    rows[0]["pred_ts"] = 101 * H_US  # 1 h late
    rows[1]["pred_ts"] = 97 * H_US  # 3 h early
    rows[3]["pred_ts"] = 100 * H_US  # on time, but below the chosen threshold
    return rows


def test_scores_match_hand_computed_values():
    s = fq.scores(_rows())
    assert s["rows"] == 8 and s["positives"] == 4
    # squared errors 0.01 0.04 0.49 0.16 0.16 0.64 0.01 0.0025
    assert s["brier"] == pytest.approx(1.5125 / 8)
    logs = [math.log(0.9), math.log(0.8), math.log(0.3), math.log(0.6), math.log(0.6), math.log(0.2),
            math.log(0.9), math.log(0.95)]
    assert s["log_loss"] == pytest.approx(-sum(logs) / 8)
    # every row in its own tenth: ECE is the mean |y - p|
    assert s["ece"] == pytest.approx(2.75 / 8)
    # precision by threshold: 0.05 4/8, 0.1 4/7, 0.2 4/6, 0.4 3/5, 0.6 3/4, 0.7 2/3, 0.8 2/2, 0.9 1/1;
    # the best recall with precision >= 0.8 is at 0.8 (2 of 4), not 0.9 (1 of 4)
    assert s["recall_at_p80"] == pytest.approx(0.5)
    assert s["threshold_at_p80"] == pytest.approx(0.8)
    # its true positives: +1 h and -3 h (the 0.6 row is below the threshold)
    assert s["timed_true_positives"] == 2
    assert s["median_abs_timing_h"] == pytest.approx(2.0)
    assert s["median_signed_timing_h"] == pytest.approx(-1.0)
    assert s["share_abs_timing_le_1h"] == pytest.approx(0.5)


def test_no_threshold_reaches_precision_08():
    rows = [{"p": p, "y": y, "pred_ts": None, "split_ts": None} for p, y in ((0.9, 0), (0.5, 1), (0.3, 0))]
    s = fq.scores(rows)
    assert s["recall_at_p80"] == 0.0 and s["threshold_at_p80"] is None and s["median_abs_timing_h"] is None


def test_per_kind_scores_use_the_kind_probability_and_its_positives_only():
    rows = _rows()
    # the 0.8 positive becomes a throughput split whose paths cross the write threshold first
    rows[1].update(kind="throughput", p_size=0.1, p_throughput=0.7)
    rows = [{**r, "model": "m"} for r in rows]
    table = fq.summarise(rows, ["m"])["m"]
    size, thr = table["size"], table["throughput"]
    # size: the 4 negatives and the 3 size positives, scored with p_size
    assert (size["rows"], size["positives"]) == (7, 3)
    assert size["brier"] == pytest.approx((0.49 + 0.16 + 0.01 + 0.0025 + 0.01 + 0.16 + 0.64) / 7)
    # throughput: the 4 negatives (p_throughput 0) and the throughput positive at 0.7
    assert (thr["rows"], thr["positives"]) == (5, 1)
    assert thr["brier"] == pytest.approx(0.09 / 5)
    assert thr["recall_at_p80"] == pytest.approx(1.0) and thr["threshold_at_p80"] == pytest.approx(0.7)


def test_recalibrated_splits_the_new_probability_by_the_raw_kind_shares():
    r = {"p": 0.5, "p_size": 0.4, "p_throughput": 0.1, "model": "path"}
    c = fq.recalibrated(r, "path+x", 0.8)
    assert c["model"] == "path+x" and c["p"] == 0.8
    assert c["p_size"] == pytest.approx(0.64) and c["p_throughput"] == pytest.approx(0.16)
    z = fq.recalibrated({"p": 0.0, "p_size": 0.0, "p_throughput": 0.0}, "v", 0.1)
    assert z["p_size"] == pytest.approx(0.1) and z["p_throughput"] == 0.0


def test_calibrated_rows_read_only_windows_closed_by_the_run():
    from weaver.predict import calibration

    def row(run_h: int, y: int) -> dict:
        return {"model": "path", "run_ts": run_h * H_US, "window_end": (run_h + 10) * H_US, "p": 0.5, "y": y,
                "p_size": 0.5, "p_throughput": 0.0, "skipped": False}

    # 300 rows at hour 0 (windows close at hour 10): 290 splits, 10 not - one isotonic block
    rows = [row(0, 1) for _ in range(290)] + [row(0, 0) for _ in range(10)] + [row(5, 0), row(10, 0)]
    out = {r["run_ts"] // H_US: r["p"] for r in fq.calibrate_rows(rows, "path", "isotonic")}
    # the shipped prior map at 0.5, interpolated by hand between its knots (0.449, 0.3832) and
    # (0.5231, 0.3942) of calibration.PRIORS["path"]
    prior_at_half = 0.3832 + (0.5 - 0.449) / (0.5231 - 0.449) * (0.3942 - 0.3832)
    assert calibration.PRIORS["path"]["method"] == "isotonic"
    # hours 0 and 5: no window closed yet (hour 0's close at 10) -> the shipped prior map
    assert out[0] == pytest.approx(prior_at_half)
    assert out[5] == pytest.approx(prior_at_half)
    # hour 10: the 300 rows are closed -> the lake's map, Jeffreys' mean of the block
    assert out[10] == pytest.approx(290.5 / 301)
