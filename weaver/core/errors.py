"""Named errors the user can cause. Every one says what went wrong and what to do.

All inherit :class:`WeaverError`, so callers (CLI, API, DAG tasks) can map them to an exit code,
an HTTP 4xx, or a failed task without catching programming errors by accident.
"""

from __future__ import annotations


class WeaverError(Exception):
    """Base class of every error a user can cause."""

    #: HTTP status used by the API when this error reaches a request.
    http_status: int = 400


# --- input ---------------------------------------------------------------------------------------
class InvalidConfidenceError(WeaverError, ValueError):
    """A confidence threshold or probability outside [0, 1]."""


class InvalidParameterError(WeaverError, ValueError):
    """Any other out-of-range parameter (window, threshold, page size, ...)."""


class InvalidTimepointError(InvalidParameterError):
    """A timepoint is malformed or has no timezone."""


class UnknownPartitionError(WeaverError, LookupError):
    """The partition id is not in the lake's `partitions` lineage nor a woven child id."""

    http_status = 404


class UnknownWeaveError(WeaverError, LookupError):
    """The weave id is not in `woven_catalog`."""

    http_status = 404


class NoDataError(WeaverError, LookupError):
    """The requested instant precedes every change of the table (nothing to restore)."""

    http_status = 404


# --- data contract -------------------------------------------------------------------------------
class ContractViolation(WeaverError):
    """The lake breaks DESIGN §3/§4.5; nothing was written."""

    http_status = 409

    def __init__(self, message: str, *, seq: int | None = None, partition_id: str | None = None):
        super().__init__(message)
        self.seq = seq
        self.partition_id = partition_id


class SeqGapError(ContractViolation):
    """`seq` skips a value."""


class DuplicateSeqError(ContractViolation):
    """`seq` repeats a value."""


class NonMonotonicTimestampError(ContractViolation):
    """`ts` decreases while `seq` increases."""


class UnknownOpError(ContractViolation):
    """`op` is neither PUT nor DELETE (or a PUT without a value)."""


class KeyOutOfRangeError(ContractViolation):
    """A change's key lies outside its partition's range at that seq."""


class SchemaMismatchError(ContractViolation):
    """A table's columns or types differ from the contract."""


class CorruptTableError(WeaverError):
    """A Delta table cannot be read (missing log, broken files)."""

    http_status = 500


class UnsupportedTableFeatureError(CorruptTableError):
    """A Delta table uses a feature the project's readers cannot apply (column mapping: delta-rs'
    pyarrow reader reads its data columns as nulls; deletion vectors or any other reader feature
    delta-rs cannot read: deleted rows would come back, or the first read fails); refused before
    any row is read or written (:func:`weaver.core.storage.check_read_features`)."""


class TableNotFoundError(WeaverError, LookupError):
    """A required table is absent from the lake; run the stage that produces it."""

    http_status = 404


class ExpectationFailedError(WeaverError):
    """A Great Expectations suite failed at a stage boundary; the run stops before the next stage."""

    http_status = 409


# --- environment ---------------------------------------------------------------------------------
class EnvironmentProblem(WeaverError):
    """Something outside the project is missing (Java, the Delta jars)."""

    http_status = 500


class ObjectStoreError(EnvironmentProblem):
    """The lake's object store (s3://) could not be reached or refused a request; check the endpoint,
    region and credentials (WEAVER_S3_* settings) and that the bucket exists."""

    http_status = 503


class NotOnObjectStoreError(WeaverError):
    """A feature that needs a local folder was asked of an s3:// lake; the message names the way around."""

    http_status = 400


class PortInUseError(EnvironmentProblem):
    """A port a local service needs is already taken by another process."""


class ServiceStartError(EnvironmentProblem):
    """A local service (Postgres, an Airflow component, Spark, the API) did not start or became unhealthy."""


class ConcurrentWriteError(WeaverError):
    """Another writer kept committing to the same Delta table; the retries ran out. Rerun the command
    (every write is idempotent), or run the writers one after the other."""

    http_status = 409


class TooManyRequestsError(WeaverError):
    """The server is at its configured concurrency; retry after the `Retry-After` seconds."""

    http_status = 429
    retry_after_s: int = 1
