"""What a partition id names for recovery: a real partition, or a woven child cut from one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from weaver.core.ids import WOVEN_CHILD_RE
from weaver.core.settings import Settings
from weaver.core.errors import InvalidTimepointError, UnknownWeaveError
from weaver.log.lineage import Lineage
from weaver.weave import catalog_rows, read_woven_catalog


@dataclass(frozen=True)
class Target:
    """What a partition id names: a key range, the real partition containing it, its weave."""

    partition_id: str
    source_partition_id: str  # the real partition this id is (or is cut from)
    key_lo: str
    key_hi: str | None
    weave_id: str | None = None  # set for a woven child
    side: str | None = None
    split_key: str | None = None
    split_ts: datetime | None = None

    @property
    def is_woven_child(self) -> bool:
        return self.weave_id is not None

    @property
    def exists_from(self) -> datetime | None:
        """The first instant this id names anything: a woven child's split_ts (None: a real partition)."""
        return self.split_ts if self.is_woven_child else None

    def check_exists_at(self, at: datetime) -> None:
        """InvalidTimepointError for a woven child before its weave's split_ts (docs/api.md,
        "Definition"): the one rule recovery and the woven-snapshots endpoint both apply."""
        if self.is_woven_child and at < self.split_ts:
            raise InvalidTimepointError(
                f"woven child {self.partition_id!r} exists only from its split at {self.split_ts.isoformat()}; "
                f"ask for it at or after that instant, or for {self.source_partition_id!r}")


def resolve(settings: Settings, partition_id: str, *, lineage: Lineage | None = None,
            catalog: pa.Table | None = None) -> Target:
    """Map a partition id (real or woven child) to its key range, validated against the catalogs."""
    lineage = lineage if lineage is not None else Lineage.load(settings)
    if isinstance(partition_id, str):
        m = WOVEN_CHILD_RE.match(partition_id)
    else:
        m = None
    if m is None:
        p = lineage.get(partition_id)  # UnknownPartitionError for anything else
        return Target(p.partition_id, p.partition_id, p.key_lo, p.key_hi)
    catalog = catalog if catalog is not None else read_woven_catalog(settings)
    source = m.group("source")
    hits = [r for r in catalog_rows(catalog)
            if r["source_partition_id"] == source and r["weave_id"].startswith(m.group("wid"))]
    if not hits:
        raise UnknownWeaveError(
            f"{partition_id!r} names weave {m.group('wid')!r} of {source!r}, which is not in woven_catalog; "
            "list woven children with GET /v1/partitions?kind=woven")
    row = hits[0]
    src = lineage.get(source)
    side = m.group("side")
    k = row["split_key"]
    if not (src.key_lo < k and (src.key_hi is None or k < src.key_hi)):
        raise UnknownWeaveError(f"weave {row['weave_id']} splits {source!r} at {k!r}, outside its range")
    lo, hi = (src.key_lo, k) if side == "L" else (k, src.key_hi)
    return Target(partition_id, source, lo, hi, row["weave_id"], side, k, row["split_ts"])
