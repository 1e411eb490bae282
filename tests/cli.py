"""Helpers of the CLI tests: run a command through the real Typer app, read its one JSON error,
and hash a folder's files (the "nothing changed on disk" oracle)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from typer.testing import CliRunner


def run_cli(*args: str, env: dict | None = None):
    from weaver.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **(env or {})})


def json_error(res) -> dict:
    """The one JSON error object on stdout (nothing else there), exit 2, no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    obj = json.loads(lines[0])
    assert set(obj) == {"error", "message"}
    return obj


def file_tree(root) -> dict[str, str]:
    """Every file and folder under `root` with its content hash (folders: 'dir')."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(dirpath, d)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out
