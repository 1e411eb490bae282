"""Bring your own change log: source adapters behind one interface, and the exactly-once writer.

``ingest(settings, adapter)`` turns one input of a source (a DynamoDB export folder, a file of
Debezium events, a Delta table's Change Data Feed) into contract rows of `changelog` with a
gap-free `seq`, and advances the source's watermark in the same Delta commit.
"""


from __future__ import annotations

import importlib
from typing import Any

# Names load on first use: the DAG file imports weaver.ingest.sensor at parse time, which must not
# pull in pyarrow/deltalake through this package's __init__.
_EXPORTS = {
    "Adapter": "weaver.ingest.base", "Batch": "weaver.ingest.base", "Change": "weaver.ingest.base",
    "Watermark": "weaver.ingest.base", "decode_key": "weaver.ingest.keys", "encode_key": "weaver.ingest.keys",
    "IngestResult": "weaver.ingest.writer", "Partitioning": "weaver.ingest.writer", "ingest": "weaver.ingest.writer",
    "load_watermark": "weaver.ingest.writer", "read_ledger": "weaver.ingest.writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weaver.ingest' has no attribute {name!r}")
