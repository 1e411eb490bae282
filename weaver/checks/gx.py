"""Great Expectations at the stage boundaries: suites live as JSON in `expectations/`.

Each suite is a GX 1.x ExpectationSuite serialised as JSON. `validate` loads it, runs it on a
pandas frame in an ephemeral GX context and raises ExpectationFailedError (naming every failed
expectation) so the Airflow task fails and the run stops before the next stage. Checks that span
columns or tables (seq contiguity, "left + right = restore") are computed into a check frame by
the stage's own module; the suite then asserts that frame's columns.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path

from weaver.core.errors import ExpectationFailedError, InvalidParameterError
from weaver.core.settings import load_settings


@lru_cache(maxsize=None)
def _suite_spec(suite_name: str, directory: str) -> dict:
    path = Path(directory) / f"{suite_name}.json"
    if not path.is_file():
        raise InvalidParameterError(f"no expectation suite {suite_name!r} at {path}")
    return json.loads(path.read_text())


def load_suite(suite_name: str, directory: str | None = None):
    """The suite as a GX ExpectationSuite; refuses a suite whose expectations do not all parse."""
    import great_expectations as gx

    spec = _suite_spec(suite_name, directory or load_settings().expectations_dir)
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=spec.get("meta"))
    # GX logs and drops an invalid expectation; a suite that silently lost a check would pass bad data.
    if len(suite.expectations) != len(spec["expectations"]):
        raise InvalidParameterError(
            f"suite {suite_name!r}: only {len(suite.expectations)} of {len(spec['expectations'])} expectations are valid"
        )
    return suite


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no telemetry leaves the machine
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ds = ctx.data_sources.add_pandas("weaver")
    asset = ds.add_dataframe_asset("frame")
    return ctx, asset.add_batch_definition_whole_dataframe("whole")


def validate(suite_name: str, df, *, context: str = "", directory: str | None = None) -> dict:
    """Run suite `suite_name` on `df`; return a summary, or raise ExpectationFailedError."""
    _, batch_def = _context()
    suite = load_suite(suite_name, directory)
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite)
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            kw = {k: v for k, v in (cfg.kwargs or {}).items() if k not in ("batch_id",)}
            observed = (r.result or {}).get("unexpected_count", (r.result or {}).get("observed_value"))
            failed.append(f"{cfg.type}({kw}) -> {observed}")
    summary = {"suite": suite_name, "rows": int(len(df)), "evaluated": len(result.results),
               "failed": len(failed), "success": bool(result.success)}
    if not result.success:
        where = f" ({context})" if context else ""
        raise ExpectationFailedError(
            f"expectation suite {suite_name!r} failed{where} on {len(df)} rows: " + "; ".join(failed)
        )
    return summary
