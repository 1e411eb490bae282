"""Maintenance (issue 14): snapshot vacuum, woven vacuum, compaction and checkpoints change no
restore or recovery result inside the recovery window. Oracle: the brute-force fold of the change
log (tests/oracle.py), checked before and after one `maintain` pass.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.lakes import H, T0, Lake, add_weave, make_log, prediction, put_predictions, write_lake
from tests.oracle import fold, rows_to_dict

RANGES = {"p0": ("", "k20"), "p1": ("k20", None), "p2": ("", "k10"), "p3": ("k10", "k20")}


def test_one_maintenance_pass_changes_no_restore_or_recovery_result(tmp_path):
    from deltalake import DeltaTable

    from weaver.core import storage
    from weaver.core.settings import load_settings
    from weaver.maintain import maintain
    from weaver.pitr import restore_partition
    from weaver.recover import recover

    data = make_log(seed=11, n=240)
    ts = {c["seq"]: c["ts"] for c in data["changes"]}
    root = write_lake(tmp_path / "lake", data, [40, 100, 160, 220])
    now = ts[240] + timedelta(seconds=1)
    s = load_settings(env={}, lake=str(root)).with_overrides(recovery_window=now - ts[170],
                                                             woven_retention=timedelta(hours=2))
    lake = Lake(s, data["changes"], dict(RANGES))
    live = add_weave(lake, "p1", "k30", 0.9, [ts[q] for q in (180, 200, 230)], prediction_id="pred-live")
    old = add_weave(lake, "p1", "k25", 0.9, [ts[q] for q in (20, 30)], prediction_id="pred-old", status="refuted")
    for i in range(6):  # six small MERGE commits: six files to compact
        put_predictions(s, [{**prediction("p1", run_ts=T0 + i * H, split_key="k30"), "threshold": 0.75}])

    instants = [ts[q] for q in (170, 200, 235, 240)]
    asked = [(pid, at) for pid in ("p1", "p2", "p3", live["left"], live["right"]) for at in instants
             if not (pid.startswith("p1~") and at < live["split_ts"])]

    def answers() -> dict:
        out = {}
        for pid, at in asked:
            r = recover(s, pid, at)
            out[(pid, at)] = (r.path, r.source, rows_to_dict(r.table))
            if "~" not in pid:
                assert rows_to_dict(restore_partition(s, pid, at).table) == out[(pid, at)][2]
        return out

    before = answers()
    for (pid, at), (_, _, rows) in before.items():
        assert rows == fold(data["changes"], key_lo=lake.ranges[pid][0], key_hi=lake.ranges[pid][1], at=at), (pid, at)
    assert before[("p1", ts[235])][0] == "woven"  # the live weave serves, before and after

    # Two stored calibration maps: a run 6 h before `now` (past the 5 h retention) and one 1 h before.
    import numpy as np

    from weaver.predict import calibration as cal

    s = s.with_overrides(calibration_retention=timedelta(hours=5))
    p, y = np.repeat([0.2, 0.8], 100), np.r_[np.zeros(80), np.ones(20), np.zeros(20), np.ones(80)]
    maps = [cal.fit(p, y, "isotonic", model="path", cutoff=(now - timedelta(hours=h)).isoformat()) for h in (6, 1)]
    for m in maps:
        cal.save(s, m)

    r = maintain(s, now=now)
    assert r["calibration"]["maps_deleted"] == 1 and r["calibration"]["maps_kept"] == 1, r["calibration"]
    assert [f.stem for f in (Path(root) / "_weaver" / "calibration" / "path").iterdir()] == [maps[1].version]
    assert r["snapshots"]["snapshots_expired"] >= 1 and r["snapshots"]["log_rows_deleted"] > 0, r["snapshots"]
    assert r["woven"]["expired_sequences"] == 1 and r["woven"]["rows_deleted"] > 0, r["woven"]
    comp = r["compacted"]["predictions"]
    assert comp["files_before"] >= 6 and comp["files_after"] == 1, comp
    pred_log = Path(storage.uri_for(s, storage.PREDICTIONS)) / "_delta_log"
    assert list(pred_log.glob("*.checkpoint.parquet")), "no checkpoint written"
    assert len(DeltaTable(storage.uri_for(s, storage.PREDICTIONS)).to_pyarrow_table()) == 6  # no row lost

    def same(after: dict) -> None:
        # Same rows everywhere; the same path and source, except where the expired weave served
        # (expired weaves are never used: those answers move to the standard path, rows unchanged).
        assert {k: v[2] for k, v in after.items()} == {k: v[2] for k, v in before.items()}
        for k, (path, source, _) in before.items():
            if not source.startswith(old["weave_id"]):
                assert after[k][:2] == (path, source), k
            else:
                assert after[k][0] == "standard", k

    same(answers())
    woven = DeltaTable(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)).to_pyarrow_table()
    assert old["weave_id"] not in set(woven.column("weave_id").to_pylist())

    again = maintain(s, now=now)  # idempotent: nothing more to expire
    assert again["snapshots"]["snapshots_expired"] == 0 and again["woven"]["rows_deleted"] == 0
    same(answers())
