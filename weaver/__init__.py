"""Temporal Weaver: forecast partition splits and weave shadow snapshot sequences on a PITR framework.

The small public API is gathered here; everything else is reached through its stage package.
The stage packages ``weaver.predict``, ``weaver.weave`` and ``weaver.recover`` own those short
names, so their verbs are ``weaver.predict.predict``, ``weaver.weave.weave`` and
``weaver.recover.recover`` (a function named like its package would shadow the package).
Names load on first use, so ``import weaver.core.settings`` (a DAG file at parse time) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "weaver.core.settings",
    "load_settings": "weaver.core.settings",
    "WeaverError": "weaver.core.errors",
    "restore_partition": "weaver.pitr",
    "restore_table": "weaver.pitr",
    "take_snapshots": "weaver.pitr",
    "backtest": "weaver.predict",
    "reconcile": "weaver.weave",
    "vacuum": "weaver.pitr",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weaver' has no attribute {name!r}")
