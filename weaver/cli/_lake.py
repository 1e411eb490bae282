"""CLI commands: simulate, demo."""

from __future__ import annotations

from typing import Optional

import typer

from weaver.cli._app import JsonOpt, LakeOpt, app, emit, fail, settings_for
from weaver.errors import WeaverError


@app.command()
def simulate(
    seed: int = typer.Option(7, help="Random seed (same seed, same lake)."),
    partitions: int = typer.Option(4, help="Initial number of range partitions."),
    days: int = typer.Option(3, help="Days of workload."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a deterministic, contract-conforming lake with real splits."""
    from weaver.simulate import SimConfig, simulate as run

    try:
        s = settings_for(lake)
        r = run(s.lake, SimConfig(seed=seed, partitions=partitions, days=days))
    except WeaverError as exc:
        raise fail(exc, as_json)
    obj = {"lake": s.lake, "changes": r.changes, "partitions": r.partitions, "splits": r.splits,
           "start": r.start, "end": r.end}
    emit(obj, as_json, f"simulated {r.changes} changes, {r.partitions} partitions, {r.splits} real splits "
                       f"from {r.start.isoformat()} to {r.end.isoformat()} into {s.lake}")
