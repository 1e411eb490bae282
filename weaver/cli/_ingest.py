"""CLI command: ingest (bring your own change log)."""

from __future__ import annotations

import re
from typing import Optional

import typer

from weaver.cli._app import JsonOpt, LakeOpt, app, emit, reported, settings_for
from weaver.core.errors import InvalidParameterError
from weaver.ingest.sources import SourceSpec, adapter_for, partitioning_for
from weaver.ingest.writer import ingest as run


def whole_number(value: Optional[str], name: str, minimum: int = 0) -> Optional[int]:
    """Option `name`'s integer (None when not given). Read here, not by Click, so that a bad value is
    an InvalidParameterError inside :func:`reported`: under ``--json`` one JSON object, exit 2."""
    if value is None:
        return None
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", value.strip()):
        raise InvalidParameterError(f"{name} {value!r} is not a whole number")
    n = int(value)
    if n < minimum:
        raise InvalidParameterError(f"{name} {value!r} must be at least {minimum}")
    return n


@app.command()
def ingest(
    source: str = typer.Option(..., "--source", help="dynamodb-export | debezium | delta-cdf"),
    input: str = typer.Option(..., "--input", help="Export folder (…/AWSDynamoDB/<ExportId>), Debezium events file, "
                                                   "or Delta table URI."),
    keys: str = typer.Option(..., "--keys", help="Key attributes, hash key first: 'pk' or 'pk,sk'."),
    name: Optional[str] = typer.Option(None, "--name", help="Source name in the lake (default: the table's name)."),
    starting_version: Optional[str] = typer.Option(None, help="delta-cdf: first version (default: after the watermark)."),
    ending_version: Optional[str] = typer.Option(None, help="delta-cdf: last version (default: the latest)."),
    partitions: str = typer.Option("1", help="A NEW lake's initial partitions: N equal ranges of the key space."),
    key_type: str = typer.Option("S", help="Type of the hash key for equal ranges: S, N, B or T."),
    boundaries: Optional[str] = typer.Option(None, help="A NEW lake's initial boundaries: JSON list of key values."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Ingest one input of a source into the change log, exactly once, advancing its watermark."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with reported(as_json):
        spec = SourceSpec(source=source, input=input, keys=keys, name=name,
                          starting_version=whole_number(starting_version, "--starting-version"),
                          ending_version=whole_number(ending_version, "--ending-version"),
                          partitions=whole_number(partitions, "--partitions", minimum=1), key_type=key_type,
                          boundaries=boundaries)
        s = settings_for(lake)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed} records"), TimeElapsedColumn(), transient=True,
                      disable=as_json) as prog:
            task = prog.add_task(f"reading {source}", total=None)
            res = run(s, adapter_for(spec), partitioning=partitioning_for(spec),
                      progress=lambda n: prog.advance(task, n))
    obj = {"lake": s.lake, **res.to_json()}
    seqs = f" (seq {res.first_seq}..{res.last_seq})" if res.changes_written else ""
    emit(obj, as_json, f"{res.source}: read {res.records_read} records, wrote {res.changes_written} changes{seqs}, "
                       f"skipped {res.duplicates_skipped} duplicates; "
                       f"watermark {res.old_watermark or 'none'} -> {res.new_watermark}")
