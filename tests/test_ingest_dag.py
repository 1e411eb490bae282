"""`temporal_weaver` with a configured source, through `airflow dags test`: the head of the run
ingests, checks the batch (GX) and, with the source behind the run's interval, fails naming the lag
before anything downstream runs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.test_ingest_dynamodb import T0, T1, full_export, incremental, make_writes
from weaver.core import storage
from weaver.core.errors import EnvironmentProblem

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_configured_source_is_ingested_checked_and_a_lagging_run_fails_with_the_lag(tmp_path, monkeypatch):
    from weaver.pipeline.airflow_env import airflow_env, migrate
    from weaver.pipeline.demo import run_dag
    from weaver.core.settings import load_settings
    from weaver.ingest import ingest
    from weaver.ingest.dynamodb import DynamoDBExport

    writes = make_writes()
    lake = tmp_path / "lake"
    s = load_settings(lake=str(lake))
    ingest(s, DynamoDBExport(full_export(tmp_path / "b", writes, T0), keys="pk,sk"))
    inc = incremental(tmp_path / "b", writes, T0, T1, "02-inc")
    monkeypatch.setenv("WEAVER_INGEST_SOURCE", json.dumps({"source": "dynamodb-export", "input": str(inc),
                                                           "keys": "pk,sk", "name": "orders"}))
    home = tmp_path / "airflow_home"
    migrate(home, airflow_env(home))
    at = T1 + timedelta(days=3)  # the run's interval ends three days after the source's watermark
    with pytest.raises(EnvironmentProblem):
        run_dag("temporal_weaver", at, home=home, lake=str(lake), log_dir=tmp_path / "logs", timeout=600)
    log = next((tmp_path / "logs").glob("temporal_weaver-*.log")).read_text(errors="replace")
    assert "WatermarkBehindError" in log and "3d behind" in log and "complete only up to 2026-03-01T12:59:59" in log
    # The ingest task ran and its batch passed the suite; nothing after the sensor ran.
    ledger = storage.read(storage.uri_for(s, storage.INGEST_WATERMARKS), storage.INGEST_WATERMARKS)
    assert ledger.num_rows == 2 and max(ledger.column("batch").to_pylist()) == 2
    assert not (lake / "_weaver" / "staging").exists()
    assert not storage.is_table(storage.uri_for(s, storage.PARTITION_METRICS))
