"""The package's shape holds: no private name crosses a stage package, and the layers are honest.

The layer contract itself is import-linter's (pyproject.toml, run by `make test`); this test adds
what import-linter cannot say: a name starting with `_` is private to its stage package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WEAVER = Path(__file__).resolve().parent.parent / "weaver"


def _stage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])  # weaver.<stage>


def _modules():
    for path in sorted(WEAVER.rglob("*.py")):
        rel = path.relative_to(WEAVER.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, ast.parse(path.read_text(), filename=str(path))


def _private_imports(module: str, tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("weaver"):
            if _stage(node.module) == _stage(module):
                continue
            bad += [f"{module}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
            if any(p.startswith("_") for p in node.module.split(".")[2:]):
                bad.append(f"{module}: imports the private module {node.module}")
    return bad


def test_no_private_name_crosses_a_stage_package():
    bad = [b for name, tree in _modules() for b in _private_imports(name, tree)]
    assert bad == []


def test_the_check_sees_a_private_import():
    # The check itself can fail: a planted cross-package private import is reported.
    tree = ast.parse("from weaver.pitr.restore import _materialize\nfrom weaver.core.ids import snapshot_id\n")
    assert _private_imports("weaver.weave.run", tree) == [
        "weaver.weave.run: from weaver.pitr.restore import _materialize"]
    assert _private_imports("weaver.pitr.snapshots", tree) == []


@pytest.mark.parametrize("module", ["weaver.core.settings", "weaver.core.time", "weaver.core.errors",
                                    "weaver.ingest.sensor", "weaver.pipeline.spark_submit"])
def test_dag_parse_time_imports_stay_light(module):
    # DAG files import weaver.core.settings at parse time: it must not pull in the data stack.
    import subprocess
    import sys

    code = (f"import sys, {module}; heavy = [m for m in ('pyarrow', 'pandas', 'deltalake', 'pyspark', 'numpy') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
