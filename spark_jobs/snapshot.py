"""spark-submit entry point: take base snapshots as of --at (weaver.snapshots.take_snapshots).

    spark-submit spark_jobs/snapshot.py --lake ./lake --at 2026-01-03T00:00:00Z
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone")
    args = ap.parse_args(argv)

    from weaver.errors import WeaverError
    from weaver.settings import load_settings, parse_timepoint
    from weaver.snapshots import take_snapshots
    from weaver.spark import get_spark

    try:
        settings = load_settings(lake=args.lake)
        summary = take_snapshots(get_spark(settings, "weaver-snapshot"), settings, parse_timepoint(args.at))
    except WeaverError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 2
    print(json.dumps(summary, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
