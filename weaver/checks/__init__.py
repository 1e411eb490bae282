"""Data quality at the stage boundaries: check frames and their Great Expectations suites."""

from weaver.checks.frames import CHECK_COLUMNS, changelog_check_frame, prediction_check_frame, woven_check_frame
from weaver.checks.gx import load_suite, validate
from weaver.checks.ingest import check_ingested, ingest_check_frame
from weaver.checks.suites import check_changelog, check_predictions, check_run_predictions, check_woven

__all__ = ["CHECK_COLUMNS", "changelog_check_frame", "check_changelog", "check_ingested", "check_predictions",
           "check_run_predictions", "check_woven", "ingest_check_frame", "load_suite", "prediction_check_frame", "validate",
           "woven_check_frame"]
