"""The peer baseline of bench/peer.py is itself correct: the mirror table kept by one delta-rs MERGE
per commit equals the brute-force fold at every commit's boundary, by VERSION AS OF and by
TIMESTAMP AS OF, and answers an instant between commits with the previous boundary's state.

Hand-built change log (no simulator, no Spark); expectations come from tests/oracle.py's fold.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from tests.oracle import fold

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("bench_peer", ROOT / "bench" / "peer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _log(rows: list[tuple]) -> tuple[list[dict], pa.Table]:
    """(seconds after T0, key, op, value) -> oracle dicts and the Arrow change log."""
    changes = [{"seq": i + 1, "ts": T0 + timedelta(seconds=sec), "key": k, "op": op,
                "value": v.encode() if v is not None else None} for i, (sec, k, op, v) in enumerate(rows)]
    t = pa.table({"seq": pa.array([c["seq"] for c in changes], pa.int64()),
                  "ts": pa.array([c["ts"] for c in changes], pa.timestamp("us", tz="UTC")),
                  "key": [c["key"] for c in changes], "op": [c["op"] for c in changes],
                  "value": pa.array([c["value"] for c in changes], pa.binary())})
    return changes, t


# Before T0+60s: the initial load. Then commits at 120 s (a key PUT twice and deleted inside one
# commit; an update), 180 s (a change exactly on the boundary belongs to it), none at 240 s
# (an empty minute), 300 s (re-insert of a deleted key, delete of a never-seen key).
ROWS = [
    (10, "a", "PUT", "a1"), (20, "b", "PUT", "b1"), (30, "c", "PUT", "c1"), (60, "d", "PUT", "d1"),
    (61, "a", "PUT", "a2"), (70, "e", "PUT", "e1"), (80, "e", "PUT", "e2"), (90, "e", "DELETE", None),
    (100, "b", "PUT", "b2"),
    (150, "c", "DELETE", None), (170, "f", "PUT", "f1"), (180, "a", "PUT", "a3"),
    (250, "c", "PUT", "c2"), (260, "zz", "DELETE", None), (299, "b", "DELETE", None),
]


def test_mirror_equals_the_fold_at_every_commit(peer, tmp_path):
    changes, log = _log(ROWS)
    start = T0 + timedelta(seconds=60)
    before = log.filter(pa.compute.less_equal(log.column("ts"), pa.scalar(start, pa.timestamp("us", tz="UTC"))))
    after = log.slice(before.num_rows)
    uri = str(tmp_path / "mirror")
    versions = peer.build_mirror(uri, before, after, start, commit_s=60)

    bounds = [v["watermark"] for v in versions]
    assert bounds == [start] + [T0 + timedelta(seconds=s) for s in (120, 180, 300)]
    assert [v["version"] for v in versions] == [0, 1, 2, 3]
    assert fold(changes, at=start) == {"a": b"a1", "b": b"b1", "c": b"c1", "d": b"d1"}
    for v in versions:
        want = fold(changes, at=v["watermark"])
        assert peer.as_dict(peer.mirror_version(uri, v["version"])) == want, v
        got, ver = peer.mirror_at(uri, v["watermark"])
        assert ver == v["version"] and peer.as_dict(got) == want, v
    assert fold(changes, at=T0 + timedelta(seconds=300)) == {"a": b"a3", "c": b"c2", "d": b"d1", "f": b"f1"}

    # Between commits (and across the empty minute) the mirror answers with its last boundary.
    for sec, ver in ((119, 0), (150, 1), (239, 2), (299, 2)):
        got, v = peer.mirror_at(uri, T0 + timedelta(seconds=sec))
        assert v == ver, (sec, v)
        assert peer.as_dict(got) == fold(changes, at=bounds[ver])
    assert fold(changes, at=T0 + timedelta(seconds=299)) != fold(changes, at=bounds[2])  # it is stale there

    # A key range read equals the fold restricted to that range.
    got, _ = peer.mirror_at(uri, T0 + timedelta(seconds=300), "b", "e")
    assert peer.as_dict(got) == fold(changes, at=T0 + timedelta(seconds=300), key_lo="b", key_hi="e") == {
        "c": b"c2", "d": b"d1"}


def test_commit_groups_close_on_the_right(peer):
    _, log = _log([(0, "a", "PUT", "x"), (1, "a", "PUT", "y"), (60, "b", "PUT", "z"), (60.5, "c", "PUT", "w")])
    groups = peer.commit_groups(log, 60)
    assert [(b - T0).total_seconds() for b, _ in groups] == [0, 60, 120]
    assert [g.column("seq").to_pylist() for _, g in groups] == [[1], [2, 3], [4]]
    assert peer.last_per_key(groups[1][1]).column("key").to_pylist() == ["a", "b"]


def test_every_version_survives_a_checkpoint(peer, tmp_path):
    """Commits are dated in the past (at their boundary); past a checkpoint (every 100 commits) delta-rs
    would delete commit files older than the log retention, ending time travel to them, unless the
    mirror keeps every version (its table configuration)."""
    rows = [(60 * i + 30, f"k{i % 7}", "DELETE" if i % 11 == 10 else "PUT", None if i % 11 == 10 else f"v{i}")
            for i in range(105)]
    changes, log = _log(rows)
    uri = str(tmp_path / "mirror")
    versions = peer.build_mirror(uri, log.slice(0, 0), log, T0)
    assert len(versions) == 106 and list((Path(uri) / "_delta_log").glob("*.checkpoint.parquet"))
    for v in (versions[1], versions[57], versions[-1]):
        got, ver = peer.mirror_at(uri, v["watermark"])
        assert ver == v["version"] and peer.as_dict(got) == fold(changes, at=v["watermark"]), v
