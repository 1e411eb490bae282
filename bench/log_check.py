"""The change-log check (DESIGN §4.5, `weaver.log.validate_segment`) against plain reads of the same log.

Every stage that writes from the change log checks the segment it depends on first: a restore or a
snapshot its tail, `metrics` / `forecast` the hour they fold, a `predict` or `backtest` without a
checkpoint the whole retained log. This measures that check on a simulated lake (``weaver simulate``,
``--partitions`` initial partitions over ``--days`` days at ``--rate`` writes per partition-hour,
values of the simulator's default size), over

* the whole log (what a first `predict` or a `backtest` checks), and
* its last hour (what each hourly `metrics` / `forecast` run checks),

each timed alternately with two references read through the same pyarrow dataset of the table's
files: the **narrow read** (`seq, ts, partition_id, key, op, value_bytes`: what the fold itself
reads) and the **full read** (every column: what a check of whole rows must decode at least).
Ratios are medians over ``--repeats`` runs. The check must count every change of the segment, and
the references must read as many rows. Memory: each of the three, and opening the lake alone (the
floor), once more in a fresh process that reports its own peak resident set, VmHWM (``peak_rss_mb``).

Run: ``.venv/bin/python bench/log_check.py [--quick]`` -> bench/results/log_check.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)

NARROW_READ = ["seq", "ts", "partition_id", "key", "op", "value_bytes"]


def _scan(ds, columns, expr) -> int:
    n = 0
    for b in ds.to_batches(columns=columns, filter=expr):
        n += b.num_rows
    return n


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import pyarrow.compute as pc
from weaver.core.settings import load_settings
from weaver.log import ChangeLog, Lineage, validate_segment
lake, after, upto, what = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = load_settings(lake=lake)
log = ChangeLog(s)
lineage = Lineage.load(s)
if what == "check":
    n = validate_segment(s, lineage, after, upto, log=log)
elif what == "open":
    n = upto - after
else:
    cols = None if what == "full" else sys.argv[6].split(",")
    n = sum(b.num_rows for b in log.seq_range(after, upto).to_batches(
        columns=cols, filter=(pc.field("seq") > after) & (pc.field("seq") <= upto)))
assert n == upto - after, (n, upto - after)
# This process's own high-water mark (VmHWM): rusage's ru_maxrss would also count the parent's
# resident set, which Linux carries into a child across fork and exec.
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_rss_mb(lake: str, after: int, upto: int, what: str) -> float:
    """Peak resident set (MB) of a fresh process that opens the lake and does `what` on (after, upto]:
    "check", "narrow" or "full" read, or only "open" (the floor: Python, the imports, the table)."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), lake, str(after), str(upto), what,
                          ",".join(NARROW_READ)], capture_output=True, text=True, check=True, timeout=3600)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def measure(settings, after: int, upto: int, repeats: int) -> dict:
    """The check of (after, upto] and the two reads of the same rows, alternating."""
    from weaver.log import ChangeLog, Lineage, validate_segment

    check_ms, narrow_ms, full_ms = [], [], []
    for _ in range(repeats):
        log = ChangeLog(settings)  # each run opens the table, as a stage does
        lineage = Lineage.load(settings)
        ms, n = _timed(lambda: validate_segment(settings, lineage, after, upto, log=log))
        assert n == upto - after, f"the check counted {n} changes, the segment holds {upto - after}"
        check_ms.append(ms)
        expr = (pc.field("seq") > after) & (pc.field("seq") <= upto)
        ds = log.seq_range(after, upto)
        ms, n = _timed(lambda: _scan(ds, NARROW_READ, expr))
        assert n == upto - after
        narrow_ms.append(ms)
        ms, n = _timed(lambda: _scan(ds, None, expr))
        assert n == upto - after
        full_ms.append(ms)
    c, nr, fr = (statistics.median(x) for x in (check_ms, narrow_ms, full_ms))
    rss = {what: peak_rss_mb(settings.lake, after, upto, what) for what in ("open", "check", "narrow", "full")}
    return {"changes": upto - after, "peak_rss_mb": rss,
            "check_vs_full_read_peak_rss": round(rss["check"] / rss["full"], 2),
            "check_ms": round(c, 1), "narrow_read_ms": round(nr, 1),
            "full_read_ms": round(fr, 1), "check_runs_ms": [round(x, 1) for x in check_ms],
            "narrow_read_runs_ms": [round(x, 1) for x in narrow_ms], "full_read_runs_ms": [round(x, 1) for x in full_ms],
            "check_vs_narrow_read": round(c / nr, 2), "check_vs_full_read": round(c / fr, 2)}


def run(args) -> dict:
    from weaver.core.settings import load_settings
    from weaver.log import ChangeLog
    from weaver.simulate import SimConfig
    from weaver.simulate.simulator import simulate

    tmp = Path(tempfile.mkdtemp(prefix="weaver-bench-logcheck-"))
    try:
        lake = str(tmp / "lake")
        t0 = time.perf_counter()
        sim = simulate(lake, SimConfig(partitions=args.partitions, days=args.days, base_rate=args.rate))
        build_s = time.perf_counter() - t0
        settings = load_settings(lake=lake)
        log = ChangeLog(settings)
        end = log.seqs_at([datetime(2100, 1, 1, tzinfo=timezone.utc)])[0]
        last = log.seq_at(end)
        hour = log.seq_at(end - timedelta(hours=1))
        figures = {"build_s": round(build_s, 1), "changes": sim.changes, "partitions": sim.partitions,
                   "splits": sim.splits, "whole_log": measure(settings, 0, last, args.repeats),
                   "last_hour": measure(settings, hour, last, args.repeats * 3)}
        for k in ("whole_log", "last_hour"):
            f = figures[k]
            print(f"{k:>9}: {f['changes']:>10,} changes  check {f['check_ms']:9.1f} ms  narrow read "
                  f"{f['narrow_read_ms']:8.1f} ms  full read {f['full_read_ms']:8.1f} ms  "
                  f"check/narrow {f['check_vs_narrow_read']:6.2f}  check/full {f['check_vs_full_read']:5.2f}  "
                  f"peak RSS MB {f['peak_rss_mb']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = {f"{k}_check_vs_{r}": figures[k][f"check_vs_{r}"] for k in ("whole_log", "last_hour")
              for r in ("narrow_read", "full_read", "full_read_peak_rss")}
    return {"bench": "log_check", "machine": _common.machine("pyarrow", "deltalake"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params": {"partitions": args.partitions, "days": args.days, "rate": args.rate, "repeats": args.repeats,
                       "quick": args.quick},
            "ratios": ratios, "figures": figures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=250)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--rate", type=float, default=1000.0, help="writes per hour per initial partition at the start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small smoke run; does not overwrite the results file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "log_check.json"))
    args = ap.parse_args()
    if args.quick:
        args.partitions, args.days, args.rate, args.repeats = 8, 1, 200.0, 1
    _common.save(run(args), args.out, quick=args.quick)


if __name__ == "__main__":
    main()
