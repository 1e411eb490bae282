"""Bring your own change log: source adapters behind one interface, and the exactly-once writer.

``ingest(settings, adapter)`` turns one input of a source (a DynamoDB export folder, a file of
Debezium events, a Delta table's Change Data Feed) into contract rows of `changelog` with a
gap-free `seq`, and advances the source's watermark in the same Delta commit.
"""

from weaver.ingest.base import Adapter, Batch, Change, Watermark
from weaver.ingest.keys import decode_key, encode_key
from weaver.ingest.writer import IngestResult, Partitioning, ingest, load_watermark, read_ledger

__all__ = ["Adapter", "Batch", "Change", "Watermark", "IngestResult", "Partitioning", "ingest", "load_watermark",
           "read_ledger", "encode_key", "decode_key"]
