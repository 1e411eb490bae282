"""The change log and its lineage: reading, seq at T, tails, contiguity and validation (DESIGN §4.5)."""

from weaver.log.changelog import (
    LOG_START_PROPERTY,
    ChangeLog,
    check_contiguous,
    history_end,
    last_change_ts,
    log_start_seq,
    read_changes,
    read_tail,
    resolve_seq,
    validate_segment,
)
from weaver.log.lineage import UNPREDICTABLE_REASONS, Lineage, Partition, first_splits, window_split
from weaver.log.validate import validate_changes

__all__ = ["LOG_START_PROPERTY", "UNPREDICTABLE_REASONS", "ChangeLog", "Lineage", "Partition", "check_contiguous", "first_splits", "history_end",
           "last_change_ts", "log_start_seq",
           "read_changes", "read_tail", "resolve_seq", "validate_changes", "validate_segment", "window_split"]
