"""The calibration fit leaves out windows holding an operator's (manual) split, as the backtest does.

Hand-built lake (tests/lakes.py `manual_split_lake`: s splits for size at 16 h, m is split by hand at
20 h, c never splits) and hand-made predictions (`manual_lake_history`: half-hourly runs 0-32 h,
8 h windows). Every count, label and map value below is worked out by hand from those rules.
"""

from __future__ import annotations

import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, forecast_settings, manual_lake_history, manual_split_lake, put_predictions

AT = T0 + 40 * H  # every window (run <= 32 h, + 8 h) has closed; the log reaches ~40 h


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = manual_split_lake(tmp_path_factory.mktemp("calman") / "lake")
    s = forecast_settings(root)
    rows = manual_lake_history()
    put_predictions(s, rows)
    return s, rows


def _hours(r) -> float:
    return (r["run_ts"] - T0) / H


def test_scored_history_leaves_the_manual_windows_out(lake):
    from weaver.predict import calibration as cal

    s, rows = lake
    # By hand: runs at 0, 0.5, ..., 32 h. Before 16 h three partitions (32 runs), in [16, 20) four
    # (8 runs), from 20 h five (25 runs): 96 + 32 + 125 = 253 rows.
    assert len(rows) == 253
    # m's window (r, r + 8] holds the manual split at 20 h for r in [12, 20): 16 runs, not scored.
    manual = {r["prediction_id"] for r in rows if r["partition_id"] == "m" and 12 <= _hours(r) < 20}
    # s's window holds the size split at 16 h for r in [8, 16): 16 runs, the only positives.
    positive = {r["prediction_id"] for r in rows if r["partition_id"] == "s" and 8 <= _hours(r) < 16}
    assert len(manual) == 16 and len(positive) == 16
    ids, p, y = cal.scored_history(s, "path", AT)
    assert ids == sorted(r["prediction_id"] for r in rows if r["prediction_id"] not in manual)
    assert len(ids) == 237
    assert y.tolist() == [float(i in positive) for i in ids]  # m before 12 h and after: negatives
    assert int(y.sum()) == 16
    assert sorted(set(p.tolist())) == [0.1, 0.9]  # no 0.5 row (each was a manual window) is left


def test_the_fitted_map_is_not_pulled_up_by_the_manual_windows(lake):
    from weaver.predict import calibration as cal

    s, _ = lake
    cm = cal.map_for_run(s, "path", AT, "isotonic", store=False)
    assert cm.method == "isotonic" and (cm.rows, cm.positives) == (237, 16)
    # Two blocks, Jeffreys' means: p = 0.1 -> 0 of 221 -> 0.5 / 222; p = 0.9 -> 16 of 16 -> 16.5 / 17.
    lo, hi = 0.5 / 222, 16.5 / 17
    assert cm.params["x"] == pytest.approx([0.0, 0.1, 0.9, 1.0])
    assert cm.params["y"] == pytest.approx([lo, lo, hi, hi])
    # A raw 0.5 lies halfway between the blocks. Scored as positives, the 16 manual windows (all at
    # raw 0.5) would form a block of 16 splits in 16 rows there and map 0.5 to 16.5 / 17 instead.
    assert float(cm.apply([0.5])[0]) == pytest.approx((lo + hi) / 2)
    assert float(cm.apply([0.5])[0]) < 0.5


def test_auto_holds_out_only_scored_rows(lake):
    from weaver.predict import calibration as cal

    s, _ = lake
    # `auto` holds out the rows whose windows closed in the last 24 h before 40 h: runs in (8, 32] h.
    # By hand: 253 rows minus runs <= 8 h (17 runs x 3 = 51) = 202, minus the 16 manual windows = 186.
    cm = cal.map_for_run(s, "path", AT, "auto", store=False)
    assert " chosen on the 186 rows " in cm.note, cm.note
