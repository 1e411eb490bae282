"""Crash injection over every writing command (issue 14): kills tried and survived, per command.

For each command of tests/crash.py's SCENARIOS (snapshot, predict, weave, restore-table, vacuum):
one uninterrupted run gives the reference; then for every named pause point (and, for
restore-table, kills 0.5 / 1.5 / 3 s into the Spark write) a fresh copy of the lake gets the
command killed with SIGKILL there, a reader checks what is visible (oracle fold / whole-or-nothing),
the command is rerun, and its result is compared with the reference. A kill "survived" when the
reader saw no partial version AND the rerun equals the uninterrupted run AND no local scratch
folder of the killed run is left (weaver.core.scratch; each kill gets its own TMPDIR).

    PYTHONPATH=$PWD .venv/bin/python bench/crash.py [command ...] [--max-points N] [--max-timed N]

Writes bench/results/crash.json (a correctness count, not a timing; elapsed is informative only);
commands run separately are merged into the file, each with the commit it ran on.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402
from tests import crash  # noqa: E402


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("commands", nargs="*")
    ap.add_argument("--max-points", type=int, default=None, help="named points per command (default all)")
    ap.add_argument("--max-timed", type=int, default=None, help="timed kills per command (default all)")
    ap.add_argument("--collect", nargs="+", default=None,
                    help="only summarise the outcome lines (JSON, one per kill) these run logs printed")
    args = ap.parse_args(argv)
    if args.collect:
        return collect(args.collect)
    names = args.commands or list(crash.SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="weaver-crash-"))
    t0 = time.perf_counter()
    per: dict[str, dict] = {}
    outcomes = []
    try:
        template = crash.base_lake(work / "template")
        for name in names:
            sc = crash.SCENARIOS[name]
            want = crash.reference(sc, template, work)
            tried = survived = 0
            points = sc.points[-args.max_points:] if args.max_points else sc.points
            timed = sc.timed if args.max_timed is None else sc.timed[1:1 + args.max_timed]
            for point in points:
                for delay in [0.0] + ([] if point not in points[:1] else timed):
                    o = crash.crash_once(sc, template, work, point, want, delay_s=delay)
                    print(json.dumps(o.__dict__), flush=True)
                    outcomes.append(o.__dict__)
                    if o.result != "killed":
                        continue  # the process finished before the kill: not a kill
                    tried += 1
                    survived += o.reader_ok and o.rerun_equal and o.scratch_clear
            per[name] = {"kills_tried": tried, "survived": survived, "points": points,
                         "timed_kills_s": timed, "git_commit": machine()["git_commit"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results" / "crash.json"
    import fcntl

    lock = open(out.with_suffix(".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # several runs (one per command) merge into one file
    if out.exists():  # merge commands measured in an earlier run
        old = json.loads(out.read_text())["figures"]
        for k, v in old.get("per_command", {}).items():
            per.setdefault(k, v)
        outcomes = [o for o in old.get("outcomes", []) if o["command"] not in names] + outcomes
    result = {
        "bench": "crash",
        "machine": machine("deltalake", "pyspark"),
        "date": datetime.now(timezone.utc).isoformat(),
        "params": {"commands": sorted(per), "lake": "tests.lakes.make_log(seed=3): 160 changes, 2 root partitions, 1 split"},
        "ratios": {f"{k}_survived_share": (v["survived"] / v["kills_tried"]) if v["kills_tried"] else None
                   for k, v in per.items()},
        "figures": {"per_command": per, "outcomes": outcomes,
                    "kills_tried": sum(v["kills_tried"] for v in per.values()),
                    "survived": sum(v["survived"] for v in per.values()),
                    "elapsed_s": round(time.perf_counter() - t0, 1)},
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    fcntl.flock(lock, fcntl.LOCK_UN)
    out.with_suffix(".lock").unlink(missing_ok=True)
    print(json.dumps(result["figures"]["per_command"], indent=2))
    return 0 if all(v["survived"] == v["kills_tried"] for v in per.values()) else 1


def collect(logs: list[str]) -> int:
    """Write crash.json from the outcome lines of runs that were stopped before they summarised
    (each line is one finished kill + rerun, printed as it completed)."""
    outcomes = []
    for log in logs:
        for line in Path(log).read_text().splitlines():
            line = line.strip()
            if line.startswith("{") and '"rerun_equal"' in line:
                outcomes.append(json.loads(line))
    per: dict[str, dict] = {}
    for o in outcomes:
        c = per.setdefault(o["command"], {"kills_tried": 0, "survived": 0, "points": []})
        c["points"].append(o["point"])
        if o["result"] == "killed":
            c["kills_tried"] += 1
            c["survived"] += bool(o["reader_ok"] and o["rerun_equal"] and o.get("scratch_clear", True))
    for name, c in per.items():
        c["points_not_run"] = [p for p in crash.SCENARIOS[name].points
                               if not any(q.split(":")[0].split("+")[0] == p for q in c["points"])]
    result = {"bench": "crash", "machine": machine("deltalake", "pyspark"), "date": datetime.now(timezone.utc).isoformat(),
              "params": {"commands": sorted(per), "collected_from_logs": True,
                         "lake": "tests.lakes.make_log(seed=3): 160 changes, 2 root partitions, 1 split"},
              "ratios": {f"{k}_survived_share": (v["survived"] / v["kills_tried"]) if v["kills_tried"] else None
                         for k, v in per.items()},
              "figures": {"per_command": per, "outcomes": outcomes,
                          "kills_tried": sum(v["kills_tried"] for v in per.values()),
                          "survived": sum(v["survived"] for v in per.values())}}
    (ROOT / "bench" / "results" / "crash.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(per, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
