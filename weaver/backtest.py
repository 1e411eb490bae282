"""Backtest: replay prediction runs over a past span and score them against the real `splits`.

For every run time ``t`` of the span (every ``every``, default one bucket) the run sees exactly
what a live run at ``t`` would have seen (`weaver.forecasting.gather` cuts data at ``ts <= t``
and ignores lineage events after ``t``), so its predictions are the ones a live run would have
written (same deterministic ids, MERGEd into `predictions`). Each prediction is matched to the
partition's real split: ``actual_split`` is true when the partition split in
``(t, window_end]``. A window reaching past the end of the known history (the later of the last
change and the last split) with no split seen yet is *censored*: its outcome is unknown, so it
is counted but neither written to `backtest_results` nor scored.

Two naive baselines are scored side by side on the same inputs and skips:

- ``baseline_linear`` - a straight line through the last 6 size points, extrapolated; it
  "predicts" (probability 1) when the line exceeds the size threshold inside the window;
- ``baseline_near``   - probability 1 when the last size or write rate is within X % (default
  10 %) of its threshold.

Scores: precision and recall at the confidence threshold, Brier score, a reliability plot, and
the median absolute timing error of true positives, in an HTML + PNG report.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver import forecasting, metrics, storage
from weaver.changelog import Lineage
from weaver.errors import InvalidParameterError
from weaver.settings import format_duration, parse_duration

LINEAR_POINTS = 6
DEFAULT_NEAR = 0.10
MAX_RUNS = 2000
BASELINES = ("baseline_linear", "baseline_near")


def backtest_id(start: datetime, end: datetime, every: timedelta, model: str, window: timedelta,
                size_threshold: float, write_threshold: float) -> str:
    raw = f"{start.isoformat()}|{end.isoformat()}|{every.total_seconds()}|{model}|{window.total_seconds()}|" \
          f"{size_threshold}|{write_threshold}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def run_times(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """Run instants start, start + every, ... strictly before end."""
    out, t = [], start
    while t < end:
        out.append(t)
        t += every
    return out


# --- baselines -----------------------------------------------------------------------------------
def baseline_rows(run: forecasting.RunInput, near_fraction: float) -> list[dict]:
    """Predictions of the two naive baselines for one run (same inputs and skips as the model)."""
    p = run.params
    rows = []
    h_us = run.horizon
    for pin in run.partitions:
        pid = pin.partition.partition_id
        for name in BASELINES:
            row = {"prediction_id": forecasting.prediction_id(p.at, pid, name), "run_ts": p.at, "partition_id": pid,
                   "model": name, "window_end": p.at + p.window, "probability": 0.0, "predicted_split_ts": None}
            if pin.skip_reason is None and len(pin.size) >= 2 and len(h_us):
                if name == "baseline_linear":
                    x = (pin.ds[-LINEAR_POINTS:] - pin.ds[-1]) / 3.6e9
                    slope, icpt = np.polyfit(x, pin.size[-LINEAR_POINTS:], 1)
                    line = icpt + slope * (h_us - pin.ds[-1]) / 3.6e9
                    above = np.nonzero(line > p.size_threshold)[0]
                    if above.size:
                        row["probability"] = 1.0
                        row["predicted_split_ts"] = metrics.from_us(int(h_us[above[0]]))
                else:
                    near = (pin.size[-1] >= (1 - near_fraction) * p.size_threshold
                            or pin.rate[-1] >= (1 - near_fraction) * p.write_threshold)
                    row["probability"] = 1.0 if near else 0.0
            rows.append(row)
    return rows


# --- scoring -------------------------------------------------------------------------------------
@dataclass
class Scores:
    model: str
    rows: int
    actual_splits: int
    predicted_splits: int
    true_positives: int
    precision: float | None
    recall: float | None
    brier: float | None
    median_abs_timing_error_h: float | None
    median_timing_error_h: float | None


def score(rows: list[dict], threshold: float, model: str) -> Scores:
    """Precision/recall at `threshold`, Brier score and timing errors of scored rows of one model."""
    mine = [r for r in rows if r["model"] == model]
    p = np.array([r["probability"] for r in mine], dtype=float)
    y = np.array([r["actual_split"] for r in mine], dtype=bool)
    pos = p >= threshold
    tp = int(np.sum(pos & y))
    te = [r["timing_error_s"] / 3600.0 for r, hit in zip(mine, pos & y) if hit and r["timing_error_s"] is not None]
    return Scores(
        model=model, rows=len(mine), actual_splits=int(y.sum()), predicted_splits=int(pos.sum()), true_positives=tp,
        precision=(tp / int(pos.sum())) if pos.any() else None,
        recall=(tp / int(y.sum())) if y.any() else None,
        brier=float(np.mean((p - y) ** 2)) if len(mine) else None,
        median_abs_timing_error_h=float(np.median(np.abs(te))) if te else None,
        median_timing_error_h=float(np.median(te)) if te else None,
    )


def _history_end(settings, splits: pa.Table) -> datetime:
    """The end of known history: the later of the last change and the last recorded split."""
    dt = storage.open_table(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG)
    ts = dt.to_pyarrow_dataset().to_table(columns=["ts"]).column("ts")
    last = pc.max(ts).as_py() if len(ts) else None
    if splits.num_rows:
        s = pc.max(splits.column("split_ts")).as_py()
        last = s if last is None or s > last else last
    return last or datetime.min.replace(tzinfo=timezone.utc)


# --- the backtest --------------------------------------------------------------------------------
def backtest(settings, *, start: datetime, end: datetime, model: str = "prophet", out_dir: str | Path | None = None,
             every: timedelta | str | None = None, window: timedelta | str | None = None,
             size_threshold: float | None = None, write_threshold: float | None = None,
             near_fraction: float = DEFAULT_NEAR, write_predictions: bool = True,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Run predictions at every `every` in [start, end), score them, write results and a report.

    Returns the scores per model (the model and both baselines), counts, and the report paths.
    """
    for name, v in (("start", start), ("end", end)):
        if not isinstance(v, datetime) or v.tzinfo is None:
            raise InvalidParameterError(f"{name}={v!r} must be a timezone-aware datetime, e.g. 2026-01-03T00:00:00Z")
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    if start >= end:
        raise InvalidParameterError(f"--from {start.isoformat()} must be before --to {end.isoformat()}")
    every = parse_duration(every) if every is not None else settings.bucket
    if not 0 < near_fraction < 1:
        raise InvalidParameterError(f"near fraction {near_fraction!r} must be in (0, 1)")
    times = run_times(start, end, every)
    if len(times) > MAX_RUNS:
        raise InvalidParameterError(f"{len(times)} runs between --from and --to; at most {MAX_RUNS} (use a larger --every)")
    # Validate every parameter before any write.
    params0 = forecasting.run_params(settings, at=start, window=window, model=model, size_threshold=size_threshold,
                                     write_threshold=write_threshold)
    bid = backtest_id(start, end, every, model, params0.window, params0.size_threshold, params0.write_threshold)
    lineage = Lineage.load(settings)
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS)
    split_of = {}
    for r in sorted(splits.to_pylist(), key=lambda r: r["split_ts"]):
        split_of.setdefault(r["parent_id"], r)
    known_until = _history_end(settings, splits)

    # Complete buckets up to the last run never depend on later data: build them once.
    first = max(start - params0.history - settings.bucket, datetime(1970, 1, 2, tzinfo=timezone.utc))
    metrics.build_metrics(settings, start=first, end=times[-1])

    rows: list[dict] = []
    censored = {m: 0 for m in (model, *BASELINES)}
    lead: dict[str, datetime] = {}
    pool_cm = forecasting.forecast_pool(settings) if forecasting._workers(settings) > 1 else None
    pool = pool_cm.__enter__() if pool_cm else None
    try:
        for i, t in enumerate(times):
            params = forecasting.run_params(settings, at=t, window=window, model=model,
                                            size_threshold=size_threshold, write_threshold=write_threshold)
            run = forecasting.gather(settings, params, lineage=lineage)
            preds = forecasting.predict(settings, at=t, window=window, model=model, size_threshold=size_threshold,
                                        write_threshold=write_threshold, write=write_predictions, pool=pool,
                                        lineage=lineage, run_input=run)
            for r in preds.to_pylist() + baseline_rows(run, near_fraction):
                s = split_of.get(r["partition_id"])
                hit = s is not None and t < s["split_ts"] <= r["window_end"]
                if not hit and r["window_end"] > known_until:
                    censored[r["model"]] += 1
                    continue
                if hit and r["model"] == model and r["probability"] >= params.confidence_threshold:
                    lead.setdefault(r["partition_id"], t)
                err = None
                if hit and r["predicted_split_ts"] is not None:
                    err = (r["predicted_split_ts"] - s["split_ts"]).total_seconds()
                rows.append({"backtest_id": bid, "prediction_id": r["prediction_id"], "run_ts": t,
                             "partition_id": r["partition_id"], "model": r["model"],
                             "probability": float(r["probability"]), "predicted_split_ts": r["predicted_split_ts"],
                             "actual_split": bool(hit), "actual_split_ts": s["split_ts"] if hit else None,
                             "actual_split_key": s["split_key"] if hit else None, "timing_error_s": err})
            if progress:
                progress(i + 1, len(times))
    finally:
        if pool_cm:
            pool_cm.__exit__(None, None, None)

    table = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.BACKTEST_RESULTS])
    storage.merge(storage.uri_for(settings, storage.BACKTEST_RESULTS), storage.BACKTEST_RESULTS, table,
                  keys=["backtest_id", "prediction_id"])
    threshold = params0.confidence_threshold
    scores = {m: asdict(score(rows, threshold, m)) for m in (model, *BASELINES)}
    split_rows = [{"parent_id": s["parent_id"], "split_ts": s["split_ts"], "reason": s["reason"],
                   "split_key": s["split_key"], "first_confident_run": lead.get(s["parent_id"]),
                   "lead_time_h": ((s["split_ts"] - lead[s["parent_id"]]).total_seconds() / 3600.0)
                   if s["parent_id"] in lead else None}
                  for s in split_of.values() if start < s["split_ts"] <= end + params0.window]
    summary = {
        "backtest_id": bid, "model": model, "start": start, "end": end, "every": format_duration(every),
        "window": format_duration(params0.window), "runs": len(times), "confidence_threshold": threshold,
        "size_threshold_bytes": params0.size_threshold, "write_threshold_per_s": params0.write_threshold,
        "near_fraction": near_fraction, "known_until": known_until, "rows_scored": len(rows),
        "censored": censored, "scores": scores, "splits": split_rows,
    }
    out = _out_dir(settings, bid, out_dir)
    summary["report"] = render_report(summary, rows, out)
    return summary


def _out_dir(settings, bid: str, out_dir) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    if "://" in settings.lake:
        return Path("out") / "backtests" / bid
    return Path(settings.lake) / "_weaver" / "backtests" / bid


# --- report --------------------------------------------------------------------------------------
def _reliability(rows: list[dict], model: str, bins: int = 10) -> tuple[list, list, list]:
    p = np.array([r["probability"] for r in rows if r["model"] == model], dtype=float)
    y = np.array([r["actual_split"] for r in rows if r["model"] == model], dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            xs.append(float(p[m].mean()))
            ys.append(float(y[m].mean()))
            ns.append(int(m.sum()))
    return xs, ys, ns


def render_report(summary: dict, rows: list[dict], out: Path) -> dict:
    """Write backtest.png (reliability, scores, timing) and report.html + summary.json into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    models = list(summary["scores"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for m, c in zip(models, ("tab:blue", "tab:orange", "tab:green")):
        xs, ys, ns = _reliability(rows, m)
        if xs:
            ax.plot(xs, ys, marker="o", color=c, label=m)
            ax.scatter(xs, ys, s=[10 + 4 * n for n in ns], color=c, alpha=0.3)
    ax.set(xlabel="predicted probability", ylabel="observed split frequency", xlim=(0, 1), ylim=(-0.02, 1.02),
           title="Reliability (marker area = rows)")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = ("precision", "recall", "brier")
    width = 0.8 / max(1, len(models))
    for j, m in enumerate(models):
        vals = [summary["scores"][m][n] for n in names]
        ax.bar(np.arange(3) + j * width, [v if v is not None else 0 for v in vals], width, label=m)
    ax.set_xticks(np.arange(3) + width * (len(models) - 1) / 2, names)
    ax.set(ylim=(0, 1), title=f"At confidence >= {summary['confidence_threshold']:.2f}")
    ax.legend(fontsize=8)
    ax = axes[2]
    for m, c in zip(models, ("tab:blue", "tab:orange", "tab:green")):
        te = [(r["run_ts"], r["timing_error_s"] / 3600.0) for r in rows if r["model"] == m and r["actual_split"]
              and r["timing_error_s"] is not None and r["probability"] >= summary["confidence_threshold"]]
        if te:
            ax.scatter([t for t, _ in te], [e for _, e in te], s=14, color=c, label=m)
    ax.axhline(0, color="grey", lw=1)
    ax.set(title="Timing error of true positives", ylabel="predicted - actual split (h)", xlabel="run time")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "backtest.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    def fmt(v, pct=False):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1%}" if pct else f"{v:.3f}"
        return html.escape(str(v))

    head = "".join(f"<th>{h}</th>" for h in ("model", "rows scored", "actual splits", "predicted", "true positives",
                                             "precision", "recall", "Brier", "median |timing error| (h)",
                                             "median timing error (h)", "censored"))
    body = "".join(
        "<tr>" + "".join(f"<td>{x}</td>" for x in (
            html.escape(m), s["rows"], s["actual_splits"], s["predicted_splits"], s["true_positives"],
            fmt(s["precision"], True), fmt(s["recall"], True), fmt(s["brier"]), fmt(s["median_abs_timing_error_h"]),
            fmt(s["median_timing_error_h"]), summary["censored"][m])) + "</tr>"
        for m, s in summary["scores"].items())
    splits_html = "".join(
        f"<tr><td>{html.escape(s['parent_id'])}</td><td>{s['split_ts'].isoformat()}</td><td>{html.escape(s['reason'])}</td>"
        f"<td>{html.escape(s['split_key'])}</td><td>{s['first_confident_run'].isoformat() if s['first_confident_run'] else '-'}</td>"
        f"<td>{fmt(s['lead_time_h'])}</td></tr>" for s in summary["splits"])
    params = {k: summary[k] for k in ("backtest_id", "model", "start", "end", "every", "window", "runs",
                                       "confidence_threshold", "size_threshold_bytes", "write_threshold_per_s",
                                       "near_fraction", "known_until")}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Backtest {summary['backtest_id']}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Split prediction backtest ({html.escape(summary['model'])})</h1>
<p>Runs every {summary['every']} in [{summary['start'].isoformat()}, {summary['end'].isoformat()}), window {summary['window']};
a prediction counts as positive at probability &ge; {summary['confidence_threshold']:.2f}. Windows reaching past the known
history ({summary['known_until'].isoformat()}) without an observed split are censored (not scored).</p>
<h2>Scores</h2><table><tr>{head}</tr>{body}</table>
<img src="{png.name}" alt="reliability, scores and timing error" style="max-width:100%">
<h2>Real splits in the span</h2>
<table><tr><th>partition</th><th>split_ts</th><th>reason</th><th>split_key</th><th>first run with p &ge; threshold</th>
<th>lead time (h)</th></tr>{splits_html}</table>
<h2>Parameters</h2><pre>{html.escape(json.dumps(params, indent=2, default=str))}</pre>
</body></html>"""
    page_path = out / "report.html"
    page_path.write_text(page)
    js = out / "summary.json"
    js.write_text(json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=2, default=str))
    return {"html": str(page_path), "png": str(png), "json": str(js)}


def read_results(settings, backtest_id: str | None = None) -> pa.Table:
    """Stored backtest rows (optionally of one backtest)."""
    t = storage.read(storage.uri_for(settings, storage.BACKTEST_RESULTS), storage.BACKTEST_RESULTS, missing_ok=True)
    if backtest_id is not None:
        t = t.filter(pc.equal(t.column("backtest_id"), backtest_id))
    return t
