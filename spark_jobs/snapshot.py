"""spark-submit entry point: take base snapshots as of --at (weaver.snapshots.take_snapshots).

    spark-submit spark_jobs/snapshot.py --lake ./lake --at 2026-01-03T00:00:00Z
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone")
    args = ap.parse_args(argv)

    from weaver.core.time import parse_timepoint
    from weaver.pitr import take_snapshots
    from weaver.core.spark import run_job

    return run_job("weaver-snapshot", lambda spark, settings: take_snapshots(
        spark, settings, parse_timepoint(args.at)), settings_overrides={"lake": args.lake})


if __name__ == "__main__":
    sys.exit(main())
