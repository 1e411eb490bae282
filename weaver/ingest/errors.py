"""Named errors of ingestion. Each names the input (file and line, LSN or version) and what to do.

All are :class:`weaver.errors.WeaverError`, so the CLI exits 2 and a DAG task fails; none is raised
after anything was written (the writer validates the whole batch before its first write).
"""

from __future__ import annotations

from weaver.core.errors import WeaverError


class IngestError(WeaverError):
    """Base class of ingestion errors."""

    http_status = 400


class MalformedInputError(IngestError):
    """A line is not JSON, or a record lacks a field its format requires."""


class UnknownEventError(IngestError):
    """An event type or op the source format does not define (e.g. Debezium op 'x')."""


class MissingKeyAttributeError(IngestError):
    """A record lacks one of the table's key attributes."""


class UnorderableKeyError(IngestError):
    """A key value has no order in the key encoding (null, NaN, a list, a map, a boolean)."""


class ChecksumMismatchError(IngestError):
    """A data file's MD5 differs from the one its export manifest declares."""


class StaleInputError(IngestError):
    """The input lies wholly at or below the source's watermark and is not an input already ingested."""

    http_status = 409


class WatermarkGapError(IngestError):
    """The input starts after the source's watermark: the changes in between are missing."""

    http_status = 409


class WatermarkBehindError(IngestError):
    """A run needs the change log up to T, but the source is only complete up to an earlier instant."""

    http_status = 409


class IngestStateError(IngestError):
    """The lake's ingest bookkeeping disagrees with its change log (e.g. lost commit metadata)."""

    http_status = 500


class LateChangeError(StaleInputError):
    """An input holds a change at or below the source's watermark that the lake never ingested (late
    or out-of-order data): skipping it as a duplicate would lose it, and appending it would order it
    after changes the source made later."""


class SourceIdentityError(IngestError):
    """An input was read from another table than the one the lake holds under the same source name:
    one watermark cannot stand for two tables."""

    http_status = 409


class ConflictingChangeError(IngestError):
    """An input holds a change at or below the source's watermark at a position, of a key and op the
    lake ingested, with another item image: the source's history changed under positions already
    ingested (a database restored from a backup or failed over to another timeline, a table
    re-created under the same name). Skipping it as a duplicate would keep the old version without
    a word; appending it would order it after changes the source made later."""

    http_status = 409
