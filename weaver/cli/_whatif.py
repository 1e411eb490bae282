"""CLI commands: `weaver whatif weave|impact|advise|report` (what-if analysis, issue 13)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from weaver.cli._app import JsonOpt, LakeOpt, app, confidence, console, emit, reported, settings_for, timepoint
from weaver.core.errors import ExpectationFailedError, InvalidParameterError
from weaver.core.ids import UNPUBLISHED
from weaver.pipeline import gate_weaves
from weaver.weave import read_woven_catalog
from weaver.whatif import KEY_BY, advise, impact, plan_whatif, render_report, whatif_weave

whatif_app = typer.Typer(name="whatif", help="Hypothetical splits on demand, their impact, advice and the report.",
                         no_args_is_help=True)
app.add_typer(whatif_app, name="whatif")


@whatif_app.command("weave")
def weave_cmd(
    partition: str = typer.Option(..., "--partition", help="Real partition id to split hypothetically."),
    at: str = typer.Option(..., "--at", help="Split instant T (ISO-8601 with timezone), within the data."),
    split_key: Optional[str] = typer.Option(None, "--split-key", help="Left child holds keys < it (default: "
                                            "the size median or load-balancing key at T, see --key-by)."),
    until: Optional[str] = typer.Option(None, "--until", help="Last timepoint (default T + window)."),
    key_by: str = typer.Option("auto", "--key-by", help="Without --split-key: auto | size | load."),
    cadence: Optional[str] = typer.Option(None, "--cadence", help="Timepoint spacing, e.g. 1h (default 1h)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Weave "what if P had split at key K at T?" into the woven tier (origin manual, Spark)."""
    with reported(as_json):
        if key_by not in KEY_BY:
            raise InvalidParameterError(f"--key-by {key_by!r} is not one of {', '.join(KEY_BY)}")
        t = timepoint(at)
        u = timepoint(until, "--until") if until else None
        s = settings_for(lake, woven_cadence=cadence)
        plan_whatif(s, partition, t, split_key=split_key, until=u, key_by=key_by)  # named errors before Spark starts
        with console.status("weaving the what-if with Spark..."):
            r = whatif_weave(None, s, partition, t, split_key=split_key, until=u,
                             key_by=key_by, stage=True)
        # Write-audit-publish, as for predicted weaves: the `woven` suite publishes it or quarantines it.
        gate_error = None
        if r.get("staged"):
            try:
                gate_weaves(s)
            except ExpectationFailedError as exc:
                gate_error = str(exc)  # another staged weave may have failed while this one was published
        # Report what the catalog says, not what this run hoped for (a weave may be quarantined).
        row = next((c for c in read_woven_catalog(s).to_pylist() if c["weave_id"] == r["weave_id"]), None)
        r["status"] = row["status"] if row is not None else None
        r["published"] = row is not None and row["status"] not in UNPUBLISHED
        if row is not None and not r["published"]:
            raise ExpectationFailedError(
                f"what-if weave {r['weave_id']} is {row['status']}, not published"
                + (f": {gate_error}" if gate_error else "")
                + "; see `weaver quarantine list`, then `weaver quarantine clear` and ask again")
        if gate_error:
            r["check_error"] = gate_error
    human = Table(title=f"what if {partition} had split at {t.isoformat()}", show_header=False)
    for k in ("weave_id", "split_key", "key_by", "child_ids", "until", "timepoints_written", "rows_written",
              "version", "existing", "status", "published"):
        human.add_row(k, str(r.get(k)))
    emit(r, as_json, human)


@whatif_app.command("impact")
def impact_cmd(
    weave: str = typer.Option(..., "--weave", help="Weave id (16 hex chars or the first 8), predicted or manual."),
    model: str = typer.Option("path", "--model", help="Model forecasting each child (path | prophet | arima | statsforecast)."),
    recovery: bool = typer.Option(True, "--recovery/--no-recovery", help="Measure recovery with/without the weave."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The impact of a woven split: per child size, items, rates, hottest key; balance; forecasts; costs."""
    with reported(as_json):
        s = settings_for(lake)
        r = impact(s, weave, model=model, recovery=recovery)
    human = Table(title=f"impact of weave {r['weave_id']} ({r['origin']}): {r['source_partition_id']} at "
                        f"{r['split_key']!r} from {r['split_ts'].isoformat()}")
    for c in ("child", "last size B", "items", "writes/s", "reads/s", "hottest key", "crosses again (p50)"):
        human.add_column(c)
    for cid, ch in r["children"].items():
        last = ch["series"][-1]
        f = ch["forecast"]
        human.add_row(cid, str(last["size_bytes"]), str(last["items"]), f"{last['write_rate']:.4g}",
                      "-" if last["read_rate"] is None else f"{last['read_rate']:.4g}",
                      "-" if last["hottest_key_share"] is None else f"{last['hottest_key_share']:.0%}",
                      f["crosses_p50"].isoformat() if f["crosses_p50"] else f"not within the window (p={f['probability']:.2f})")
    lp = r["largest_partition"]
    human.caption = (f"largest partition {lp['before_bytes']} B -> {lp['after_bytes']} B; woven tier "
                     f"{r['woven_bytes']} B" + (f"; recovery woven {r['recovery']['woven_ms']} ms vs standard "
                                                f"{r['recovery']['standard_ms']} ms" if r["recovery"] else ""))
    emit(r, as_json, human)


@whatif_app.command("advise")
def advise_cmd(
    at: str = typer.Option(..., "--at", help="Advise on the prediction run latest at or before it (ISO-8601, tz)."),
    run_ts: Optional[str] = typer.Option(None, "--run-ts", help="This prediction run instead."),
    confidence_threshold: Optional[float] = typer.Option(None, "--confidence-threshold"),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Pre-split now at key K, wait, or raise capacity - per partition of a prediction run (MERGEd into `advice`)."""
    with reported(as_json):
        t = timepoint(at)
        rt = timepoint(run_ts, "--run-ts") if run_ts else None
        s = settings_for(lake)
        rows = advise(s, at=t, run_ts=rt, confidence_threshold=confidence(confidence_threshold)).to_pylist()
    human = Table(title=f"advice at {t.isoformat()}")
    cols = ("partition_id", "probability", "reason", "predicted_split_ts", "action", "split_key", "key_by",
            "expected_peak_utilization", "expected_hours_to_recross", "largest_before_bytes", "largest_after_bytes",
            "backtest")
    for c in cols:
        human.add_column(c)
    for r in rows:
        human.add_row(*("-" if r[c] is None else str(r[c]) for c in cols))
    emit({"at": t, "items": rows}, as_json, human)


@whatif_app.command("report")
def report_cmd(
    at: str = typer.Option(..., "--at", help="Report on the prediction run latest at or before it (ISO-8601, tz)."),
    model: str = typer.Option("path", "--model", help="Model of the forecast fans (path | prophet | arima | statsforecast)."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder (default <lake>/_weaver/whatif/<id>)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Advise on the run, then write a static HTML report with the plots (matplotlib)."""
    with reported(as_json):
        t = timepoint(at)
        s = settings_for(lake)
        with console.status("forecasting and plotting..."):
            r = render_report(s, at=t, model=model, out_dir=out)
    emit(r, as_json, f"report with {r['plots']} plots -> {r['html']}")
