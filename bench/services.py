"""Start-up and shut-down time of the whole deployment as local processes (`weaver services up|down`).

Each round starts docker-compose.yml's services with `weaver services up --free-ports` into a fresh
state folder (Postgres initdb included, so the first start of a new checkout is what is timed),
from the command's start until every healthcheck passes, and then `weaver services down`. Per
service: seconds from the start of `up` until its healthcheck first passed. One figure per round;
the machine's load at the start is recorded with it (other work on a 2-core machine slows the start).

Run: ``.venv/bin/python bench/services.py [--rounds 2]`` -> bench/results/services.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402

WEAVER = str(Path(sys.executable).parent / "weaver")


def one_round() -> dict:
    root = Path(tempfile.mkdtemp(prefix="weaver-bench-services-"))
    root.chmod(0o711)
    state = root / "state"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    load = round(os.getloadavg()[0], 2)
    t0 = time.time()
    try:
        up = subprocess.run([WEAVER, "services", "up", "--free-ports", "--state-dir", str(state), "--json"],
                            capture_output=True, text=True, timeout=900, env=env)
        up_s = time.time() - t0
        if up.returncode != 0:
            raise SystemExit(f"weaver services up failed: {up.stderr[-2000:]}")
        st = json.loads((state / "state.json").read_text())
        healthy = {n: round(e["healthy_at"] - st["started_at"], 1) for n, e in st["services"].items()
                   if e.get("healthy_at")}
    finally:
        t1 = time.time()
        down = subprocess.run([WEAVER, "services", "down", "--state-dir", str(state)], capture_output=True,
                              text=True, timeout=300, env=env)
        down_s = time.time() - t1
        shutil.rmtree(root, ignore_errors=True)
    return {"up_s": round(up_s, 1), "down_s": round(down_s, 1), "down_ok": down.returncode == 0,
            "healthy_after_s": healthy, "load_avg_1m_at_start": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = {"bench": "services", "machine": machine("airflow", "pyspark"), "commit": commit,
           "date": datetime.now(timezone.utc).isoformat(), "params": {"rounds": args.rounds, "ports": "free"},
           "figures": {"rounds": rounds, "up_s_min": min(r["up_s"] for r in rounds),
                       "down_s_max": max(r["down_s"] for r in rounds)}}
    path = ROOT / "bench" / "results" / "services.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["figures"], indent=2))


if __name__ == "__main__":
    main()
