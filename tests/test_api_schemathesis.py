"""Schemathesis against the published OpenAPI: generated requests (valid and not) never get a 5xx,
and responses conform to the documented status codes, media types and schemas.

The schema is loaded from the real app at import (schemathesis' lazy fixture loader does not
work with this pytest); the app's lake is a fixed temporary path that a module fixture fills
with a hand-built lake before the first request and removes afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.test_recovery import standard_lake
from weaver.api import create_app
from weaver.settings import Settings

TOKEN = "schemathesis-token"
ROOT = Path(tempfile.gettempdir()) / f"weaver-schemathesis-{uuid.uuid4().hex[:12]}"
APP = create_app(Settings(lake=str(ROOT / "lake"), api_token=TOKEN))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def lake():
    lk = standard_lake(ROOT / "lake", api_token=TOKEN)
    try:
        yield lk
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
