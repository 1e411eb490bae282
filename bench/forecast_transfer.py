"""Does a richer recalibration transfer to a workload it has not seen? (issue 15, docs/prediction.md §8)

The shipped prior map (`weaver.predict.calibration.PRIORS`) is a function of the raw probability
alone. A map that also reads the partition's history (`forecast_quality.FEATURES`: distance to the
threshold, recent growth and write rates, the paths' timing and spread, ...) could sharpen the
probabilities - or learn the simulator's workload shapes. This benchmark measures which, on the
*tuning* lakes only (seeds 100 and up by default; the committed evaluation's seeds 0-4 are never
read): the path model's hourly rows of 5 shapes x 5 seeds (`forecast_quality.evaluate_lake`, the
same lakes and runs as there), and four recalibrations of them, each fitted out of fold:

* ``raw`` - the model's probability; ``prior`` - the shipped map (fitted on these very lakes, so
  in-sample: a reference, not a held-out score);
* ``isotonic`` - a 1-D isotonic map of the raw probability (what ``--fit-prior`` fits);
* ``stacked`` - L2-regularised logistic regression on the standardised features (the raw
  probability's logit among them).

Two ways to hold out: **leave one seed out** (fit on the other 4 seeds of every shape: a new lake
of a workload family the map has seen) and **leave one shape out** (fit on the other 4 shapes: a
workload family it has never seen - what a user's lake is to a map shipped with the product).
Skipped rows keep probability 0 in every variant, as in `predict`.

Second part, **the lake's own history** (``--own-days``, default 8: lakes twice as long, seeds
100-102): what a map fitted on the lake's *own* closed windows gives once there is history, run by
run as `predict` would (no look-ahead), against the raw model and the shipped prior:
``own_isotonic`` is the product's ``isotonic`` method (the lake's map from `calibration.MIN_ROWS`
scored rows, the prior before), ``own_auto`` the default ``auto`` (`calibration.choose`: of prior,
identity and that map, the best on the last 24 h of closed windows), ``own_stacked`` the stacked map above fitted on the lake's own rows
from ``OWN_STACK_MIN`` rows with ``OWN_STACK_MIN_CLASS`` of each outcome (the prior before). Scored on
the runs from day 2 on, pooled and per shape.

Run: ``.venv/bin/python bench/forecast_transfer.py`` -> bench/results/forecast_transfer.json
(~7 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import forecast_quality as fq  # noqa: E402
from weaver.predict import calibration  # noqa: E402
from weaver.predict import models as _models  # noqa: E402

VARIANTS = ("raw", "prior", "isotonic", "stacked")
OWN_VARIANTS = ("raw", "prior", "own_isotonic", "own_auto", "own_stacked")
OWN_STACK_MIN = 200  # the lake's scored rows before its own stacked map is fitted (14 inputs)
OWN_STACK_MIN_CLASS = 20
H_US = 3_600_000_000


def stacked(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, ridge: float) -> np.ndarray:
    """Logistic regression on standardised features (weights from `calibration.logistic`, Newton's
    method with an L2 penalty `ridge`); probabilities of the test rows."""
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    w = calibration.logistic((x_train - mu) / sd, y_train, ridge=ridge)
    z = ((x_test - mu) / sd) @ w[:-1] + w[-1]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def out_of_fold(rows: list[dict], groups: np.ndarray, ridge: float) -> dict[str, np.ndarray]:
    """Per variant, each row's probability from a map fitted without the row's group."""
    p = np.array([r["p"] for r in rows], float)
    y = np.array([r["y"] for r in rows], float)
    fitted = np.array([r["x"] is not None for r in rows])
    x = np.array([r["x"] if r["x"] is not None else [0.0] * len(fq.FEATURES) for r in rows], float)
    out = {"raw": p.copy(), "prior": np.where(fitted, calibration.prior("path").apply(p), 0.0)}
    out["isotonic"], out["stacked"] = np.zeros(len(p)), np.zeros(len(p))
    for g in np.unique(groups):
        tr, te = (groups != g) & fitted, (groups == g) & fitted
        out["isotonic"][te] = calibration.fit(p[tr], y[tr], "isotonic").apply(p[te])
        out["stacked"][te] = stacked(x[tr], y[tr], x[te], ridge)
    return out


def lake_own(rows: list[dict], ridge: float, from_h: int = 48) -> dict[str, list[dict]]:
    """One lake's path rows from hour `from_h` on, re-scored run by run with maps fitted on its own
    closed windows: ``prior``, ``own_isotonic`` and ``own_auto`` are `forecast_quality.calibrate_rows` (what
    `predict` applies per run), ``own_stacked`` the stacked map on the same closed windows."""
    start = min(r["run_ts"] for r in rows) - 12 * H_US  # forecast_quality's first run is at hour 12

    def kept(rs: list[dict]) -> list[dict]:
        return [r for r in rs if r["scored"] and r["run_ts"] - start >= from_h * H_US]

    out = {"raw": kept(rows), "prior": kept(fq.calibrate_rows(rows, "path", "prior")),
           "own_isotonic": kept(fq.calibrate_rows(rows, "path", "isotonic")),
           "own_auto": kept(fq.calibrate_rows(rows, "path", "auto")), "own_stacked": []}
    prior = calibration.prior("path")
    for t in sorted({r["run_ts"] for r in out["raw"]}):
        cur = [r for r in out["raw"] if r["run_ts"] == t]
        hist = [h for h in rows if h["window_end"] <= t and h["x"] is not None]
        hy = np.array([h["y"] for h in hist], float)
        p = np.array([r["p"] for r in cur])
        if len(hist) >= OWN_STACK_MIN and min(hy.sum(), len(hy) - hy.sum()) >= OWN_STACK_MIN_CLASS:
            x = np.array([r["x"] if r["x"] is not None else [0.0] * len(fq.FEATURES) for r in cur], float)
            st = stacked(np.array([h["x"] for h in hist], float), hy, x, ridge)
        else:
            st = prior.apply(p)
        out["own_stacked"] += [{**r, "p": float(a) if r["x"] is not None else 0.0} for r, a in zip(cur, st)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-start", type=int, default=100, help="tuning seeds (the evaluation's 0-4 stay unread)")
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--own-days", type=int, default=8, help="length of the lakes of the lake-own part (0: skip it)")
    ap.add_argument("--own-seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecast_transfer.json"))
    args = ap.parse_args()
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    info = _common.machine("numpy")
    t0 = time.perf_counter()
    _models.preload()
    with tempfile.TemporaryDirectory(prefix="weaver-bench-ft-") as tmp:
        os.makedirs(f"{tmp}/own")
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
            futs = [pool.submit(fq.evaluate_lake, sh, sd, ["path"], 3, 4, 12, tmp, ("path",), True)
                    for sh in fq.FULL_SHAPES for sd in seeds]
            own_seeds = seeds[:args.own_seeds] if args.own_days else []
            own_futs = [pool.submit(fq.evaluate_lake, sh, sd, ["path"], 3, args.own_days, 12, f"{tmp}/own", ("path",),
                                    True) for sh in fq.FULL_SHAPES for sd in own_seeds]
            lakes = [f.result() for f in futs]
            own_lakes = [f.result() for f in own_futs]
    rows = [r for lk in lakes for r in lk["rows"] if r["model"] == "path" and r["scored"]]
    result = {"benchmark": "forecast_transfer", "machine": info,
              "setup": {"shapes": fq.FULL_SHAPES, "seeds": seeds, "lake": fq.LAKE, "partitions": 3, "days": 4,
                        "runs": "hourly from hour 24 (every scored path row of forecast_quality's setup)",
                        "features": list(fq.FEATURES), "ridge": args.ridge, "rows": len(rows),
                        "positives": int(sum(r["y"] for r in rows))},
              "held_out": {}}
    for scheme, key in (("seed", "seed"), ("shape", "shape")):
        groups = np.array([r[key] for r in rows])
        probs = out_of_fold(rows, groups, args.ridge)
        res = {}
        for v in VARIANTS:
            mine = [{**r, "p": float(q)} for r, q in zip(rows, probs[v])]
            res[v] = {"all": fq.scores(mine),
                      "per_group_brier": {str(g): float(np.mean([(m["p"] - m["y"]) ** 2 for m in mine if m[key] == g]))
                                          for g in np.unique(groups)}}
        result["held_out"][scheme] = res
    if own_lakes:
        per_lake = [lake_own([r for r in lk["rows"] if r["model"] == "path"], args.ridge) for lk in own_lakes]
        own = {}
        for v in OWN_VARIANTS:
            mine = [r for d in per_lake for r in d[v]]
            own[v] = {"all": fq.scores(mine), "per_shape_brier": {
                sh: float(np.mean([(r["p"] - r["y"]) ** 2 for r in mine if r["shape"] == sh])) for sh in fq.FULL_SHAPES},
                "per_lake_brier": {f"{d[v][0]['shape']}-{d[v][0]['seed']}": float(np.mean([(r["p"] - r["y"]) ** 2
                                                                                       for r in d[v]]))
                                   for d in per_lake if d[v]}}
        result["lake_own"] = {"days": args.own_days, "seeds": own_seeds, "scored_from_hour": 48,
                              "stack_min_rows": OWN_STACK_MIN, "stack_min_class": OWN_STACK_MIN_CLASS,
                              "isotonic_min_rows": calibration.MIN_ROWS, "variants": own}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for scheme, res in result["held_out"].items():
        print(f"\nleave one {scheme} out ({len(rows)} rows)\nvariant    brier   logloss  ece    R@P.8  per held-out {scheme}")
        for v, r in res.items():
            a = r["all"]
            per = " ".join(f"{g}:{b:.3f}" for g, b in r["per_group_brier"].items())
            print(f"{v:<9}  {a['brier']:.4f}  {a['log_loss']:.4f}  {a['ece']:.3f}  {a['recall_at_p80']:.3f}  {per}")
    if "lake_own" in result:
        print(f"\nlake-own maps on {args.own_days}-day lakes (runs from hour 48)\nvariant       brier   ece    R@P.8  per shape")
        for v, r in result["lake_own"]["variants"].items():
            a = r["all"]
            per = " ".join(f"{g}:{b:.3f}" for g, b in r["per_shape_brier"].items())
            print(f"{v:<12}  {a['brier']:.4f}  {a['ece']:.3f}  {a['recall_at_p80']:.3f}  {per}")
    print(f"wall {result['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
