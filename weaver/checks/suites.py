"""Run a stage boundary's suite on exactly what the stage produced; raise when it fails."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from weaver.checks.frames import changelog_check_frame, prediction_check_frame, woven_check_frame
from weaver.checks.gx import validate
from weaver.core import objstore, storage
from weaver.core.errors import ExpectationFailedError
from weaver.core.settings import Settings
from weaver.log.lineage import Lineage


def check_predictions(predictions, lineage: Lineage, *, at: datetime | None = None, context: str = "") -> dict:
    """Run the `predictions` expectation suite on a run's rows (raises ExpectationFailedError).

    With `at`, an empty run still has to account for every partition active at `at`.
    """
    return validate("predictions", prediction_check_frame(predictions, lineage, at=at), context=context)


def check_changelog(settings: Settings, manifest: dict) -> dict:
    """Run the `changelog` GX suite on the staged batch; raise ExpectationFailedError on a bad batch."""
    staged = manifest["staged"]
    changes = objstore.read_parquet(staged, storage.options(staged))  # a local path or an s3:// object
    if changes.num_rows != manifest["changes"]:
        raise ExpectationFailedError(
            f"staged batch {manifest['staged']} holds {changes.num_rows} changes, extract reported {manifest['changes']}"
        )
    frame = changelog_check_frame(changes, Lineage.load(settings), manifest.get("expected_first_seq"))
    return validate("changelog", frame, context=f"interval {manifest['start']} .. {manifest['end']}")


def check_woven(settings: Settings) -> dict:
    """Run the `woven` GX suite (DESIGN §4.2 on sampled woven snapshots)."""
    return validate("woven", woven_check_frame(settings), context=f"woven tier {settings.woven}")


def check_run_predictions(settings: Settings, *, at: datetime) -> dict:
    """Run the `predictions` suite on the predictions of the run at `at` (the DAG's check task)."""
    preds = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                         filters=[("run_ts", "=", pa.scalar(at, storage.TS))])
    return check_predictions(preds, Lineage.load(settings), at=at, context=f"run {at.isoformat()}")
