"""One task of the DAG against a simulated lake, for peak-RSS runs under `/usr/bin/time -v`.

    python bench/forecast_mem.py metrics|forecast LAKE END_ISO

`metrics` is the DAG's metrics task for the interval ending at END (resuming from the
checkpoints), `forecast` its forecast task at END (path model, staged), as bench/scale.py
`cycle_stage` calls them. Code is whatever PYTHONPATH puts first (a branch, or a base commit).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from weaver.core.settings import settings_from_params

PARAMS = {"window": "24h", "confidence_threshold": 0.75, "model": "path", "size_threshold": None,
          "write_threshold": None, "weave_engine": None}  # the DAG's defaults (bench/scale.py)


def main() -> None:
    stage, lake, end = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
    s = settings_from_params({**PARAMS, "lake": lake})
    if stage == "metrics":
        from weaver.pipeline import resume_point
        from weaver.predict import build_metrics

        out = build_metrics(s, start=resume_point(s, end), end=end)
    elif stage == "forecast":
        from weaver.predict import predict

        t = predict(s, at=end, model=PARAMS["model"], stage=True)
        out = {"rows": t.num_rows, "batch": getattr(s, "forecast_batch_partitions", None),
               "skips": sum(r is not None for r in t.column("skip_reason").to_pylist())}
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
