"""The point-in-time-restore framework: base snapshots, restore planning, restore, retention."""

from weaver.pitr.catalog import Piece, catalog_index, latest_snapshot, plan_restore, read_snapshot_catalog
from weaver.pitr.restore import (RestoreResult, check_output_file, check_restore_out, read_snapshot, restore_id_for, restore_many,
                                 restore_partition, restore_series, restore_table, write_restore)
from weaver.pitr.retention import retention_plan, vacuum
from weaver.pitr.snapshots import (
    plan_snapshots,
    store_snapshot_data,
    take_snapshots,
    validate_for_snapshot,
    with_retry,
)

__all__ = ["Piece", "RestoreResult", "catalog_index", "check_output_file", "check_restore_out", "latest_snapshot", "plan_restore", "plan_snapshots",
           "read_snapshot", "read_snapshot_catalog", "restore_id_for", "restore_many", "restore_partition", "restore_series", "restore_table",
           "retention_plan", "store_snapshot_data", "take_snapshots", "vacuum", "validate_for_snapshot", "with_retry", "write_restore"]
