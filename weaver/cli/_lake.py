"""CLI commands: simulate, demo."""

from __future__ import annotations

from typing import Optional

import typer

from weaver.cli._app import JsonOpt, LakeOpt, app, emit, reported, settings_for
from weaver.pipeline.demo import demo as run_demo
from weaver.pipeline.demo import render
from weaver.simulate import SimConfig
from weaver.simulate import simulate as simulate_lake


@app.command()
def simulate(
    seed: int = typer.Option(7, help="Random seed (same seed, same lake)."),
    partitions: int = typer.Option(4, help="Initial number of range partitions."),
    days: int = typer.Option(3, help="Days of workload."),
    shape: str = typer.Option("default", help="Workload shape: default | steady | bursty | diurnal | shrink | drift."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a deterministic, contract-conforming lake with real splits."""
    with reported(as_json):
        s = settings_for(lake)
        r = simulate_lake(s.lake, SimConfig(seed=seed, partitions=partitions, days=days, shape=shape))
    obj = {"lake": s.lake, "changes": r.changes, "partitions": r.partitions, "splits": r.splits,
           "start": r.start, "end": r.end}
    emit(obj, as_json, f"simulated {r.changes} changes, {r.partitions} partitions, {r.splits} real splits "
                       f"from {r.start.isoformat()} to {r.end.isoformat()} into {s.lake}")


@app.command()
def demo(
    lake: Optional[str] = LakeOpt,
    spark_master: str = typer.Option("local[2]", help="Master for the weave job's spark-submit."),
    as_json: bool = JsonOpt,
) -> None:
    """Simulate, run the real DAGs on it (Airflow 3 on SQLite), and print a summary."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    s = settings_for(lake)
    with reported(as_json):
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      transient=True, disable=as_json) as prog:
            task = prog.add_task("starting", total=None)
            res = run_demo(s.lake, spark_master=spark_master, progress=lambda m: prog.update(task, description=m))
    emit({"lake": res.lake, "simulation": res.sim, "runs": res.runs, "predictions": len(res.predictions),
          "weaves": len(res.weaves), "recovery": res.recovery, "elapsed_s": res.elapsed_s},
         as_json, render(res, settings_for(lake)))
