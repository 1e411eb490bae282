"""The query API (FastAPI): standalone under uvicorn, or mounted in Airflow's API server."""

from weaver.api.app import create_app, serve_host
from weaver.api.schemas import DEFAULT_PAGE, MAX_PAGE

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "create_app", "serve_host"]
