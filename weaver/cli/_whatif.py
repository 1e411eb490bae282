"""CLI commands: `weaver whatif weave|impact|advise|report` (what-if analysis, issue 13)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from weaver.cli._app import JsonOpt, LakeOpt, app, console, emit, reported, settings_for, timepoint
from weaver.core.spark import get_spark
from weaver.whatif import KEY_BY, plan_whatif, whatif_weave

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
    t = timepoint(at)
    u = timepoint(until, "--until") if until else None
    if key_by not in KEY_BY:
        raise typer.BadParameter(f"{key_by!r} is not one of {', '.join(KEY_BY)}", param_hint="--key-by")
    with reported(as_json):
        s = settings_for(lake, woven_cadence=cadence)
        plan_whatif(s, partition, t, split_key=split_key, until=u, key_by=key_by)  # named errors before Spark starts
        with console.status("weaving the what-if with Spark..."):
            r = whatif_weave(get_spark(s, "weaver-whatif"), s, partition, t, split_key=split_key, until=u,
                             key_by=key_by)
    human = Table(title=f"what if {partition} had split at {t.isoformat()}", show_header=False)
    for k in ("weave_id", "split_key", "key_by", "child_ids", "until", "timepoints_written", "rows_written",
              "version", "existing"):
        human.add_row(k, str(r.get(k)))
    emit(r, as_json, human)
