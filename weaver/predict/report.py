"""The backtest report: an HTML page with a reliability diagram and the scores (matplotlib)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np


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
