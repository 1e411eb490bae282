"""CLI commands: weave, woven-vacuum (the woven tier)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer
from rich.table import Table

from weaver.cli._app import JsonOpt, LakeOpt, app, confidence, console, emit, reported, settings_for, timepoint
from weaver.maintain.maintain import check_lake
from weaver.pipeline import gate_weaves
from weaver.weave import reconcile, vacuum_woven, weave


@app.command("weave")
def weave_cmd(
    at: str = typer.Option(..., "--at", help="Run instant (ISO-8601 with timezone): weave what the log holds up to it."),
    confidence_threshold: Optional[float] = typer.Option(
        None, "--confidence-threshold", help="Weave predictions with probability >= this (default 0.75)."),
    run_ts: Optional[str] = typer.Option(None, "--run-ts", help="Weave this prediction run (default: latest <= --at)."),
    model: Optional[str] = typer.Option(
        None, "--model", help="Weave this model's predictions only (default path, as `weaver predict`): "
                              "path | prophet | arima | statsforecast."),
    cadence: Optional[str] = typer.Option(None, "--cadence", help="Timepoint spacing, e.g. 1h or 30m (default 1h)."),
    woven_root: Optional[str] = typer.Option(None, "--woven-root", help="Root URI of the woven tier (default <lake>/woven)."),
    reconcile_after: bool = typer.Option(True, "--reconcile/--no-reconcile",
                                         help="Then move sequences to confirmed/refuted/expired as of --at."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Weave shadow snapshot sequences for the predicted splits (Arrow or Spark by the run's size), check
    them, publish them, then reconcile their lifecycle."""
    with reported(as_json):
        c = confidence(confidence_threshold)
        t = timepoint(at)
        rt = timepoint(run_ts, "--run-ts") if run_ts else None
        s = settings_for(lake, woven_root=woven_root, woven_cadence=cadence)
        with console.status("weaving..."):
            # No session passed: weave starts Spark only when the run's size picks it (no JVM otherwise).
            r = weave(None, s, at=t, confidence_threshold=c, run_ts=rt, model=model, stage=True)
        # Write-audit-publish: the staged weaves become `active` only if the woven suite passes.
        with console.status("checking the staged weaves..."):
            r["check"] = gate_weaves(s)
        if reconcile_after:
            r["reconcile"] = reconcile(s, at=t)
    human = Table(title=f"weave at {t.isoformat()}", show_header=False)
    for k in ("model", "run_ts", "confidence_threshold", "new_sequences", "below_threshold", "sequences",
              "timepoints_written", "rows_written", "engine", "version", "elapsed_s"):
        human.add_row(k, str(r.get(k)))
    if "reconcile" in r:
        rec = r["reconcile"]
        human.add_row("lifecycle", ", ".join(f"{k}={v}" for k, v in sorted(rec["statuses"].items())) or "-")
    emit(r, as_json, human)


@app.command("woven-vacuum")
def woven_vacuum_cmd(
    now: Optional[str] = typer.Option(None, "--now", help="Instant the retention is measured to (default: now)."),
    woven_root: Optional[str] = typer.Option(None, "--woven-root", help="Root URI of the woven tier (default <lake>/woven)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Expire sequences past the woven tier's retention, delete their rows, vacuum unreferenced files."""
    with reported(as_json):
        t = timepoint(now, "--now") if now else datetime.now(timezone.utc)
        s = settings_for(lake, woven_root=woven_root)
        check_lake(s)  # a wrong --lake would otherwise expire nothing, with exit 0
        r = vacuum_woven(s, now=t)
    emit(r, as_json, f"{r['expired_sequences']} expired sequence(s) ({r['newly_expired']} newly): "
                     f"{r['rows_deleted']} rows deleted, {r['files_removed']} files removed")
