"""`weaver whatif report`: one static HTML page with matplotlib plots (images embedded as data URIs).

Per advised partition of a prediction run: the size and write-rate forecast fan (p10-p90 of the
very paths the run's probability counts: the prediction stage's own job for the partition, with the
run's seed and its cross-partition context - the moving hot spot, the lake's first-day ratio)
against the thresholds, with the predicted split time; the children's projected sizes after the
advised split; then the largest partition before and after each advised split, and the
reliability diagram of recent predictions whose window has closed (predicted probability vs.
whether the partition really split).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import objstore, storage
from weaver.core.ids import interval_id
from weaver.core.settings import Settings
from weaver.core.time import from_us, parse_timepoint
from weaver.predict import gather_batched, run_jobs_of, run_params
from weaver.predict.models import DEFAULT_MODEL, Job, job_paths
from weaver.log import Lineage, first_splits, window_split
from weaver.whatif.advice import WAIT, advise
from weaver.whatif.keys import split_candidates

MAX_PARTITIONS = 6


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _dt(us) -> list[datetime]:
    return [from_us(int(u)) for u in us]


def fan(job: Job, n: int | None = None) -> dict:
    """p10/p50/p90 of size and write rate over the grid from the last history point to the
    window's end: of the paths `job` (the run's, `run_jobs_of`) counts crossings on, or of `n`
    paths drawn alike when `n` differs from the run's count."""
    if n is not None and n != job.n_samples:
        job = dataclasses.replace(job, n_samples=int(n))
    grid, size, rate = job_paths(job)
    q = lambda a: np.quantile(a, [0.1, 0.5, 0.9], axis=0)  # noqa: E731
    return {"grid": grid, "size": q(size), "rate": q(rate)}


def reliability_rows(settings: Settings, at: datetime, runs: int = 200) -> list[tuple[float, bool]]:
    """(probability, really split in its window) of predictions whose window closed by `at`; a window
    in which an operator split the partition (a manual split) has no outcome and is left out, as in
    the backtest and the calibration fit."""
    preds = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS, missing_ok=True)
    preds = preds.filter(pc.less_equal(preds.column("window_end"), pa.scalar(at, storage.TS)))
    preds = preds.filter(pc.is_null(preds.column("skip_reason")))
    first = first_splits(storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS,
                                      missing_ok=True).to_pylist())
    out = []
    for r in sorted(preds.to_pylist(), key=lambda r: r["run_ts"])[-runs * 50:]:
        hit, _ = window_split(first, r["partition_id"], r["run_ts"], r["window_end"])
        if hit is not None:
            out.append((float(r["probability"]), hit))
    return out


def render(settings: Settings, *, at: datetime | str, model: str = DEFAULT_MODEL, out_dir: str | Path | None = None,
           advice_rows: list[dict] | None = None, samples: int | None = None) -> dict:
    """Write the report for the prediction run latest at or before `at` (advising it first when
    `advice_rows` is not given); returns {"html", "plots", "partitions"}. `samples`: paths per fan
    (default the run's own, ``settings.forecast_samples``: the fan is then the paths behind the
    stored ``probability_raw``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = parse_timepoint(at)
    # Bad input writes nothing: the model (and the settings' window) and the folder are checked
    # before the advice is written, and the folder is made only once the page is rendered.
    run_params(settings, at=at, model=model)
    if out_dir:
        storage.check_outside_lake(settings, str(out_dir), what="--out")
    rows = advice_rows if advice_rows is not None else advise(settings, at=at).to_pylist()
    target = str(out_dir) if out_dir else objstore.lake_file(settings.lake, "whatif", interval_id(None, at))
    page = _render(settings, at, model, rows, samples, plt)
    with objstore.folder(target, storage.options(target)) as folder:  # an s3:// report is uploaded when complete
        path = folder.path / "report.html"
        tmp = path.with_name("report.html.tmp")
        tmp.write_text(page.pop("page"), encoding="utf-8")
        tmp.replace(path)
        (folder.path / "advice.json").write_text(json.dumps(rows, default=str, indent=1), encoding="utf-8")
        return {**page, "html": folder.uri_of(str(path))}


def _render(settings: Settings, at: datetime, model: str, rows: list[dict], samples: int | None, plt) -> dict:
    """The page (HTML with its plots inlined), its plot count and the partitions it shows: made in
    memory, so a failure leaves no folder behind."""
    run_ts = rows[0]["run_ts"] if rows else at
    chosen = [r for r in rows if r["action"] != WAIT] or sorted(rows, key=lambda r: -r["probability"])[:1]
    chosen = chosen[:MAX_PARTITIONS]
    params = run_params(settings, at=run_ts, model=model)
    # Gathered batch by batch, as the run was (memory follows a batch); the jobs the run fitted.
    jobs = run_jobs_of(params, gather_batched(settings, params))
    plots: list[tuple[str, str]] = []
    size_t, write_t = settings.size_threshold_bytes, settings.write_threshold_per_s
    for a in chosen:
        job = jobs.get(a["partition_id"])
        if job is None:  # not active at the run, or skipped there (too little history, constant)
            continue
        f = fan(job, samples)
        g = _dt(f["grid"])
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
        for ax, hist, qs, thr, label in ((axes[0], job.size, f["size"], size_t, "size (bytes)"),
                                         (axes[1], job.rate, f["rate"], write_t, "write rate (writes/s)")):
            ax.plot(_dt(job.ds), hist, color="black", lw=1.2, label="history")
            ax.fill_between(g, qs[0], qs[2], color="tab:blue", alpha=0.3, label="forecast p10-p90")
            ax.plot(g, qs[1], color="tab:blue", lw=1.2, label="forecast p50")
            ax.axhline(thr, color="tab:red", ls="--", lw=1, label="threshold")
            if a["predicted_split_ts"] is not None:
                ax.axvline(a["predicted_split_ts"], color="tab:orange", lw=1.2, label="predicted split")
            ax.set_title(f"{a['partition_id']}: {label}")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        axes[0].legend(fontsize=7, loc="upper left")
        plots.append((f"forecast fan of {a['partition_id']} (p={a['probability']:.2f}, {a['reason']})", _png(fig)))
        plt.close(fig)
        if a["split_key"] is not None:
            # The children's projected sizes: the advised cut's byte shares of the size forecast.
            p = Lineage.load(settings).get(a["partition_id"])
            cut = next((c for c in split_candidates(settings, p, run_ts).cuts.values() if c.key == a["split_key"]), None)
            if cut is not None:
                tot = max(cut.left_bytes + cut.right_bytes, 1)
                fig, ax = plt.subplots(figsize=(6, 3.6))
                for share, name, color in ((cut.left_bytes / tot, "left  (< key)", "tab:green"),
                                           (cut.right_bytes / tot, "right (>= key)", "tab:purple")):
                    ax.fill_between(g, share * f["size"][0], share * f["size"][2], color=color, alpha=0.25)
                    ax.plot(g, share * f["size"][1], color=color, label=f"{name}: {share:.0%} of bytes")
                ax.axhline(size_t, color="tab:red", ls="--", lw=1, label="size threshold")
                ax.set_title(f"{a['partition_id']} split at {a['split_key']!r}: children's projected size")
                ax.tick_params(axis="x", labelrotation=30, labelsize=7)
                ax.legend(fontsize=7)
                plots.append((f"children of {a['partition_id']} after the advised split", _png(fig)))
                plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    split_rows = [a for a in chosen if a["largest_before_bytes"] is not None]
    if split_rows:
        x = np.arange(len(split_rows))
        ax.bar(x - 0.2, [a["largest_before_bytes"] for a in split_rows], 0.4, label="before", color="tab:gray")
        ax.bar(x + 0.2, [a["largest_after_bytes"] for a in split_rows], 0.4, label="after", color="tab:blue")
        ax.set_xticks(x, [a["partition_id"] for a in split_rows])
        ax.legend()
    else:
        ax.bar([0], [0])
        ax.text(0.5, 0.5, "no split advised in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("largest partition (bytes)")
    ax.set_title("largest partition before / after the advised split")
    plots.append(("largest partition before and after", _png(fig)))
    plt.close(fig)
    rel = reliability_rows(settings, at)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    if rel:
        p = np.array([r[0] for r in rel])
        y = np.array([r[1] for r in rel], dtype=float)
        idx = np.minimum((p * 10).astype(int), 9)
        xs = [p[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax.plot(xs, ys, marker="o", color="tab:blue", label=f"{len(rel)} predictions")
    else:
        ax.text(0.5, 0.3, "no prediction window has closed yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed split frequency")
    ax.set_title("reliability of recent predictions")
    ax.legend(fontsize=7)
    plots.append(("reliability diagram", _png(fig)))
    plt.close(fig)
    return {"page": _html(at, run_ts, rows, plots), "plots": len(plots),
            "partitions": [a["partition_id"] for a in chosen]}


def _html(at: datetime, run_ts: datetime, rows: list[dict], plots: list[tuple[str, str]]) -> str:
    cols = ["partition_id", "probability", "reason", "predicted_split_ts", "action", "split_key", "key_by",
            "expected_peak_utilization", "expected_hours_to_recross", "largest_before_bytes", "largest_after_bytes",
            "backtest"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    figs = "".join(f'<figure><img class="plot" alt="{html.escape(t)}" src="data:image/png;base64,{b}">'
                   f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, b in plots)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Temporal Weaver what-if report</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"
            f"<h1>What-if report</h1><p>as of {at.isoformat()}, prediction run {run_ts.isoformat()}</p>"
            f"<h2>Advice</h2><table><tr>{head}</tr>{body}</table><h2>Plots</h2>{figs}</body></html>")
