"""Advice scoring and the what-if report's reliability rows leave out windows holding an operator's
(manual) split, as the backtest does.

Hand-built lake (tests/lakes.py `manual_split_lake`: s splits for size at 16 h, m is split by hand at
20 h, c never splits) and hand-made predictions; every label below is worked out by hand.
"""

from __future__ import annotations

from datetime import timedelta

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, forecast_settings, manual_lake_history, manual_split_lake, prediction, put_predictions


def test_a_wait_in_a_manual_split_window_is_not_scored(tmp_path):
    from weaver.whatif import advise, read_advice, score_advice

    s = forecast_settings(manual_split_lake(tmp_path / "lake"))
    runs = (4, 10, 14)
    preds = []
    for h in runs:
        for pid in ("s", "m", "c"):
            p = prediction(pid, run_ts=T0 + h * H, split_ts=T0 + (h + 1) * H,
                           window=timedelta(hours=8), probability=0.1)
            p["reason"], p["split_key"] = None, None
            preds.append(p)
    put_predictions(s, preds)
    for h in runs:  # probability 0.1 < 0.75 everywhere: every advice is a wait
        assert {a["action"] for a in advise(s, at=T0 + h * H).to_pylist()} == {"wait"}
    score_advice(s, at=T0 + 40 * H)  # every window (run + 8 h <= 22 h) has closed
    got = {(round((r["run_ts"] - T0) / H), r["partition_id"]): (r["backtest"], r["actual_split"])
           for r in read_advice(s).to_pylist()}
    # Windows (4, 12], (10, 18], (14, 22]: s's size split at 16 h lies in the last two; m's manual
    # split at 20 h only in (14, 22] - the partition did split (actual_split), but the wait is
    # neither right nor wrong about an operator's decision.
    assert got == {
        (4, "s"): ("no_split", False), (4, "m"): ("no_split", False), (4, "c"): ("no_split", False),
        (10, "s"): ("split_happened", True), (10, "m"): ("no_split", False), (10, "c"): ("no_split", False),
        (14, "s"): ("split_happened", True), (14, "m"): ("manual_split", True), (14, "c"): ("no_split", False),
    }
    # Scored once: nothing is due any more (a manual window is not left open to be rescored forever).
    assert score_advice(s, at=T0 + 41 * H) == {"scored": 0}


def test_reliability_rows_leave_the_manual_windows_out(tmp_path):
    from weaver.whatif.report import reliability_rows

    s = forecast_settings(manual_split_lake(tmp_path / "lake"))
    rows = manual_lake_history()  # half-hourly runs 0-32 h, 8 h windows: 253 rows
    put_predictions(s, rows)
    got = reliability_rows(s, T0 + 40 * H)
    # By hand: m's window holds the manual split for runs in [12, 20) h (16 rows, probability 0.5):
    # left out. s's window holds the size split for runs in [8, 16) h (16 rows, 0.9): the positives.
    # Everything else (221 rows, 0.1) is a negative.
    assert len(got) == 237
    assert sorted(got) == sorted([(0.1, False)] * 221 + [(0.9, True)] * 16)
