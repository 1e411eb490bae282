"""Write-audit-publish: a stage's output is checked where it was staged, and only a pass publishes it.

- Predictions are staged in ``predictions_staged`` (status ``staged``) keyed on prediction_id;
  :func:`gate_predictions` runs the `predictions` suite on exactly the staged rows of one run and
  MERGEs them into ``predictions`` on a pass. Readers of ``predictions`` (weaving, the API,
  backtests) never see a staged row.
- Weaves land in ``woven_catalog`` with status ``staged``; :func:`gate_weaves` runs the `woven`
  suite on exactly the staged weave ids and flips them to ``active`` on a pass. Recovery, the API
  and weaving skip ``staged`` and ``quarantined`` weaves (``weaver.core.ids.UNUSABLE``).
- A failure marks the data ``quarantined``, stores the validation result in the ``quarantine``
  table beside it, and raises ExpectationFailedError: the run fails. For predictions nothing of
  the run is published; for weaves only the weaves named in the failing rows are held back and
  the other staged weaves are published before the error is raised.
  ``weaver quarantine clear`` deletes quarantined data (a rerun of the run re-produces and
  re-checks it).

Every step is an idempotent commit keyed on deterministic ids, so a crash between two of them is
finished by rerunning the same step.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from weaver.checks import check_changelog, check_predictions, validate, woven_check_frame
from weaver.core import faults, storage
from weaver.core.errors import ContractViolation, ExpectationFailedError
from weaver.core.ids import ACTIVE, QUARANTINED, STAGED
from weaver.core.retry import retry_commit
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint
from weaver.log.lineage import Lineage
from weaver.weave import read_woven_catalog, write_woven_catalog
from weaver.weave.catalog import delete_weaves

PREDICTIONS_KIND, WEAVE_KIND, CHANGELOG_KIND = "predictions", "weave", "changelog"


def staged_predictions(settings: Settings, *, run_ts: datetime | None = None,
                       status: str | None = STAGED) -> pa.Table:
    """Rows of ``predictions_staged`` (of one run, of one audit status), with their status column."""
    filters = [("run_ts", "=", pa.scalar(run_ts, storage.TS))] if run_ts is not None else None
    t = storage.read(storage.uri_for(settings, storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED,
                     filters=filters, missing_ok=True)
    if status is not None:
        t = t.filter(pc.equal(t.column("status"), status))  # in memory: MERGE writes string_view
    return t


def gate_predictions(settings: Settings, *, at: datetime) -> dict:
    """Audit the staged predictions of the run at `at`; publish them on a pass, else quarantine them.

    Returns the suite's summary plus ``published`` (rows). Raises ExpectationFailedError after
    quarantining; nothing reaches ``predictions`` then.
    """
    at = parse_timepoint(at)
    staged = staged_predictions(settings, run_ts=at)
    rows = staged.drop_columns(["status"])
    faults.point("predict.before_check")
    try:
        summary = check_predictions(_as_published(settings, rows, at), Lineage.load(settings), at=at,
                                    context=f"staged run {at.isoformat()}")
    except ExpectationFailedError as exc:
        if staged.num_rows:
            held = staged.set_column(staged.schema.get_field_index("status"), "status",
                                     pa.array([QUARANTINED] * staged.num_rows, pa.string()))
            storage.merge(storage.uri_for(settings, storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED, held,
                          keys=["prediction_id"])
        record_quarantine(settings, PREDICTIONS_KIND, at.isoformat(), run_ts=at, suite="predictions",
                          result=str(exc), rows=staged.num_rows)
        raise
    if rows.num_rows:
        storage.merge(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS, rows, keys=["prediction_id"])
        faults.point("predict.after_publish")
        _delete_staged(settings, rows.column("prediction_id").to_pylist())
    clear_record(settings, PREDICTIONS_KIND, at.isoformat())  # a rerun that passes ends an old quarantine
    return {**summary, "published": rows.num_rows}


def checked_backtest(settings: Settings, **kwargs) -> dict:
    """`weaver.predict.backtest` whose backfilled predictions pass the `predictions` suite first.

    Each run's rows are validated as a live run's are (one row per partition active at the run,
    probabilities in [0, 1], ...) before anything is written; a failure raises
    ExpectationFailedError and the backfill writes no prediction and no score. Rows
    ``predictions`` already holds are never replaced (see `weaver.predict.backtest`).
    """
    from weaver.predict import backtest

    lineage = Lineage.load(settings)

    def check(rows: pa.Table, at: datetime) -> None:
        check_predictions(rows, lineage, at=at, context=f"backfilled run {at.isoformat()}")

    return backtest(settings, check=check, **kwargs)


def _as_published(settings: Settings, rows: pa.Table, at: datetime) -> pa.Table:
    """The run at `at` as ``predictions`` will hold it once `rows` are published: its published rows
    that `rows` do not replace, plus `rows`. A rerun stages only what changed, so the suite's
    whole-run expectations (one row per active partition) must see the rest of the run too."""
    published = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                             filters=[("run_ts", "=", pa.scalar(at, storage.TS))], missing_ok=True)
    if not published.num_rows:
        return rows
    replaced = pc.is_in(published.column("prediction_id"), value_set=rows.column("prediction_id"))
    rest = published.filter(pc.invert(replaced)).select(rows.column_names).cast(rows.schema)
    return pa.concat_tables([rest, rows])


def gate_weaves(settings: Settings, *, sample: int | None = 3) -> dict:
    """Audit every staged weave with the `woven` suite; flip those that pass to ``active`` and those
    with failing rows to ``quarantined`` with the result stored. Staged weaves a crashed run left
    behind are audited too.

    A failure is charged to the weaves named in the failing rows of the check frame only: the
    others staged with them are published (one catalog MERGE for both), and then the
    ExpectationFailedError is raised, naming the quarantined and the published ids, so the run
    still fails. Only a failure that names no weave quarantines every staged one. A weave that
    passes ends an old quarantine record of its own (a re-weave after a quarantine).
    """
    catalog = read_woven_catalog(settings)
    staged = [r for r in catalog.to_pylist() if r["status"] == STAGED]
    ids = [r["weave_id"] for r in staged]
    try:
        frame = woven_check_frame(settings, weave_ids=ids, sample=sample)
    except ContractViolation as exc:
        # The standard restore the check compares with refused the change log itself (a change
        # outside its partition's range, a gap in seq): no staged weave can be vouched for, so every
        # one is quarantined with the error - left `staged`, a rerun would only fail again, and
        # `weaver quarantine list` would not show what holds them back.
        now = datetime.now(timezone.utc)
        for r in staged:
            record_quarantine(settings, WEAVE_KIND, r["weave_id"], run_ts=r["created_at"], suite="woven",
                              result=json.dumps({"error": f"{type(exc).__name__}: {exc}"}), rows=0)
        write_woven_catalog(settings, [{**r, "status": QUARANTINED, "updated_at": now} for r in staged])
        raise
    faults.point("weave.before_check")
    now = datetime.now(timezone.utc)
    try:
        summary = validate("woven", frame, context=f"{len(ids)} staged weave(s) in {settings.woven}")
    except ExpectationFailedError as exc:
        bad = frame[(frame.drop(columns=["weave_id", "timepoint", "as_of_seq", "rows_left", "rows_right",
                                         "rows_restore"]) != 0).any(axis=1)]
        detail = json.loads(bad.to_json(orient="records", date_format="iso"))
        failing = {d["weave_id"] for d in detail} & set(ids) or set(ids)
        held = [r for r in staged if r["weave_id"] in failing]
        good = [r for r in staged if r["weave_id"] not in failing]
        for r in held:
            mine = [d for d in detail if d["weave_id"] == r["weave_id"]]
            record_quarantine(settings, WEAVE_KIND, r["weave_id"], run_ts=r["created_at"], suite="woven",
                              result=json.dumps({"error": str(exc), "failed_rows": mine}), rows=len(mine))
        write_woven_catalog(settings, [{**r, "status": QUARANTINED, "updated_at": now} for r in held]
                            + [{**r, "status": ACTIVE, "updated_at": now} for r in good])
        _clear_weave_records(settings, [r["weave_id"] for r in good])
        raise ExpectationFailedError(
            f"{exc}; quarantined {len(held)} weave(s) {sorted(r['weave_id'] for r in held)}, published the other "
            f"{len(good)} {sorted(r['weave_id'] for r in good)}") from exc
    write_woven_catalog(settings, [{**r, "status": ACTIVE, "updated_at": now} for r in staged])
    _clear_weave_records(settings, ids)  # a re-weave that passes ends an old quarantine
    return {**summary, "published": ids}


def _clear_weave_records(settings: Settings, weave_ids: list[str]) -> None:
    """Drop the quarantine records of these weaves (one read of the table; a no-op when none)."""
    held = {r["item_id"] for r in list_quarantine(settings) if r["item_kind"] == WEAVE_KIND} if weave_ids else set()
    for w in sorted(held & set(weave_ids)):
        clear_record(settings, WEAVE_KIND, w)


def gate_changelog(settings: Settings, manifest: dict) -> dict:
    """The `changelog` suite on an extracted batch; a failure is recorded in ``quarantine`` (the
    batch stays staged under ``_weaver/staging``) and raised, so nothing downstream runs."""
    try:
        return check_changelog(settings, manifest)
    except ExpectationFailedError as exc:
        record_quarantine(settings, CHANGELOG_KIND, manifest["interval_id"],
                          run_ts=parse_timepoint(manifest["end"]), suite="changelog", result=str(exc),
                          rows=int(manifest.get("changes") or 0))
        raise


# --- the quarantine table ---------------------------------------------------------------------------
def record_quarantine(settings: Settings, kind: str, item_id: str, *, run_ts: datetime | None, suite: str,
                      result: str, rows: int) -> None:
    """Store why `item_id` was held back (MERGE keyed on kind + id: a rerun's failure replaces it)."""
    row = {"item_kind": kind, "item_id": item_id, "run_ts": run_ts, "suite": suite, "result": result,
           "rows": rows, "quarantined_at": datetime.now(timezone.utc)}
    storage.merge(storage.uri_for(settings, storage.QUARANTINE), storage.QUARANTINE,
                  pa.Table.from_pylist([row], schema=storage.SCHEMAS[storage.QUARANTINE]), keys=["item_kind", "item_id"])


def list_quarantine(settings: Settings) -> list[dict]:
    """Every quarantined item with its validation result, oldest first."""
    t = storage.read(storage.uri_for(settings, storage.QUARANTINE), storage.QUARANTINE, missing_ok=True)
    return sorted(t.to_pylist(), key=lambda r: (r["quarantined_at"], r["item_kind"], r["item_id"]))


def clear_quarantine(settings: Settings, *, kind: str | None = None, item_id: str | None = None) -> dict:
    """Delete quarantined data (all, or one kind / one item) and then its quarantine records.

    Predictions: their ``predictions_staged`` rows; weaves: their ``woven_snapshots`` rows and
    catalog rows (a rerun of the run weaves them again, and the check runs again); a change-log
    batch: only the record (the source must be fixed and the interval rerun). Data goes before the
    record, so a crash in between leaves a record that the next clear finishes.
    """
    items = [r for r in list_quarantine(settings)
             if (kind is None or r["item_kind"] == kind) and (item_id is None or r["item_id"] == item_id)]
    preds = [r for r in items if r["item_kind"] == PREDICTIONS_KIND]
    weaves = [r["item_id"] for r in items if r["item_kind"] == WEAVE_KIND]
    pred_rows = 0
    if preds:
        held = staged_predictions(settings, status=QUARANTINED)
        runs = {parse_timepoint(r["item_id"]) for r in preds}
        ids = [i for i, ts in zip(held.column("prediction_id").to_pylist(), held.column("run_ts").to_pylist())
               if ts in runs]
        _delete_staged(settings, ids)
        pred_rows = len(ids)
    woven_rows = 0
    if weaves:
        woven_rows = _delete_woven_rows(settings, weaves)
        delete_weaves(settings, weaves)
    for r in items:
        clear_record(settings, r["item_kind"], r["item_id"])
    return {"cleared": len(items), "prediction_rows_deleted": pred_rows, "weaves_deleted": len(weaves),
            "woven_rows_deleted": woven_rows, "items": [{"kind": r["item_kind"], "id": r["item_id"]} for r in items]}


def clear_record(settings: Settings, kind: str, item_id: str) -> None:
    """Drop one quarantine record (no-op when absent)."""
    uri = storage.uri_for(settings, storage.QUARANTINE)
    if not storage.is_table(uri):
        return
    present = [r for r in list_quarantine(settings) if r["item_kind"] == kind and r["item_id"] == item_id]
    if present:
        storage.overwrite(uri, storage.QUARANTINE, storage.empty(storage.QUARANTINE),
                          predicate=f"item_kind = '{_sql(kind)}' AND item_id = '{_sql(item_id)}'")


def _delete_staged(settings: Settings, prediction_ids: list[str]) -> None:
    uri = storage.uri_for(settings, storage.PREDICTIONS_STAGED)
    if not prediction_ids or not storage.is_table(uri):
        return
    pred = "prediction_id IN (" + ", ".join(f"'{_sql(i)}'" for i in sorted(set(prediction_ids))) + ")"
    storage.overwrite(uri, storage.PREDICTIONS_STAGED, storage.empty(storage.PREDICTIONS_STAGED), predicate=pred)


def _delete_woven_rows(settings: Settings, weave_ids: list[str]) -> int:
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    if not storage.is_table(uri):
        return 0
    ids = sorted(set(weave_ids))
    n = storage.dataset(storage.open_table(uri)).to_table(
        columns=["weave_id"], filter=pc.field("weave_id").isin(ids)).num_rows
    if n:
        from deltalake import WriterProperties

        expr = "weave_id IN (" + ", ".join(f"'{_sql(w)}'" for w in ids) + ")"
        retry_commit(lambda: storage.open_table(uri).delete(expr, writer_properties=WriterProperties(compression="ZSTD")),
                     what="delete quarantined woven rows")
    return n


def _sql(s: str) -> str:
    return s.replace("'", "''")
