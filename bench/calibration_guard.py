"""When should a lake switch from the shipped prior map to its own? (issue 15, docs/prediction.md §8)

The calibration ``isotonic`` (the default until issue 15's tenth pass) applies the shipped prior map
until the lake has `calibration.MIN_ROWS` scored rows of closed windows, and the lake's own isotonic
map from then on. On the evaluated 8-day lakes that map cost Brier in its first days (grid runs of
day 3: 0.103 against 0.083 raw, `forecast_quality_8d.json` at c7f1b72, ``per_age_days_grid``); this
benchmark chose the rule the default, ``auto`` (`calibration.choose`), now applies: ``pick24``. It
compares switching rules on the *tuning* lakes only (seeds 100-104 by default, 5 shapes, lakes of 4
and of 8 days; the evaluation's seeds 0-4 are never read), run by run as `predict` would (a run at
t reads only rows whose windows closed by t). Rules (``RULES``):

* ``raw`` - the identity; ``prior`` - the shipped prior map alone;
* ``lake`` - the ``isotonic`` method: the lake's map from ``MIN_ROWS`` rows, the prior before;
* ``lake_min800`` - the same from 800 rows;
* ``blend1000`` - from ``MIN_ROWS`` rows, w x lake map + (1 - w) x prior, w = n / (n + 1000);
* ``pick24`` / ``pick48`` - a held-out choice: the lake's rows whose windows closed in the last
  24 (48) h are held out, a lake map is fitted on the rest, and of {prior, identity, that map} the
  one with the lowest Brier on the held-out rows is used (the map refitted on all rows when it
  wins); the prior while the lake has fewer than ``MIN_ROWS`` rows. ``pick24`` is the product's
  ``auto`` (`calibration.choose` itself);
* ``pick24_any`` - ``pick24`` letting the identity win from the first closed window on.

Scores (`forecast_quality.scores`) on the grid runs (every 12 h from day 1) and the hourly runs,
pooled and by the lake's age at the run (whole days of history); for the default rule also the
timing errors of its true positives by how far ahead the split was (``lake_timing_by_lead``, and
``auto_timing_by_lead`` for the default).

Run: ``.venv/bin/python bench/calibration_guard.py`` -> bench/results/calibration_guard.json (~7 min
on 2 cores).
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

H_US = 3.6e9
RULES = ("raw", "prior", "lake", "lake_min800", "blend1000", "pick24", "pick48", "pick24_any")


def _brier(cm: calibration.CalibrationMap, rows: list[dict]) -> float:
    p = cm.apply([r["p"] for r in rows])
    return float(np.mean((p - np.array([r["y"] for r in rows], float)) ** 2))


def _fit(hist: list[dict]) -> calibration.CalibrationMap:
    return calibration.fit([h["p"] for h in hist], [h["y"] for h in hist], "isotonic", model="path")


def calibrated(rows: list[dict]) -> dict[str, list[dict]]:
    """Each rule's calibrated copies of one lake's path rows (each run's map from windows closed by then)."""
    prior = calibration.prior("path")
    ident = calibration.CalibrationMap("path", "identity")
    mine = sorted((r for r in rows if r["model"] == "path"), key=lambda r: r["run_ts"])
    out: dict[str, list[dict]] = {n: [] for n in RULES}
    for t in sorted({r["run_ts"] for r in mine}):
        hist = [h for h in mine if h["window_end"] <= t and not h["skipped"]]
        full = _fit(hist)
        ok = full.method != "identity"  # MIN_ROWS rows with MIN_CLASS of each outcome
        maps: dict = {"raw": ident, "prior": prior, "lake": full if ok else prior,
                      "lake_min800": full if ok and len(hist) >= 800 else prior}
        w = len(hist) / (len(hist) + 1000.0)
        maps["blend1000"] = (full, w) if ok else prior
        # pick24 / pick48: the product's held-out choice (`calibration.choose`), 24 h (the default) or 48 h held out.
        for name, hold_h in (("pick24", calibration.HOLDOUT_HOURS), ("pick48", 48)):
            held = [h["window_end"] > t - hold_h * H_US for h in hist]
            maps[name] = calibration.choose([h["p"] for h in hist], [h["y"] for h in hist], held, model="path")
        # pick24_any: the same choice, but the identity may win before MIN_ROWS rows (choose keeps the prior there).
        recent = [h for h in hist if h["window_end"] > t - 24 * H_US]
        earlier = [h for h in hist if h["window_end"] <= t - 24 * H_US]
        cands = [(_brier(prior, recent) if recent else 0.0, prior)]
        if recent:
            cands.append((_brier(ident, recent), ident))
            m_rest = _fit(earlier)
            if ok and m_rest.method != "identity":
                cands.append((_brier(m_rest, recent), full))
        maps["pick24_any"] = min(cands, key=lambda c: c[0])[1]  # ties keep the earlier (the prior first)
        for r in (x for x in mine if x["run_ts"] == t):
            for name in RULES:
                m = maps[name]
                if r["skipped"]:
                    p = r["p"]
                elif isinstance(m, tuple):
                    p = m[1] * float(m[0].apply([r["p"]])[0]) + (1 - m[1]) * float(prior.apply([r["p"]])[0])
                else:
                    p = float(m.apply([r["p"]])[0])
                out[name].append(fq.recalibrated(r, name, p))
    return out


def summary(lakes: list[dict]) -> dict:
    rows: dict[str, list[dict]] = {n: [] for n in RULES}
    base = []
    for lk in lakes:
        for n, rs in calibrated(lk["rows"]).items():
            rows[n] += rs
        base += [r for r in lk["rows"] if r["model"] in fq.BASELINES]
    res = {}
    for scope, sel in (("grid", lambda r: r["grid"] and r["scored"]), ("hourly", lambda r: r["scored"])):
        best = min(fq.scores([r for r in base if r["model"] == b and sel(r)])["brier"] for b in fq.BASELINES)
        res[scope] = {"best_naive_brier": best}
        for n in RULES:
            mine = [r for r in rows[n] if sel(r)]
            res[scope][n] = {"all": fq.scores(mine),
                             "per_age_days_brier": {str(a): fq.scores([r for r in mine if fq.age_days(r) == a])["brier"]
                                                    for a in sorted({fq.age_days(r) for r in mine})}}
        for n, key in (("lake", "lake_timing_by_lead"), ("pick24", "auto_timing_by_lead")):
            res[scope][key] = timing_by_lead([r for r in rows[n] if sel(r)], res[scope][n]["all"]["threshold_at_p80"])
    return res


def timing_by_lead(rows: list[dict], threshold: float | None) -> dict:
    """Timing errors of the true positives at `threshold` (the score's recall-at-precision-0.8 one),
    by how far ahead the real split was (4 h bins): count, share within 1 h, share more than 1 h
    late / early, signed median (h; > 0: predicted late)."""
    if threshold is None:
        return {}
    tp = [r for r in rows if r["y"] and r["p"] >= threshold and r["pred_ts"] is not None]
    out = {}
    for lo in range(0, 24, 4):
        e = np.array([(r["pred_ts"] - r["split_ts"]) / H_US for r in tp
                      if lo <= min((r["split_ts"] - r["run_ts"]) / H_US, 23.9) < lo + 4])  # 24 h: the last bin
        if e.size:
            out[f"{lo}-{lo + 4}h"] = {"n": int(e.size), "share_le_1h": float(np.mean(np.abs(e) <= 1)),
                                      "share_late": float(np.mean(e > 1)), "share_early": float(np.mean(e < -1)),
                                      "median_signed_h": float(np.median(e))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-start", type=int, default=100, help="tuning seeds (the evaluation's 0-4 stay unread)")
    ap.add_argument("--days", default="4,8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calibration_guard.json"))
    args = ap.parse_args()
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    lengths = [int(d) for d in args.days.split(",")]
    info = _common.machine("numpy")
    t0 = time.perf_counter()
    _models.preload()
    with tempfile.TemporaryDirectory(prefix="weaver-bench-cg-") as tmp:
        for d in lengths:
            os.makedirs(f"{tmp}/{d}")
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
            futs = {d: [pool.submit(fq.evaluate_lake, sh, sd, ["path"], 3, d, 12, f"{tmp}/{d}")
                        for sh in fq.FULL_SHAPES for sd in seeds] for d in lengths}
            lakes = {d: [f.result() for f in fs] for d, fs in futs.items()}
    result = {"benchmark": "calibration_guard", "machine": info,
              "setup": {"shapes": fq.FULL_SHAPES, "seeds": seeds, "days": lengths, "lake": fq.LAKE, "partitions": 3,
                        "grid_every_h": 12, "rules": list(RULES), "min_rows": calibration.MIN_ROWS},
              "lengths": {str(d): summary(lk) for d, lk in lakes.items()}}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for d, res in result["lengths"].items():
        for scope in ("grid", "hourly"):
            print(f"\n{d}-day lakes, {scope} runs (best naive {res[scope]['best_naive_brier']:.4f})")
            print(f"{'rule':<12} brier   ece    logloss R@P.8  by age (days): brier")
            for n in RULES:
                a = res[scope][n]["all"]
                ages = " ".join(f"{k}:{v:.4f}" for k, v in res[scope][n]["per_age_days_brier"].items())
                print(f"{n:<12} {a['brier']:.4f}  {a['ece']:.3f}  {a['log_loss']:.3f}   {a['recall_at_p80']:.3f}  {ages}")
            for key in ("lake_timing_by_lead", "auto_timing_by_lead"):
                for lead, t in res[scope][key].items():
                    print(f"  {key.split('_')[0]} timing, split {lead} ahead: n {t['n']}, within 1 h {t['share_le_1h']:.2f}, "
                          f"late {t['share_late']:.2f}, early {t['share_early']:.2f}, "
                          f"signed median {t['median_signed_h']:+.0f} h")
    print(f"wall {result['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
