"""The simulator writes a contract-conforming lake whose splits really crossed a threshold."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow.compute as pc
import pytest

from tests.oracle import fold
from weaver.core import storage
from weaver.core.errors import InvalidParameterError
from weaver.log import Lineage, validate_changes
from weaver.simulate import SimConfig, simulate


def _read(lake, name):
    return storage.read(storage.table_uri(str(lake), name), name)


def test_lake_follows_the_contract_and_is_deterministic(small_lake, tmp_path):
    changes = _read(small_lake, storage.CHANGELOG)
    parts = _read(small_lake, storage.PARTITIONS)
    assert validate_changes(changes, Lineage(parts), expected_first_seq=1) == changes.num_rows
    # Same seed, same rows.
    again = tmp_path / "again"
    simulate(str(again), SimConfig(seed=11, partitions=3, days=2, base_rate=60.0,
                                   size_threshold_bytes=400_000, write_threshold_per_s=0.5))
    assert _read(again, storage.CHANGELOG).equals(changes)
    assert _read(again, storage.SPLITS).equals(_read(small_lake, storage.SPLITS))


def test_rerun_adds_no_delta_version(lake_copy):
    uri = storage.table_uri(str(lake_copy), storage.CHANGELOG)
    before = storage.version_of(uri)
    simulate(str(lake_copy), SimConfig(seed=11, partitions=3, days=2, base_rate=60.0,
                                       size_threshold_bytes=400_000, write_threshold_per_s=0.5))
    assert storage.version_of(uri) == before


def test_every_split_crossed_its_threshold_and_lineage_is_consistent(small_lake):
    changes = _read(small_lake, storage.CHANGELOG).to_pylist()
    lin = Lineage(_read(small_lake, storage.PARTITIONS))
    splits = _read(small_lake, storage.SPLITS).to_pylist()
    assert splits, "the small lake should hold real splits"
    policy = SimConfig(size_threshold_bytes=400_000, write_threshold_per_s=0.5)
    for s in splits:
        parent, left, right = lin.get(s["parent_id"]), lin.get(s["left_id"]), lin.get(s["right_id"])
        assert parent.retired_seq == s["split_seq"] == left.created_seq == right.created_seq
        assert (left.key_lo, left.key_hi, right.key_lo, right.key_hi) == \
            (parent.key_lo, s["split_key"], s["split_key"], parent.key_hi)
        state = fold(changes, key_lo=parent.key_lo, key_hi=parent.key_hi, upto_seq=s["split_seq"])
        size = sum(len(v) + 9 for v in state.values())
        hour = [c for c in changes if c["partition_id"] == parent.partition_id
                and s["split_ts"] - timedelta(hours=1) <= c["ts"] < s["split_ts"]]
        if s["reason"] == "size":
            assert size > policy.size_threshold_bytes
        else:
            assert len(hour) / 3600.0 > policy.write_threshold_per_s
        # Both children start non-empty.
        assert any(k < s["split_key"] for k in state) and any(k >= s["split_key"] for k in state)


def test_default_workload_has_size_and_throughput_splits(tmp_path):
    r = simulate(str(tmp_path / "lake"), SimConfig())
    splits = _read(tmp_path / "lake", storage.SPLITS)
    reasons = set(splits.column("reason").to_pylist())
    assert r.splits >= 3 and reasons == {"size", "throughput"}
    ts = _read(tmp_path / "lake", storage.CHANGELOG).column("ts")
    assert pc.min(ts).as_py() >= SimConfig().start and pc.max(ts).as_py() < SimConfig().end


# --- workload shapes (issue 15) ------------------------------------------------------------------
SHAPE_KW = dict(partitions=2, days=3, base_rate=60.0, size_threshold_bytes=600_000, write_threshold_per_s=0.12)


def _check_splits(lake, cfg: SimConfig) -> list[dict]:
    """Every recorded split really crossed its threshold, judged from the change log (the oracle fold)."""
    changes = _read(lake, storage.CHANGELOG).to_pylist()
    lin = Lineage(_read(lake, storage.PARTITIONS))
    assert validate_changes(_read(lake, storage.CHANGELOG), lin, expected_first_seq=1) == len(changes)
    splits = _read(lake, storage.SPLITS).to_pylist()
    for s in splits:
        parent = lin.get(s["parent_id"])
        state = fold(changes, key_lo=parent.key_lo, key_hi=parent.key_hi, upto_seq=s["split_seq"])
        hour = [c for c in changes if c["partition_id"] == parent.partition_id
                and s["split_ts"] - timedelta(hours=1) <= c["ts"] < s["split_ts"]]
        if s["reason"] == "size":
            assert sum(len(v) + 9 for v in state.values()) > cfg.size_threshold_bytes
        else:
            assert len(hour) / 3600.0 > cfg.write_threshold_per_s
    return splits


@pytest.mark.slow
def test_shapes_split_for_real_with_both_kinds_and_are_deterministic(tmp_path):
    kinds: dict[str, set] = {}
    for shape in ("steady", "bursty", "drift"):
        cfg = SimConfig(seed=1, shape=shape, **SHAPE_KW)
        simulate(str(tmp_path / shape), cfg)
        kinds[shape] = {s["reason"] for s in _check_splits(tmp_path / shape, cfg)}
    assert set().union(*kinds.values()) == {"size", "throughput"}
    # steady: the update-heavy range splits on write rate
    assert "throughput" in kinds["steady"]
    # same seed and shape, same rows; another shape, other rows
    simulate(str(tmp_path / "again"), SimConfig(seed=1, shape="bursty", **SHAPE_KW))
    assert _read(tmp_path / "again", storage.CHANGELOG).equals(_read(tmp_path / "bursty", storage.CHANGELOG))
    assert not _read(tmp_path / "steady", storage.CHANGELOG).equals(_read(tmp_path / "bursty", storage.CHANGELOG))


def test_shrink_deletes_outnumber_inserts_late_and_diurnal_cycles(tmp_path):
    cfg = SimConfig(seed=2, shape="shrink", **SHAPE_KW)
    simulate(str(tmp_path / "s"), cfg)
    changes = _read(tmp_path / "s", storage.CHANGELOG).to_pylist()
    turn = cfg.start + timedelta(hours=cfg.days * 24 * 0.6)
    late = [c for c in changes if c["ts"] >= turn + timedelta(hours=1)]
    early = [c for c in changes if c["ts"] < turn]
    assert sum(c["op"] == "DELETE" for c in late) > 0.4 * len(late)
    assert sum(c["op"] == "DELETE" for c in early) < 0.1 * len(early)
    # diurnal: the busiest hour of day carries several times the writes of the quietest
    simulate(str(tmp_path / "d"), SimConfig(seed=2, shape="diurnal", **SHAPE_KW))
    hours = np.bincount([c["ts"].hour for c in _read(tmp_path / "d", storage.CHANGELOG).to_pylist()], minlength=24)
    assert hours.max() > 5 * hours.min()


def test_unknown_shape_is_refused():
    with pytest.raises(InvalidParameterError):
        SimConfig(shape="zigzag")
