"""The `predictions` expectation suite: passes on good rows, names each broken rule on bad ones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from weaver.core import storage
from weaver.log import Lineage
from weaver.core.errors import ExpectationFailedError

T = datetime(2026, 3, 2, tzinfo=timezone.utc)
H = timedelta(hours=1)


def lineage() -> Lineage:
    rows = [
        {"partition_id": "p", "key_lo": "", "key_hi": "m", "parent_id": None, "created_seq": 0,
         "created_ts": T - 48 * H, "retired_seq": None, "retired_ts": None},
        {"partition_id": "q", "key_lo": "m", "key_hi": None, "parent_id": None, "created_seq": 0,
         "created_ts": T - 48 * H, "retired_seq": 9, "retired_ts": T + 5 * H},  # retires later: active at T
        {"partition_id": "old", "key_lo": "m", "key_hi": None, "parent_id": None, "created_seq": 0,
         "created_ts": T - 48 * H, "retired_seq": 3, "retired_ts": T - 2 * H},
    ]
    return Lineage(pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PARTITIONS]))


def good_rows() -> list[dict]:
    from weaver.core.ids import prediction_id

    base = {"run_ts": T, "model": "prophet", "window_start": T, "window_end": T + 24 * H, "threshold": 0.75}
    return [
        {**base, "prediction_id": prediction_id(T, "p", "prophet"), "partition_id": "p", "probability": 0.9,
         "reason": "size", "predicted_split_ts": T + 6 * H, "split_ts_p10": T + 4 * H, "split_ts_p90": T + 9 * H,
         "split_key": "f", "skip_reason": None},
        {**base, "prediction_id": prediction_id(T, "q", "prophet"), "partition_id": "q", "probability": 0.0,
         "reason": None, "predicted_split_ts": None, "split_ts_p10": None, "split_ts_p90": None,
         "split_key": None, "skip_reason": "too little history: 3 complete buckets before the run, 12 needed"},
    ]


def check(rows: list[dict], **kw) -> dict:
    from weaver.checks import check_predictions

    return check_predictions(pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS]), lineage(), **kw)


def test_good_rows_pass():
    assert check(good_rows())["success"]


def _broken(field_changes: dict, row: int = 0) -> list[dict]:
    rows = good_rows()
    rows[row].update(field_changes)
    return rows


@pytest.mark.parametrize("rows,rule", [
    (_broken({"probability": 1.2}), "probability"),
    (_broken({"split_ts_p10": T + 7 * H}), "quantiles_in_window"),  # p10 after the median
    (_broken({"split_ts_p90": T + 30 * H}), "quantiles_in_window"),  # p90 beyond the window
    (_broken({"split_key": "x"}), "split_key_in_range"),  # p holds keys < 'm'
    (_broken({"split_key": ""}), "split_key_in_range"),  # equal to key_lo: empty left child
    (_broken({"probability": 0.3}, row=1), "skip_has_zero_probability"),
    (_broken({"reason": "gravity"}), "reason"),
    (good_rows()[:1], "one_row_per_active_partition"),  # q is active at T but has no row
    (good_rows() + [{**good_rows()[0], "prediction_id": "x" * 16}], "one_row_per_active_partition"),  # twice
    (good_rows() + [{**good_rows()[1], "prediction_id": "y" * 16, "partition_id": "old"}],
     "one_row_per_active_partition"),  # retired before the run
])
def test_each_rule_fails_by_name(rows, rule):
    with pytest.raises(ExpectationFailedError, match=rule):
        check(rows)


def test_empty_run_fails_when_partitions_are_active():
    from weaver.checks import prediction_check_frame
    from weaver.checks import validate

    empty = storage.empty(storage.PREDICTIONS)
    with pytest.raises(ExpectationFailedError, match="one_row_per_active_partition"):
        validate("predictions", prediction_check_frame(empty, lineage(), at=T))
