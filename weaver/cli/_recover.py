"""CLI commands: recover, query, serve."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from weaver.api import create_app, serve_host
from weaver.cli._app import JsonOpt, LakeOpt, app, confidence, console, emit, fail, reported, settings_for, timepoint
from weaver.core.errors import InvalidParameterError, WeaverError
from weaver.recover import MODES, woven_snapshot
from weaver.recover import recover as run_recover

AsOfVersionOpt = typer.Option(None, "--as-of-version", min=0,
                              help="Transaction time: the woven tier as of this Delta version (what was believed then).")
AsOfOpt = typer.Option(None, "--as-of", help="Transaction time: the woven tier as of this instant (ISO-8601, tz).")
ConfOpt = typer.Option(None, "--confidence-threshold",
                       help="Woven snapshots below it are never used (default $WEAVER_CONFIDENCE_THRESHOLD or 0.75).")


@app.command()
def recover(
    partition: str = typer.Option(..., "--partition", help="Real partition id or woven child id <P>~<weave8>~L|R."),
    at: str = typer.Option(..., "--at", help="Instant (ISO-8601 with timezone) to recover."),
    confidence_threshold: Optional[float] = ConfOpt,
    mode: str = typer.Option("point_in_time", "--mode", help="point_in_time | rollback (writes a new Delta table)."),
    out: Optional[str] = typer.Option(None, "--out", help="point_in_time: output Parquet file (key, value), required. "
                                      "rollback: URI of the new Delta table (default <lake>/recoveries/<id>)."),
    as_of_version: Optional[int] = AsOfVersionOpt,
    as_of: Optional[str] = AsOfOpt,
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Recover a partition at --at: woven snapshot + short tail first, else base snapshot + replay."""
    with reported(as_json):
        t = timepoint(at)
        as_of_t = timepoint(as_of, "--as-of") if as_of else None
        if mode not in MODES:
            raise InvalidParameterError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "point_in_time" and not (out and out.endswith(".parquet")):
            raise InvalidParameterError("--out FILE.parquet is required in point_in_time mode")
        s = settings_for(lake)
        r = run_recover(s, partition, t, confidence_threshold=confidence(confidence_threshold), mode=mode, out=out,
                        as_of_version=as_of_version, as_of=as_of_t)
    obj = r.summary()
    via = f"woven snapshot {r.source} (confidence {r.confidence})" if r.path == "woven" else \
        f"base snapshot {r.source}" if r.source != "changelog" else "the change log alone"
    emit(obj, as_json, f"recovered {r.partition_id} at {r.at.isoformat()} via the {r.path} path: {r.rows} rows from "
                       f"{via} + {r.changes_replayed} changes in {r.elapsed_ms:.1f} ms -> {r.output}")


@app.command()
def query(
    partition: str = typer.Option(..., "--partition", help="Real partition id or woven child id <P>~<weave8>~L|R."),
    at: str = typer.Option(..., "--at", help="Instant (ISO-8601 with timezone): latest woven timepoint <= it."),
    confidence_threshold: Optional[float] = ConfOpt,
    weave: Optional[str] = typer.Option(None, "--weave", help="Restrict to one weave id (16 hex chars or first 8)."),
    show: int = typer.Option(10, "--show", min=0, max=1000, help="Rows to print (human output)."),
    as_of_version: Optional[int] = AsOfVersionOpt,
    as_of: Optional[str] = AsOfOpt,
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Look up the woven snapshot serving a partition at --at: weave id, timepoint, confidence, rows."""
    with reported(as_json):
        s, t = settings_for(lake), timepoint(at)
        target, snap, rows = woven_snapshot(s, partition, t, confidence_threshold=confidence(confidence_threshold),
                                            weave_id=weave, as_of_version=as_of_version,
                                            as_of=timepoint(as_of, "--as-of") if as_of else None)
    obj = {"partition_id": target.partition_id, "at": t, "weave_id": snap.weave_id, "prediction_id": snap.prediction_id,
           "source_partition_id": snap.source_partition_id, "split_key": snap.split_key, "timepoint": snap.timepoint,
           "as_of_seq": snap.as_of_seq, "confidence": snap.confidence, "status": snap.status,
           "woven_partition_ids": list(snap.children), "rows": rows.num_rows,
           "as_of_version": as_of_version, "as_of": as_of}
    human = Table(title=f"{target.partition_id}: weave {snap.weave_id} at {snap.timepoint.isoformat()} "
                        f"(seq {snap.as_of_seq}, confidence {snap.confidence:.2f}, {snap.status}) - {rows.num_rows} rows")
    human.add_column("key")
    human.add_column("value")
    for r in rows.slice(0, show).to_pylist():
        v = r["value"]
        human.add_row(r["key"], v.decode("utf-8", "replace")[:60] if v is not None else "")
    emit(obj, as_json, human)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    insecure_local: bool = typer.Option(False, "--insecure-local",
                                        help="Run without a token (loopback only: forces --host 127.0.0.1)."),
    lake: Optional[str] = LakeOpt,
) -> None:
    """Run the query API with uvicorn (bearer token from $WEAVER_API_TOKEN)."""
    try:
        s = settings_for(lake)
        bind = serve_host(s, host, insecure_local)
    except WeaverError as exc:
        raise fail(exc)
    import uvicorn

    if insecure_local and host != bind:
        console.print(f"[yellow]--insecure-local binds {bind} only (not {host})[/]")
    console.print(f"Temporal Weaver API on http://{bind}:{port} (lake {s.lake}, "
                  f"auth {'bearer token' if s.api_token else 'DISABLED (local only)'})")
    uvicorn.run(create_app(s, insecure=insecure_local and not s.api_token), host=bind, port=port, log_level="warning")
