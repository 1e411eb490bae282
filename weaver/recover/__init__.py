"""Recovery (DESIGN §4.3): woven snapshot first, the standard PITR path otherwise; same rows."""

from weaver.recover.recover import MODES, RecoveryResult, default_rollback_uri, recover
from weaver.recover.target import Target, resolve
from weaver.recover.woven import (
    WovenSnapshot,
    find_woven_snapshot,
    read_woven_rows,
    woven_snapshot,
    woven_snapshot_as_of,
)

__all__ = ["MODES", "RecoveryResult", "Target", "WovenSnapshot", "default_rollback_uri", "find_woven_snapshot",
           "read_woven_rows", "recover", "resolve", "woven_snapshot", "woven_snapshot_as_of"]
