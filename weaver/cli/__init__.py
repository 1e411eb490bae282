"""`weaver` command line (Typer + Rich). Each area registers its commands on the shared app."""

from __future__ import annotations

from weaver.cli._app import app

# Importing a module registers its commands.
from weaver.cli import _ingest, _lake, _ops, _pitr, _predict, _recover, _services, _weave, _whatif  # noqa: E402,F401  isort: skip


def main() -> None:
    """The `weaver` console script."""
    app()


__all__ = ["app", "main"]
