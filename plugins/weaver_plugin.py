"""Airflow 3 plugin: mounts the Temporal Weaver query API in the API server at /weaver.

Airflow does not authenticate plugin apps, so the app enforces its own bearer token
(WEAVER_API_TOKEN in the api-server's environment); without one every /weaver/v1 request gets
503. The lake comes from WEAVER_LAKE; settings are read once, when the plugin is loaded.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from weaver.api import create_app
from weaver.core.settings import load_settings

app = create_app(load_settings())


class TemporalWeaverPlugin(AirflowPlugin):
    """Registers the query API through `fastapi_apps` (Airflow 3.1+)."""

    name = "temporal_weaver"
    fastapi_apps = [{"app": app, "url_prefix": "/weaver", "name": "Temporal Weaver"}]
