"""Choosing an adapter from a source spec (CLI flags, or the DAG's configured source)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from weaver.core.errors import InvalidParameterError
from weaver.ingest.debezium import DebeziumFile
from weaver.ingest.delta_cdf import DeltaCDF
from weaver.ingest.dynamodb import DynamoDBExport
from weaver.ingest.errors import MalformedInputError
from weaver.ingest.keys import boundaries_from_values
from weaver.ingest.values import json_line
from weaver.ingest.writer import Partitioning, ingest

KINDS = ("dynamodb-export", "debezium", "delta-cdf")


@dataclass(frozen=True)
class SourceSpec:
    """What to ingest: the source kind, its input, its key attributes (hash[,range]) and a name."""

    source: str
    input: str
    keys: str
    name: Optional[str] = None
    starting_version: Optional[int] = None
    ending_version: Optional[int] = None
    partitions: int = 1
    key_type: str = "S"
    boundaries: Optional[str] = None  # JSON file of initial boundaries (a new lake only)

    def __post_init__(self) -> None:
        if self.source not in KINDS:
            raise InvalidParameterError(f"--source {self.source!r}: expected one of {', '.join(KINDS)}")
        if not self.keys:
            raise InvalidParameterError("--keys is required: the table's key attributes, e.g. 'pk' or 'pk,sk'")

    def to_json(self) -> dict:
        return asdict(self)


def adapter_for(spec: SourceSpec):
    """The adapter reading `spec.input`."""
    if spec.source == "dynamodb-export":
        return DynamoDBExport(spec.input, keys=spec.keys, name=spec.name)
    if spec.source == "debezium":
        return DebeziumFile(spec.input, keys=spec.keys, name=spec.name)
    return DeltaCDF(spec.input, keys=spec.keys, name=spec.name, starting_version=spec.starting_version,
                    ending_version=spec.ending_version)


def partitioning_for(spec: SourceSpec):
    """The initial range partitioning a new lake gets from `spec`."""
    if spec.boundaries:
        p = Path(spec.boundaries)
        try:
            values = json_line(p.read_bytes(), f"--boundaries {p}")
        except OSError as exc:
            raise InvalidParameterError(f"--boundaries {p}: not a readable JSON list ({exc})") from exc
        if not isinstance(values, list):
            raise InvalidParameterError(f"--boundaries {p}: expected a JSON list of key values")
        try:
            return Partitioning(boundaries=tuple(boundaries_from_values(values)))
        except MalformedInputError as exc:  # a DynamoDB-typed value that is not one ({"M": []})
            raise MalformedInputError(f"--boundaries {p}: {str(exc).removeprefix('boundaries file: ')}") from exc
    return Partitioning(partitions=spec.partitions, tag=spec.key_type)


def configured_source(env: dict | None = None, value: str | dict | None = None) -> Optional[SourceSpec]:
    """The source the `temporal_weaver` DAG ingests: a JSON spec (or a path to one) given as the
    DAG param `ingest_source` or in $WEAVER_INGEST_SOURCE; None when no source is configured."""
    raw = value if value not in (None, "", {}) else (env if env is not None else os.environ).get("WEAVER_INGEST_SOURCE")
    if not raw:
        return None
    if isinstance(raw, str):
        try:
            text = Path(raw).read_text() if not raw.lstrip().startswith("{") and Path(raw).is_file() else raw
            raw = json.loads(text)
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON
            raise InvalidParameterError(f"ingest source {raw[:80]!r} is not a JSON object or a file of one "
                                        f"({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidParameterError("ingest source must be a JSON object like "
                                    '{"source": "delta-cdf", "input": "/data/orders", "keys": "id"}')
    try:
        return SourceSpec(**raw)
    except TypeError as exc:
        raise InvalidParameterError(f"ingest source: {exc}") from exc


def ingest_configured(settings, value: str | dict | None = None) -> dict:
    """Ingest the configured source once (the DAG's `ingest` task); {"configured": False} when none."""
    spec = configured_source(value=value)
    if spec is None:
        return {"configured": False}
    res = ingest(settings, adapter_for(spec), partitioning=partitioning_for(spec))
    return {"configured": True, **res.to_json()}
