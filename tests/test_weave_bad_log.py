"""A weaving run checks the change log it replays before it writes (DESIGN §4.5): a change filed
under a partition that did not own its key is a KeyOutOfRangeError and nothing is written - not
staged rows that the woven check later quarantines. Both engines, the Arrow fold and Spark.

Oracle: the hand-kept change rows (which change is misrouted is chosen by hand) and the lake's
files and their bytes before and after the refused run.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, write_lake


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def _misrouted(where: str) -> tuple[dict, dict]:
    """make_log(seed=3) with one change of p1 between 02:00 and 03:00 given a key of p0's range,
    still filed under p1 (`where` = "inside": inside the weave of p0's range; "outside": a key of
    p1's own range filed under p0, which no weave of p0 replays). Returns (log, the bad change)."""
    data = make_log(seed=3)
    if where == "inside":
        bad = next(c for c in data["changes"] if c["partition_id"] == "p1" and T0 + 2 * H < c["ts"] < T0 + 3 * H)
        bad["key"] = "k05"
    else:
        bad = next(c for c in data["changes"] if c["partition_id"] == "p0" and T0 + 2 * H < c["ts"] < T0 + 3 * H)
        bad["key"] = "k25"
    return data, bad


def _refused_before_writing(tmp_path, spark, engine: str, where: str) -> None:
    from weaver.core.errors import KeyOutOfRangeError
    from weaver.weave import weave

    data, bad = _misrouted(where)
    lake = Path(write_lake(tmp_path / "lake", data))
    settings = weave_settings(lake, weave_engine=engine)
    put_predictions(settings, [prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))])
    before = tree(lake)
    with pytest.raises(KeyOutOfRangeError, match=f"seq {bad['seq']}"):
        weave(spark, settings, at=T0 + 5 * H, stage=True)
    assert tree(lake) == before and not Path(settings.woven).exists()


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_arrow_weave_refuses_a_misrouted_change_before_writing(tmp_path, where):
    _refused_before_writing(tmp_path, None, "arrow", where)


@pytest.mark.spark
def test_spark_weave_refuses_a_misrouted_change_before_writing(spark, tmp_path):
    # `spark` a parameter of the test: tests/conftest.py keeps such modules on the session's one worker.
    _refused_before_writing(tmp_path, spark, "spark", "inside")


def test_a_clean_log_still_weaves(tmp_path):
    """The premise: the same lake with the change where it belongs weaves the oracle's rows."""
    from weaver.weave import weave

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data), weave_engine="arrow")
    p = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    put_predictions(settings, [p])
    weave(None, settings, at=T0 + 5 * H)
    assert assert_matches_oracle(settings, data, [p], at=T0 + 5 * H) > 0
