"""spark-submit entry point: weave shadow snapshot sequences (weaver.weaving.weave).

    spark-submit --master spark://127.0.0.1:7077 --jars <delta jars> spark_jobs/weave.py \
        --lake ./lake --at 2026-01-03T00:00:00Z [--woven-root URI] [--confidence-threshold 0.75] [--run-ts ISO] \
        [--model path]

The run's weaves land `staged`; the DAG's check_woven task checks and publishes them. The engine
is chosen per run (weaver.weave.engine): on a cluster master Spark; in local mode Arrow (in this
driver process) below settings.weave_spark_min_changes, unless $WEAVER_WEAVE_ENGINE names one.
Run with plain `python` it uses settings.spark_master (local[*] unless $WEAVER_SPARK_MASTER).
The last line printed is one JSON object: the run's summary, or {"error", "message"} (exit 2).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="Lake root (local path or object-store URI)")
    ap.add_argument("--woven-root", default=None, help="Woven tier root (default <lake>/woven)")
    ap.add_argument("--at", required=True, help="ISO-8601 instant with a timezone: weave data up to here")
    ap.add_argument("--confidence-threshold", type=float, default=None,
                    help="Weave predictions with probability >= this (default settings: 0.75)")
    ap.add_argument("--run-ts", default=None, help="Weave the predictions of this run (default: latest <= --at)")
    ap.add_argument("--model", default=None,
                    help="Weave this model's predictions only (default: the default model, path); the DAG passes "
                         "the model its forecast task used")
    ap.add_argument("--engine", choices=["auto", "arrow", "spark"], default=None,
                    help="Weaving engine (default settings.weave_engine: auto); the DAG passes spark")
    args = ap.parse_args(argv)

    from weaver.core.spark import run_job
    from weaver.weave import weave

    return run_job("weaver-weave", lambda spark, settings: weave(
        spark, settings, at=args.at, confidence_threshold=args.confidence_threshold, run_ts=args.run_ts,
        model=args.model, stage=True),
        settings_overrides={"lake": args.lake, "woven_root": args.woven_root, "weave_engine": args.engine})


if __name__ == "__main__":
    sys.exit(main())
