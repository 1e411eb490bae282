"""Weaving: shadow snapshot sequences for likely splits, their catalog, lifecycle and file index."""

from weaver.weave.catalog import catalog_rows, find_weave, read_woven_catalog, woven_as_of, write_woven_catalog
from weaver.weave.files import WovenTable
from weaver.weave.lifecycle import reconcile, vacuum_woven
from weaver.weave.plan import (MAX_TIMEPOINTS, Sequence, check_timepoints, plan_timepoints, select_predictions,
                               sequence_from_row, sequences_for)
from weaver.weave.run import planned_engine, weave, weave_sequences

__all__ = ["MAX_TIMEPOINTS", "Sequence", "WovenTable", "catalog_rows", "check_timepoints", "find_weave", "plan_timepoints",
           "planned_engine", "read_woven_catalog",
           "reconcile", "select_predictions", "sequence_from_row", "sequences_for", "vacuum_woven", "weave",
           "weave_sequences", "woven_as_of", "write_woven_catalog"]
