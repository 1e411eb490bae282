"""spark-submit entry point: weave shadow snapshot sequences (weaver.weaving.weave).

    spark-submit spark_jobs/weave.py --lake ./lake --at 2026-01-03T00:00:00Z [--confidence-threshold 0.75]
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--woven-root", default=None, help="Woven tier root (default <lake>/woven)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone: weave data up to here")
    ap.add_argument("--confidence-threshold", type=float, default=None)
    ap.add_argument("--run-ts", default=None, help="Weave the predictions of this run (default: latest <= --at)")
    args = ap.parse_args(argv)

    from weaver.errors import WeaverError
    from weaver.settings import load_settings
    from weaver.spark import get_spark
    from weaver.weaving import weave

    try:
        settings = load_settings(lake=args.lake, woven_root=args.woven_root)
        spark = get_spark(settings, "weaver-weave")
        summary = weave(spark, settings, at=args.at, confidence_threshold=args.confidence_threshold,
                        run_ts=args.run_ts)
    except WeaverError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 2
    print(json.dumps(summary, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
