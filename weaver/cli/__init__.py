"""`weaver` command line (Typer + Rich). Each area registers its commands on the shared app."""

from __future__ import annotations

from weaver.cli._app import app

# Importing a module registers its commands.
from weaver.cli import _lake, _pitr, _predict, _weave, _recover, _services  # noqa: E402,F401


def main() -> None:
    app()


__all__ = ["app", "main"]
