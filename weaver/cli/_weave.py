"""CLI commands: weave."""

from __future__ import annotations

from weaver.cli._app import app  # noqa: F401
