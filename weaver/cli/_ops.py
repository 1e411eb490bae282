"""CLI commands for operators: quarantine list|clear, maintain."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Optional

import typer
from rich.table import Table

from weaver.cli._app import JsonOpt, LakeOpt, app, emit, reported, settings_for, timepoint
from weaver.core.errors import InvalidParameterError
from weaver.maintain import maintain
from weaver.maintain.maintain import check_lake
from weaver.pipeline import clear_quarantine, list_quarantine

quarantine_app = typer.Typer(help="What a failed check held back: list it, or clear (delete) it.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")

KindOpt = typer.Option(None, "--kind", help="Only this kind: predictions | weave | changelog.")
IdOpt = typer.Option(None, "--id", help="Only this item (a run instant, a weave id or an interval id).")


def _kind(kind: Optional[str]) -> Optional[str]:
    """The --kind asked for; any other value is an InvalidParameterError (call it inside :func:`reported`)."""
    if kind is not None and kind not in ("predictions", "weave", "changelog"):
        raise InvalidParameterError(f"--kind {kind!r} is not one of predictions, weave, changelog")
    return kind


def _lake(lake: Optional[str]):
    """The settings of an existing lake: quarantine reads its table with ``missing_ok``, so a wrong
    --lake would list nothing and clear nothing with exit 0 (TableNotFoundError / CorruptTableError)."""
    s = settings_for(lake)
    check_lake(s)
    return s


@quarantine_app.command("list")
def quarantine_list(kind: Optional[str] = KindOpt, lake: Optional[str] = LakeOpt, as_json: bool = JsonOpt) -> None:
    """List quarantined items with the validation result that held them back."""
    with reported(as_json):
        k = _kind(kind)
        items = [r for r in list_quarantine(_lake(lake)) if k is None or r["item_kind"] == k]
    human = Table(title=f"quarantine ({len(items)} item(s))")
    for c in ("kind", "id", "run", "suite", "rows", "quarantined at", "result"):
        human.add_column(c)
    for r in items:
        res = r["result"]
        try:
            res = json.loads(res).get("error", res)
        except (ValueError, AttributeError):
            pass
        human.add_row(r["item_kind"], r["item_id"], str(r["run_ts"]), r["suite"], str(r["rows"]),
                      str(r["quarantined_at"]), str(res)[:200])
    emit({"items": items}, as_json, human)


@quarantine_app.command("clear")
def quarantine_clear(kind: Optional[str] = KindOpt, item_id: Optional[str] = IdOpt, lake: Optional[str] = LakeOpt,
                     as_json: bool = JsonOpt) -> None:
    """Delete quarantined data and its records (rerun the DAG run to produce and check it again)."""
    with reported(as_json):
        k = _kind(kind)
        r = clear_quarantine(_lake(lake), kind=k, item_id=item_id)
    emit(r, as_json, f"cleared {r['cleared']} item(s): {r['prediction_rows_deleted']} staged prediction row(s), "
                     f"{r['weaves_deleted']} weave(s) with {r['woven_rows_deleted']} woven row(s) deleted")


@app.command("maintain")
def maintain_cmd(
    now: Optional[str] = typer.Option(None, "--now", help="Instant retention is measured to (default: now)."),
    compact: bool = typer.Option(True, "--compact/--no-compact", help="Compact and checkpoint the MERGE tables."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Snapshot vacuum (recovery window), woven vacuum, compaction and checkpoints, old calibration maps: one pass."""
    with reported(as_json):
        t = timepoint(now, "--now") if now else datetime.now(timezone.utc)
        r = maintain(settings_for(lake), now=t, compact=compact)
    human = Table(title=f"maintenance as of {t.isoformat()}", show_header=False)
    snaps = r.get("snapshots") or {}
    human.add_row("snapshots expired / kept", f"{snaps.get('snapshots_expired', 0)} / {snaps.get('snapshots_kept', 0)}")
    human.add_row("log rows deleted", str(snaps.get("log_rows_deleted", 0)))
    human.add_row("woven sequences expired", str(r["woven"]["expired_sequences"]))
    human.add_row("woven rows deleted", str(r["woven"]["rows_deleted"]))
    for name, c in (r.get("compacted") or {}).items():
        human.add_row(f"{name}: files", f"{c['files_before']} -> {c['files_after']} (checkpoint at v{c['version_after']})")
    cal = r["calibration"]
    human.add_row("calibration maps deleted / kept", f"{cal['maps_deleted']} / {cal['maps_kept']}")
    human.add_row("elapsed", f"{r['elapsed_s']} s")
    emit(r, as_json, human)
