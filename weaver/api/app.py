"""The query API (DESIGN §6): woven snapshots, recoveries, predictions, partitions.

One FastAPI app, built by :func:`create_app` with the settings read once. It runs standalone
(``weaver serve``, uvicorn) and inside Airflow 3's API server (``plugins/weaver_plugin.py``,
``fastapi_apps``). Airflow does not authenticate plugin apps, so the app enforces its own bearer
token in both places; with no token configured every ``/v1`` request is refused (503) unless the
app was built with ``insecure=True`` (``weaver serve --insecure-local``, loopback only).

Rows (``key``, ``value``) are paged by key: ``limit`` rows with key > the cursor's key; the next
cursor is in ``X-Next-Cursor`` (and ``next_cursor`` in JSON). It pins what served the first page (the
woven snapshot and its ``woven_snapshots`` version; the change log's state at the instant of a
recovery), so the pages of one walk never mix two states; a plain key is still taken as an exclusive
lower bound on the current state. Formats: NDJSON (``value`` base64), Arrow IPC stream, or a JSON
page, chosen by ``format`` or the ``Accept`` header.

Header values are percent-encoded UTF-8 (RFC 3986), since HTTP headers carry Latin-1 only: printable
ASCII other than ``%`` and space is left as is, so most keys and ids read unchanged. The row
endpoints' cursor is header-safe as given (``X-Next-Cursor`` and JSON ``next_cursor`` alike) and the
``cursor`` parameter's key is percent-decoded: pass the cursor back as you received it.
"""

from __future__ import annotations

from fastapi import FastAPI

from weaver.api.cache import RecoveryCache
from weaver.api.http import install_error_handlers, token_problem
from weaver.api.routes import router
from weaver.api.schemas import API_VERSION, RecoverySummary, WovenPage
from weaver.core.errors import InvalidParameterError
from weaver.core.settings import Settings, load_settings


def serve_host(settings: Settings, host: str, insecure_local: bool) -> str:
    """The interface `weaver serve` may bind: refuses to run without a token unless
    `insecure_local`, which forces loopback; refuses a token no client can send (only whitespace,
    or whitespace at an end) in any case, since every request would then be refused."""
    problem = token_problem(settings.api_token)
    if settings.api_token and problem is not None:
        raise InvalidParameterError(f"{problem} (or unset it and run `weaver serve --insecure-local` for an "
                                    "unauthenticated server on 127.0.0.1)")
    if insecure_local:
        return "127.0.0.1"
    if problem is not None:
        raise InvalidParameterError("no API token configured: set WEAVER_API_TOKEN (clients send "
                                    "`Authorization: Bearer <token>`), or run `weaver serve --insecure-local` "
                                    "for an unauthenticated server on 127.0.0.1")
    return host


def create_app(settings: Settings | None = None, *, insecure: bool = False) -> FastAPI:
    """The API app; `settings` are read once here (load_settings() when None).

    With no ``settings.api_token``, every /v1 request gets 503 unless `insecure` (local use only).
    """
    settings = settings if settings is not None else load_settings()
    app = FastAPI(title="Temporal Weaver API", version=API_VERSION,
                  description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    app.state.settings = settings
    app.state.insecure = insecure
    install_error_handlers(app)
    app.state.recovery_cache = RecoveryCache(settings.api_recovery_cache_mb * 2**20)
    app.include_router(router)

    def openapi() -> dict:
        # Row endpoints answer several media types, so their JSON models are referenced by hand;
        # register those models (and their nested ones) as components.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            comps = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in (WovenPage, RecoverySummary):
                sch = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in sch.pop("$defs", {}).items():
                    comps.setdefault(name, sub)
                comps[model.__name__] = sch
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
