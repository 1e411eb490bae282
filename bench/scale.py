"""Peak memory of each stage on a large simulated lake (issue 11, point 4: every stage streams).

Setup: one lake from ``weaver simulate --partitions P --days D`` (default 200 x 6: about 11 M
changes, the size at which ``weaver snapshot`` used to die with ``ArrowInvalid: offset overflow``).
Each stage runs as its own ``weaver`` CLI process, the way an operator runs it, at the lake's end:

* ``simulate`` (skipped with ``--reuse`` when the lake already exists: then it is not measured);
* ``snapshot --at END`` - first with the code of ``--baseline`` (a git commit, extracted to a
  temporary folder; default: the commit before the streaming change-log validation) on a copy-free
  fresh catalog, then with the current code; the baseline's snapshots are deleted in between so
  both do the same work;
* ``predict --at END`` (default model), ``weave --at END``, ``recover`` of the first partition
  alive at END (point in time, into a Parquet file).

Per stage: wall seconds, exit code, ``peak_rss_mb`` = the largest resident set of any one process
of the stage (``wait4`` rusage, like ``/usr/bin/time -v``; Spark's JVM is a child of the CLI
process) and ``peak_tree_rss_mb`` = the largest sum of resident sets of the stage's whole process
tree (CLI + JVM), sampled every 0.2 s with psutil. A stage that fails records its last stderr line.

Run: ``.venv/bin/python bench/scale.py [--partitions 200 --days 6] [--lake /tmp/x --reuse] [--keep]``
-> bench/results/scale.json (the lake is deleted afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import _common  # noqa: E402  (bench/_common.py, beside this script)

RESULTS = ROOT / "bench" / "results" / "scale.json"
BASELINE = "fc94668"  # main before the change log was validated window by window


def run_stage(name: str, args: list[str], code_root: Path, timeout_s: float) -> dict:
    """Run `weaver <args>` with `code_root` first on PYTHONPATH; time it and track its memory."""
    env = dict(os.environ, PYTHONPATH=str(code_root), COLUMNS="200")
    cmd = [sys.executable, "-c", args[1], *args[2:]] if args[0] == "-c" else \
        [sys.executable, "-c", "from weaver.cli import main; main()", *args]
    t0 = time.perf_counter()
    # cwd outside any checkout: `python -c` puts the cwd first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tempfile.gettempdir())
    peak_tree, stop = [0], threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [p, *p.children(recursive=True)]
                peak_tree[0] = max(peak_tree[0], sum(_rss(q) for q in procs))
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_lines: list[str] = []
    err_lines: list[str] = []
    readers = [threading.Thread(target=lambda s=s, acc=acc: acc.extend(s), daemon=True)
               for s, acc in ((proc.stdout, out_lines), (proc.stderr, err_lines))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout_s
    status, usage = None, None
    while status is None:
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status, usage = st, ru
        elif time.monotonic() > deadline:
            os.killpg(proc.pid, 9)  # the stage and its JVM
            _, status, usage = os.wait4(proc.pid, 0)
        else:
            time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for r in readers:
        r.join(timeout=10)
    children = psutil.Process().children(recursive=True)  # Spark's JVM is reaped by the CLI; nothing left
    elapsed = time.perf_counter() - t0
    rec = {"stage": name, "args": args, "exit_code": proc.returncode, "elapsed_s": round(elapsed, 1),
           "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "peak_tree_rss_mb": round(peak_tree[0] / 2**20, 1)}
    if proc.returncode != 0:
        rec["error"] = (err_lines[-1].strip() if err_lines else "") or "".join(out_lines)[-400:]
    else:
        try:
            rec["output"] = json.loads("".join(out_lines))
        except ValueError:
            rec["output"] = "".join(out_lines)[-400:]
    if children:
        rec["stray_processes"] = len(children)
    print(f"{name}: rc={proc.returncode} {rec['elapsed_s']} s, peak RSS {rec['peak_rss_mb']} MB "
          f"(tree {rec['peak_tree_rss_mb']} MB)", flush=True)
    return rec


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def extract(commit: str, dest: Path) -> Path:
    """`weaver/` of `commit` (git archive) under `dest`: the baseline code, run by PYTHONPATH."""
    blob = subprocess.run(["git", "archive", "--format=tar", commit, "weaver"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def lake_facts(lake: str) -> dict:
    """Size of the lake: changes, partitions, bytes on disk, the end instant and a partition alive at it."""
    from weaver.core import storage
    from weaver.core.settings import load_settings
    from weaver.log import Lineage, resolve_seq

    s = load_settings(lake=lake)
    policy = json.loads((Path(lake) / "_weaver" / "lake.json").read_text())
    end = datetime.fromisoformat(policy["end"])
    seq = resolve_seq(s, end)
    alive = Lineage.load(s).active(seq)
    dt = storage.open_table(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    import pyarrow as pa

    adds = pa.table(dt.get_add_actions(flatten=True))
    return {"end": end.isoformat(), "changes": seq, "partitions_alive_at_end": len(alive),
            "changelog_files": adds.num_rows, "changelog_bytes_on_disk": int(sum(adds.column("size_bytes").to_pylist())),
            "lake_bytes_on_disk": sum(f.stat().st_size for f in Path(lake).rglob("*") if f.is_file()),
            "recover_partition": alive[0].partition_id}


def drop_snapshots(lake: str) -> None:
    for name in ("snapshots", "snapshot_catalog"):
        shutil.rmtree(Path(lake) / name, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=200)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--lake", default=None, help="lake folder (default: a new temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="use the lake at --lake as is (simulate not measured)")
    ap.add_argument("--keep", action="store_true", help="keep the lake afterwards")
    ap.add_argument("--baseline", default=BASELINE, help="git commit whose `weaver snapshot` is measured first ('' skips)")
    ap.add_argument("--stages", default="snapshot,predict,weave,recover")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="weaver-scale-"))
    lake = args.lake or str(work / "lake")
    stages: list[dict] = []
    started = datetime.now(timezone.utc)
    info = _common.machine("pyarrow", "deltalake", "pyspark")
    try:
        if not args.reuse:
            stages.append(run_stage("simulate", ["simulate", "--partitions", str(args.partitions), "--days",
                                                 str(args.days), "--lake", lake, "--json"], ROOT, args.timeout))
        facts = lake_facts(lake)
        print(json.dumps(facts), flush=True)
        end, todo = facts["end"], args.stages.split(",")
        if "validate" in todo:
            # What `weaver snapshot` (and its DAG's validate task) runs before Spark: the change-log
            # segment check that overflowed; now first, then the baseline's (it may fail).
            code = ("import json, sys; from weaver.core.settings import load_settings; "
                    "from weaver.pitr import validate_for_snapshot; "
                    "r = validate_for_snapshot(load_settings(lake=sys.argv[1]), sys.argv[2]); "
                    "print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in r.items()}))")
            stages.append(run_stage("validate", ["-c", code, lake, end], ROOT, args.timeout))
            if args.baseline:
                base = extract(args.baseline, work / "baseline")
                rec = run_stage("validate_baseline", ["-c", code, lake, end], base, args.timeout)
                rec["code"] = args.baseline
                stages.append(rec)
        if "snapshot" in todo:
            drop_snapshots(lake)
            if args.baseline:
                base = work / "baseline" if (work / "baseline").exists() else extract(args.baseline, work / "baseline")
                rec = run_stage("snapshot_baseline", ["snapshot", "--at", end, "--lake", lake, "--json"], base,
                                args.timeout)
                rec["code"] = args.baseline
                stages.append(rec)
                drop_snapshots(lake)
            stages.append(run_stage("snapshot", ["snapshot", "--at", end, "--lake", lake, "--json"], ROOT,
                                    args.timeout))
        if "predict" in todo:
            stages.append(run_stage("predict", ["predict", "--at", end, "--lake", lake, "--json"], ROOT, args.timeout))
        if "weave" in todo:
            stages.append(run_stage("weave", ["weave", "--at", end, "--lake", lake, "--json"], ROOT, args.timeout))
        if "recover" in todo:
            stages.append(run_stage("recover", ["recover", "--partition", facts["recover_partition"], "--at", end,
                                                "--out", str(work / "recovered.parquet"), "--lake", lake, "--json"],
                                    ROOT, args.timeout))
    finally:
        if not args.keep:
            shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    for rec in stages:  # outputs can be long (per-partition lists): keep the counts
        out = rec.get("output")
        if isinstance(out, dict):
            rec["output"] = {k: (len(v) if isinstance(v, (list, dict)) else v) for k, v in out.items()}
    by = {r["stage"]: r for r in stages}
    ratios = {}
    if "validate_baseline" in by and by.get("validate", {}).get("exit_code") == 0:
        ratios["validate_peak_rss_baseline_vs_now"] = round(
            by["validate_baseline"]["peak_rss_mb"] / max(1.0, by["validate"]["peak_rss_mb"]), 2)
        ratios["validate_elapsed_baseline_vs_now"] = round(
            by["validate_baseline"]["elapsed_s"] / max(0.1, by["validate"]["elapsed_s"]), 2)
    if "snapshot_baseline" in by and "snapshot" in by and by["snapshot"]["exit_code"] == 0:
        ratios["snapshot_peak_tree_rss_baseline_vs_now"] = round(
            by["snapshot_baseline"]["peak_tree_rss_mb"] / max(1.0, by["snapshot"]["peak_tree_rss_mb"]), 2)
    result = {"bench": "scale", "machine": info, "date": started.isoformat(timespec="seconds"),
              "setup": {"partitions": args.partitions, "days": args.days, "reused_lake": args.reuse, **facts},
              "stages": stages, "ratios": ratios}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
