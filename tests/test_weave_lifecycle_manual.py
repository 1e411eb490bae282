"""The woven lifecycle with an operator's (manual) split: it confirms the sequence (the partition
really split in the window), but the timing error - a model-quality figure - leaves it out.

Hand-built lake (tests/lakes.py `manual_split_lake`: s splits for size at 16 h at 'h', m is split by
hand at 20 h at 'p', c never splits; the log reaches ~40 h) and hand-built catalog rows.
"""

from __future__ import annotations

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, manual_split_lake, weave_settings
from tests.test_weave_lifecycle import _weave


def test_a_manual_split_confirms_but_is_not_timed(tmp_path):
    from weaver.core.ids import UNUSABLE
    from weaver.weave import read_woven_catalog, reconcile, write_woven_catalog

    settings = weave_settings(manual_split_lake(tmp_path / "lake"), woven_retention="1d")
    seqs = {
        # predicted at 15 h, window [10, 18] h: the size split at 16 h confirms it, 1 h late
        "size": _weave("size", "s", T0 + 15 * H, T0 + 10 * H, T0 + 18 * H, split_key="h"),
        # predicted at 18 h, window [14, 22] h: the operator's split at 20 h lies inside it
        "manual": _weave("manual", "m", T0 + 18 * H, T0 + 14 * H, T0 + 22 * H, split_key="p"),
        # c never splits: refuted once its window closes (the log reaches past 18 h)
        "none": _weave("none", "c", T0 + 15 * H, T0 + 10 * H, T0 + 18 * H, split_key="x"),
    }
    write_woven_catalog(settings, list(seqs.values()))
    r = reconcile(settings, at=T0 + 30 * H)
    assert (r["confirmed"], r["refuted"], r["expired"]) == (2, 1, 0)
    rows = {x["prediction_id"]: x for x in read_woven_catalog(settings).to_pylist()}
    assert {k: v["status"] for k, v in rows.items()} == {"size": "confirmed", "manual": "confirmed", "none": "refuted"}
    # The manual split is recorded as what happened, and the sequence stays servable.
    assert (rows["manual"]["actual_split_key"], rows["manual"]["actual_split_ts"]) == ("p", T0 + 20 * H)
    assert rows["manual"]["status"] not in UNUSABLE
    # Timing: only the size split's, 16 h - 15 h; the manual one (20 h - 18 h) is counted, not timed.
    assert r["timing_error_s"] == {seqs["size"]["weave_id"]: 3600.0}
    assert r["timing_excluded_manual"] == 1
    # A later call, the sequences still confirmed, reports the same (timing is recomputed per call).
    again = reconcile(settings, at=T0 + 31 * H)
    assert again["timing_error_s"] == {seqs["size"]["weave_id"]: 3600.0} and again["timing_excluded_manual"] == 1
