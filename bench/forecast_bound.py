"""How low can the split Brier score go? An oracle that knows the simulator's hidden state.

`bench/forecast_quality.py` scores models that see only a lake's history. This script scores, on
the *same* grid rows (same lake config, shapes, seeds, run instants, partitions, outcomes), the
probability an oracle assigns that knows everything the generator knows at the run instant:
every live key and its value size, each partition's hidden growth factor and base rate, and the
shape's whole schedule (the bursts' start hours and key positions, the hour the shrink's deletes
begin, the hot spot's track, the last day's fixed burst). Only the generator's future randomness
is unknown to it (the Poisson write counts, op kinds, value sizes, Zipf key picks): per active
partition it replays the simulator's own per-hour step (`weaver.simulate.simulator._pick`, the
data manager's split rule: size first, then writes of the hour / 3600 against the write
threshold) `--paths` times from a copy of the state, with fresh random numbers, for the 24 h
window, and its probability is the share of replays in which the partition splits.

Why it is a bound: the Brier score is minimised by the conditional probability of the event given
what the forecaster knows, and knowing more can only lower that minimum (E[(P(Y|G) - Y)^2] <=
E[(P(Y|F) - Y)^2] for F inside G). Every history-only model - any model `predict` could run - knows
less than this oracle, so its expected Brier score on these rows cannot be below the oracle's
(up to sampling noise: the score is reported raw and with the Monte-Carlo term
mean(p(1 - p)) / (paths - 1) taken off, which is what a finite number of replays adds).

The replay simulates the partition alone: the other partitions touch it only through the random
numbers they consume and the last-day burst (which lands on whichever partition holds the top of
the key space - the replayed partition knows whether that is itself). A replayed partition that
splits stops (its children are other rows).

Run: ``.venv/bin/python bench/forecast_bound.py`` -> bench/results/forecast_bound.json
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from weaver.simulate import simulator as sim  # noqa: E402

FULL_SHAPES = ["steady", "bursty", "diurnal", "shrink", "drift"]
LAKE = dict(base_rate=60.0, size_threshold_bytes=600_000, write_threshold_per_s=0.12)  # = forecast_quality.LAKE


def _init(cfg: sim.SimConfig):
    """The simulator's state at t = start, exactly as `simulator.simulate` builds it."""
    rng = np.random.default_rng(cfg.seed)
    span = sim.KEY_SPACE // cfg.partitions
    parts: dict = {}
    counter = [0]

    def new_id() -> str:
        pid = f"p{counter[0]:04d}"
        counter[0] += 1
        return pid

    for i in range(cfg.partitions):
        lo, hi = i * span, (sim.KEY_SPACE if i == cfg.partitions - 1 else (i + 1) * span)
        pid = new_id()
        parts[pid] = sim._Part(pid, lo, hi, "" if i == 0 else sim.key_name(lo),
                               None if i == cfg.partitions - 1 else sim.key_name(hi), None, 0, cfg.start,
                               cfg.base_rate, float(rng.uniform(*cfg.daily_growth)))
    burst_hours = set(range((cfg.days - 1) * 24 + 9, (cfg.days - 1) * 24 + 12)) if cfg.days >= 2 else set()
    shape = sim._Shape(cfg)
    if cfg.shape == "steady":
        parts["p0000"].update_heavy = True
        parts["p0000"].rate *= 5.0
    return rng, parts, shape, burst_hours, new_id


def replay(cfg: sim.SimConfig, p, shape, burst_hours: set, h0: int, hours: int, rng) -> tuple[int | None, str | None]:
    """One replay of partition `p` (mutated: pass a copy) from hour `h0` for `hours` hours:
    (hours after h0 at whose end it splits, reason), or (None, None). The simulator's step, for one partition."""
    top = p.hi == sim.KEY_SPACE  # the last-day burst hits the partition holding the top of the key space
    for h in range(h0, h0 + hours):
        shape.start_hour(h, {p.pid: p})
        burst = cfg.burst and h in burst_hours and cfg.shape in ("default", "diurnal") and top
        day = h / 24.0
        cycle = 1.0 + shape.seasonality * np.sin(2 * np.pi * ((h % 24) - 6) / 24.0)
        lam = p.rate * (shape.growth(p, day) if shape.custom else p.growth ** day) * cycle
        hot = burst or p.pid in shape.bursting
        if burst:
            lam *= 6.0
        lam *= shape.multiplier(p, h)
        n = int(rng.poisson(max(lam, 0.0)))
        kinds = rng.random(n)
        mix = shape.mix(p, h)
        writes = [sim._pick(p, rng, float(kinds[j]), mix, hot)[0] for j in range(n)]
        if len(p.live) < 4:
            continue
        if p.size > cfg.size_threshold_bytes:
            if sim._size_median(p) is not None:
                return h - h0 + 1, "size"
        elif n / 3600.0 > cfg.write_threshold_per_s and sim._write_median(p, writes) is not None:
            return h - h0 + 1, "throughput"
    return None, None


def lake_rows(shape_name: str, seed: int, partitions: int, days: int, every_h: int, paths: int) -> dict:
    """Oracle rows of one lake: every partition active at each grid run (hours 24, 24 + every, ... < days*24 - 24)."""
    t0 = time.perf_counter()
    cfg = sim.SimConfig(seed=seed, partitions=partitions, days=days, shape=shape_name, **LAKE)
    rng, parts, shape, burst_hours, new_id = _init(cfg)
    cols = {k: [] for k in ("seq", "ts", "partition_id", "key", "op", "value", "value_bytes")}
    acc = {"ts": [], "partition_id": [], "key": []}
    split_rows: list = []
    grid = set(range(24, days * 24 - 24, every_h))
    pending = []  # (run hour, pid, p, p_size, p_throughput)
    for h in sim._hours(cfg, rng, parts, shape, burst_hours, cols, acc, split_rows, new_id, [0]):
        for v in (*cols.values(), *acc.values()):
            v.clear()
        run_h = h + 1  # state after hour h = the state at the run instant start + (h + 1) hours
        if run_h not in grid:
            continue
        for pid in sorted(parts):
            p = parts[pid]
            if p.retired_seq is not None:
                continue
            n_size = n_thr = 0
            for k in range(paths):
                r = np.random.default_rng([seed, sim.SHAPES.index(shape_name), run_h, int(pid[1:]), k])
                _, why = replay(cfg, copy.deepcopy(p), copy.deepcopy(shape), burst_hours, run_h, 24, r)
                n_size += why == "size"
                n_thr += why == "throughput"
            pending.append((run_h, pid, n_size / paths, n_thr / paths))
    first = {}
    for s in sorted(split_rows, key=lambda s: s["split_ts"]):
        first.setdefault(s["parent_id"], s)
    rows = []
    for run_h, pid, ps, pt in pending:
        s = first.get(pid)
        hrs = (s["split_ts"] - cfg.start).total_seconds() / 3600.0 if s else None
        hit = s is not None and run_h < hrs <= run_h + 24
        rows.append({"shape": shape_name, "seed": seed, "run_h": run_h, "partition_id": pid, "y": int(hit),
                     "kind": s["reason"] if hit else None, "p": ps + pt, "p_size": ps, "p_throughput": pt})
    return {"shape": shape_name, "seed": seed, "rows": rows, "seconds": time.perf_counter() - t0}


def scores(rows: list[dict], paths: int, key: str = "p") -> dict:
    if not rows:
        return {}
    p = np.array([r[key] for r in rows], float)
    y = np.array([r["y"] for r in rows], float)
    brier = float(np.mean((p - y) ** 2))
    mc = float(np.mean(p * (1 - p))) / (paths - 1)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = float(sum(abs(p[bins == b].mean() - y[bins == b].mean()) * np.sum(bins == b) for b in range(10)
                    if np.any(bins == b)) / len(p))
    return {"rows": len(rows), "positives": int(y.sum()), "brier": brier, "brier_mc_corrected": brier - mc,
            "ece": ece}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(FULL_SHAPES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quality", default=str(ROOT / "bench" / "results" / "forecast_quality.json"),
                    help="the committed model scores to compare with (same setup)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecast_bound.json"))
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    info = _common.machine("numpy")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
        futs = [pool.submit(lake_rows, sh, sd, args.partitions, args.days, args.every, args.paths)
                for sh in shapes for sd in seeds]
        lakes = [f.result() for f in futs]
    rows = [r for lk in lakes for r in lk["rows"]]
    out = {"all": scores(rows, args.paths),
           "size": scores([r for r in rows if r["y"] == 0 or r["kind"] == "size"], args.paths, "p_size"),
           "throughput": scores([r for r in rows if r["y"] == 0 or r["kind"] == "throughput"], args.paths,
                                "p_throughput"),
           "per_shape": {sh: scores([r for r in rows if r["shape"] == sh], args.paths) for sh in shapes}}
    cmp = {}
    q = Path(args.quality)
    if q.exists():
        fq = json.loads(q.read_text())
        same = all(fq["setup"][k] == v for k, v in (("shapes", shapes), ("seeds", seeds), ("partitions", args.partitions),
                                                    ("days", args.days), ("grid_every_h", args.every)))
        if same:
            best = fq["goals_grid"]["best_naive_brier"]
            cmp = {"quality_commit": fq["machine"].get("git_commit"), "best_naive_brier": best,
                   "goal_brier": 0.5 * best, "oracle_ratio_to_best_naive": out["all"]["brier_mc_corrected"] / best,
                   "model_brier": {v: fq["scores_grid"][v]["all"]["brier"] for v in ("path", "path+prior")
                                   if v in fq["scores_grid"]},
                   "grid_rows_model": fq["scores_grid"].get("path", {}).get("all", {}).get("rows")}
    result = {"benchmark": "forecast_bound", "machine": info, "wall_s": round(time.perf_counter() - t0, 1),
              "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
              "setup": {"shapes": shapes, "seeds": seeds, "partitions": args.partitions, "days": args.days,
                        "grid_every_h": args.every, "window_h": 24, "paths": args.paths, "lake": LAKE},
              "oracle": out, "vs_models": cmp,
              "lakes": [{"shape": lk["shape"], "seed": lk["seed"], "rows": len(lk["rows"]),
                         "seconds": round(lk["seconds"], 1)} for lk in lakes]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("oracle", "vs_models", "wall_s")}, indent=1))


if __name__ == "__main__":
    main()
