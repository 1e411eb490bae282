"""spark-submit entry point: restore the whole table at --at into a new Delta table --out.

    spark-submit spark_jobs/restore_table.py --lake ./lake --at 2026-01-02T12:00:00Z --out ./restored
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone")
    ap.add_argument("--out", required=True, help="URI of the new Delta table")
    args = ap.parse_args(argv)

    from weaver.pitr import restore_table
    from weaver.core.time import parse_timepoint
    from weaver.core.spark import run_job

    return run_job("weaver-restore-table", lambda spark, settings: restore_table(
        spark, settings, parse_timepoint(args.at), args.out), settings_overrides={"lake": args.lake})


if __name__ == "__main__":
    sys.exit(main())
