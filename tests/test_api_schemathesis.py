"""Schemathesis against the published OpenAPI: generated requests (valid and not) never get a 5xx,
valid ones are accepted, and responses conform to the documented status codes, media types and
schemas.

The schema is loaded from the real app at import (schemathesis' lazy fixture loader does not
work with this pytest); the app's lake is a fixed temporary path that a module fixture fills
with a hand-built lake before the first request and removes afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lakes import standard_lake
from weaver.api import create_app
from weaver.core.settings import Settings

TOKEN = "schemathesis-token"
ROOT = Path(tempfile.gettempdir()) / f"weaver-schemathesis-{uuid.uuid4().hex[:12]}"
APP = create_app(Settings(lake=str(ROOT / "lake"), api_token=TOKEN))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# One pytest item per operation (not schemathesis' `schema.parametrize()` sub-tests, whose failures
# pytest-xdist's reports drop: a failing operation would pass the run).
OPERATIONS = [r.ok() for r in schema.get_all_operations()]


@pytest.fixture(scope="module", autouse=True)
def lake():
    lk = standard_lake(ROOT / "lake", api_token=TOKEN)
    try:
        yield lk
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@settings(max_examples=int(os.environ.get("WEAVER_SCHEMATHESIS_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_server_errors(operation, data):
    case = data.draw(operation.as_strategy())
    # Every check runs (no 5xx; documented status codes, media types, response schemas; valid
    # data accepted) except negative_data_rejection: we force a valid Authorization header onto
    # every case, and schemathesis serialises some invalid values to nothing (an empty list as
    # an absent query parameter), which turns its "negative" cases into valid requests it then
    # flags for succeeding. Malformed input is checked for 4xx in tests/test_api.py.
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           excluded_checks=[schemathesis.checks.negative_data_rejection])
