"""The backtest report: an HTML page with reliability diagrams (95 % Wilson bands per bin), the
calibration map in use, and the scores (matplotlib)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def of_model(rows: pa.Table, model: str) -> pa.Table:
    """The scored rows of one model."""
    return rows.filter(pc.equal(rows.column("model"), model))


def _reliability(rows: pa.Table, model: str, bins: int = 10, key: str = "probability") -> tuple[list, list, list]:
    mine = of_model(rows, model)
    if key not in mine.column_names:
        return [], [], []
    mine = mine.filter(pc.is_valid(mine.column(key)))
    p = mine.column(key).to_numpy(zero_copy_only=False).astype(float)
    y = mine.column("actual_split").to_numpy(zero_copy_only=False).astype(float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            xs.append(float(p[m].mean()))
            ys.append(float(y[m].mean()))
            ns.append(int(m.sum()))
    return xs, ys, ns


def reliability_table(rows: pa.Table, model: str, bins: int = 10, key: str = "probability") -> list[dict]:
    """Per bin of `model`'s scored rows (a `backtest_results` table): mean predicted, observed
    frequency, rows, and its 95 % Wilson interval."""
    from weaver.predict.calibration import wilson

    xs, ys, ns = _reliability(rows, model, bins, key)
    out = []
    for x, y, n in zip(xs, ys, ns):
        lo, hi = wilson(int(round(y * n)), n)
        out.append({"predicted": x, "observed": y, "rows": n, "lo": lo, "hi": hi})
    return out


def render_report(summary: dict, rows: pa.Table, out: Path) -> dict:
    """Write backtest.png (reliability, scores, timing) and report.html + summary.json into `out`
    from the scored rows `rows` (`backtest_results` columns, with `probability_raw` when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    models = list(summary["scores"])
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    series = [(m, "probability", m) for m in models]
    if "probability_raw" in rows.column_names and rows.column("probability_raw").null_count < rows.num_rows:
        series.insert(1, (summary["model"], "probability_raw", f"{summary['model']} (raw)"))
    for (m, key, label), c in zip(series, ("tab:blue", "tab:purple", "tab:orange", "tab:green")):
        tab = reliability_table(rows, m, key=key)
        if tab:
            xs, ys = [b["predicted"] for b in tab], [b["observed"] for b in tab]
            # max(0, .): the Wilson bound can sit a rounding error beyond the observed share
            err = [[max(0.0, y - b["lo"]) for y, b in zip(ys, tab)], [max(0.0, b["hi"] - y) for y, b in zip(ys, tab)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", color=c, label=label, capsize=3, lw=1)
            ax.scatter(xs, ys, s=[10 + 4 * b["rows"] for b in tab], color=c, alpha=0.25)
    ax.set(xlabel="predicted probability", ylabel="observed split frequency", xlim=(0, 1), ylim=(-0.02, 1.02),
           title="Reliability (95 % Wilson bands; area = rows)")
    ax.legend(fontsize=8)
    ax = axes[3]
    cm = summary.get("calibration") or {}
    grid = np.linspace(0, 1, 101)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="identity")
    if cm.get("curve"):
        ax.plot(grid, cm["curve"], color="tab:blue", lw=2, label=f"{cm.get('method')} ({cm.get('rows')} rows)")
    ax.set(xlabel="raw probability", ylabel="calibrated probability", xlim=(0, 1), ylim=(0, 1),
           title=f"Calibration map at the last run ({cm.get('version', '-')})")
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
    for m, c in zip(models, colors):
        mine = of_model(rows, m)
        hits = mine.filter(pc.and_(pc.and_(mine.column("actual_split"), pc.is_valid(mine.column("timing_error_s"))),
                                   pc.greater_equal(mine.column("probability"), summary["confidence_threshold"])))
        if hits.num_rows:
            ax.scatter(hits.column("run_ts").to_pylist(),
                       (hits.column("timing_error_s").to_numpy(zero_copy_only=False) / 3600.0).tolist(),
                       s=14, color=c, label=m)
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
                                             "median timing error (h)", "censored", "manual split (excluded)"))
    excluded = summary.get("excluded_manual") or {}
    body = "".join(
        "<tr>" + "".join(f"<td>{x}</td>" for x in (
            html.escape(m), s["rows"], s["actual_splits"], s["predicted_splits"], s["true_positives"],
            fmt(s["precision"], True), fmt(s["recall"], True), fmt(s["brier"]), fmt(s["median_abs_timing_error_h"]),
            fmt(s["median_timing_error_h"]), summary["censored"][m], excluded.get(m, 0))) + "</tr>"
        for m, s in summary["scores"].items())
    splits_html = "".join(
        f"<tr><td>{html.escape(s['parent_id'])}</td><td>{s['split_ts'].isoformat()}</td><td>{html.escape(s['reason'])}</td>"
        f"<td>{html.escape(s['split_key'])}</td><td>{s['first_confident_run'].isoformat() if s['first_confident_run'] else '-'}</td>"
        f"<td>{fmt(s['lead_time_h']) if s.get('scored', True) else 'not scored'}</td></tr>" for s in summary["splits"])
    rel_html = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{b['predicted']:.3f}</td><td>{b['observed']:.3f}</td><td>{b['rows']}</td>"
        f"<td>{b['lo']:.2f} - {b['hi']:.2f}</td></tr>"
        for m, key, label in series for b in reliability_table(rows, m, key=key))
    params = {k: summary[k] for k in ("backtest_id", "model", "start", "end", "every", "window", "runs",
                                       "confidence_threshold", "size_threshold_bytes", "write_threshold_per_s",
                                       "near_fraction", "known_until")}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Backtest {summary['backtest_id']}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Split prediction backtest ({html.escape(summary['model'])})</h1>
<p>Runs every {summary['every']} in [{summary['start'].isoformat()}, {summary['end'].isoformat()}), window {summary['window']};
a prediction counts as positive at probability &ge; {summary['confidence_threshold']:.2f}. Windows reaching past the known
history ({summary['known_until'].isoformat()}) are censored (not scored). A window in which an operator split the
partition (a manual split) is not scored either: no model forecasts an operator's decision, and the split ends the
partition, so what the data manager would have done is unknown (the count per model: "manual split (excluded)").
Size and throughput splits are the positives.</p>
<h2>Scores</h2><table><tr>{head}</tr>{body}</table>
<img src="{png.name}" alt="reliability, scores and timing error" style="max-width:100%">
<h2>Calibration</h2><p>Map at the last run: {html.escape(str((summary.get("calibration") or {}).get("method")))}
{html.escape(str((summary.get("calibration") or {}).get("note") or ""))} (version
{html.escape(str((summary.get("calibration") or {}).get("version")))}); fitted only on predictions whose windows had
closed by then. Reliability bins of the model, raw and calibrated, with 95 % Wilson intervals:</p>
<table><tr><th>series</th><th>mean predicted</th><th>observed</th><th>rows</th><th>95 % interval</th></tr>{rel_html}</table>
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
