"""The Airflow Assets the DAGs produce and consume (light: imported when the DAG files are parsed).

`temporal_weaver` emits both after a run whose checks all passed; consumers (`weaver_backtest`,
later ones) are scheduled on them. Each event's ``extra`` carries the run instant and lake.
"""

from __future__ import annotations

from airflow.sdk import Asset

# `x-` schemes are taken as they are by Airflow (no provider normalises them).
PREDICTIONS = Asset(name="weaver_predictions", uri="x-weaver://lake/predictions")
WOVEN = Asset(name="weaver_woven_tier", uri="x-weaver://lake/woven")
