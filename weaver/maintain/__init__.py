"""Maintenance on a schedule: retention of both tiers, compaction and checkpoints of the MERGE tables."""

from weaver.maintain.maintain import MERGE_TABLES, compact_tables, maintain

__all__ = ["MERGE_TABLES", "compact_tables", "maintain"]
