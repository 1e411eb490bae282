"""spark-submit entry point: restore the whole table at --at into a new Delta table --out.

    spark-submit spark_jobs/restore_table.py --lake ./lake --at 2026-01-02T12:00:00Z --out ./restored
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone")
    ap.add_argument("--out", required=True, help="URI of the new Delta table")
    args = ap.parse_args(argv)

    from weaver.errors import WeaverError
    from weaver.pitr import restore_table
    from weaver.settings import load_settings, parse_timepoint
    from weaver.spark import get_spark

    try:
        settings = load_settings(lake=args.lake)
        summary = restore_table(get_spark(settings, "weaver-restore-table"), settings,
                                parse_timepoint(args.at), args.out)
    except WeaverError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 2
    print(json.dumps(summary, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
