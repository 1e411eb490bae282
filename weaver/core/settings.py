"""The one settings object: the only reader of the environment, read once per process or run.

Precedence, highest first: explicit overrides (CLI flags, DAG params) > ``WEAVER_*`` environment
variables > the lake's own split policy (``<lake>/_weaver/lake.json``, written by whoever
produces the lake, e.g. ``weaver simulate``) > built-in defaults (DESIGN §5, DynamoDB-like).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from weaver.core.errors import InvalidConfidenceError, InvalidParameterError
from weaver.core.time import parse_duration, parse_timepoint

GIB = 1024**3
_DURATIONS = ("window", "bucket", "woven_cadence", "recovery_window", "woven_retention", "forecast_history",
              "calibration_retention")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def check_confidence(value: float, what: str = "confidence_threshold") -> float:
    """`value` as a float in [0, 1], or InvalidConfidenceError."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidConfidenceError(f"{what} {value!r} is not a number in [0, 1]") from exc
    if not (0.0 <= v <= 1.0) or v != v:
        raise InvalidConfidenceError(f"{what} {value!r} is outside [0, 1]")
    return v


@dataclass(frozen=True)
class Settings:
    """Everything that chooses the environment or a policy; built once per process/run."""

    lake: str = "./lake"
    woven_root: str | None = None  # default <lake>/woven
    spark_master: str = "local[*]"
    # The address executors reach the driver at, and the one its listeners bind: loopback unless
    # the executors run on other hosts (a standalone cluster across machines or containers).
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"
    spark_shuffle_partitions: int = 4
    # The Delta (and S3) jars are on every Spark node at the driver's paths (one image for every
    # service, as in docker-compose.yml): put them on the classpath there instead of shipping them
    # with each application (`spark.jars`), which copies them into every application's folder on
    # every worker - 558 MB for an s3:// lake's AWS SDK bundle.
    spark_jars_on_nodes: bool = False
    window: timedelta = timedelta(hours=24)
    confidence_threshold: float = 0.75
    size_threshold_bytes: int = 10 * GIB
    write_threshold_per_s: float = 1000.0
    bucket: timedelta = timedelta(hours=1)
    woven_cadence: timedelta = timedelta(hours=1)
    recovery_window: timedelta = timedelta(days=35)
    woven_retention: timedelta = timedelta(days=7)
    # Stored calibration maps (one per forecast run) whose run instant is older than this are
    # deleted by `weaver maintain`; each can be refitted from the predictions and splits it was fitted on.
    calibration_retention: timedelta = timedelta(days=35)
    forecast_samples: int = 200
    forecast_workers: int = 0  # 0 = one per core
    forecast_history: timedelta = timedelta(days=7)  # model history a forecast reads (bounded)
    # Metrics-fold checkpoints kept besides one a day over the forecast history; 0 = never checkpoint
    # (every run folds the change log from its start).
    metrics_checkpoints: int = 3
    # A metrics run from a checkpoint folds this many neighbouring partitions' keys at a time
    # (docs/design.md A10: memory follows the batch, not the table); 0 = every key at once.
    metrics_batch_partitions: int = 512
    min_history_buckets: int = 12  # fewer complete buckets: the partition is skipped, with a reason
    forecast_mp_context: str | None = None  # worker start method; default fork on Linux
    forecast_triage: bool = True  # skip fits of partitions that cannot reach a threshold (docs/prediction.md)
    forecast_batch_partitions: int = 256  # a forecast run gathers and fits this many neighbouring partitions at a time (0: all)
    # Where fits run (weaver.predict.forecasting.fit_engine): 'process' (the run's own process pool),
    # 'spark' (applyInPandas on the session's master), or 'auto': Spark only on a cluster master
    # (spark://) and only for a run whose fits are planned to take forecast_spark_min_s or more in
    # the process pool; a Spark application costs its start (bench/results/forecast_engine.json).
    forecast_engine: str = "auto"
    forecast_spark_min_s: float = 60.0
    # Weaving engine per run (weaver.weave.engine): 'arrow' (one process, no JVM), 'spark', or 'auto':
    # Arrow below weave_spark_min_changes of work (change-log rows the run's sequences span), else Spark.
    weave_engine: str = "auto"
    # First measured as bench/weave.py's crossover at 21fd0ba (12.6 M of work); kept above the
    # later crossovers (6-8.5 M; bench/results/weave.json figures.crossover_work) on purpose, since
    # the bench times Spark in a warm session and a run without one pays a 10-13 s JVM start.
    # docs/weaving.md "Choice".
    weave_spark_min_changes: int = 12_600_000
    api_token: str | None = None
    delta_jars: str | None = None  # comma-separated local jar paths overriding the fetched ones
    s3_jars: str | None = None  # comma-separated local hadoop-aws + AWS SDK bundle jars (air-gapped)
    ivy_settings: str | None = None  # an Ivy settings file resolving the jars through a mirror
    cache_dir: str = str(PROJECT_ROOT / ".cache")  # fetched jars and Ivy's cache
    expectations_dir: str = str(PROJECT_ROOT / "expectations")  # Great Expectations suites
    task_retries: int = 2  # Airflow retries of every weaver task
    commit_retries: int = 6  # Delta optimistic-concurrency conflicts retried before ConcurrentWriteError
    api_max_page_rows: int = 10_000  # the largest page of rows one API response carries
    api_max_recoveries: int = 4  # concurrent recoveries the API runs; more get 429 + Retry-After
    # Recovered tables the API keeps for paging (the next page reuses them); 0 = recompute every page.
    api_recovery_cache_mb: int = 256
    # Object-store lakes (s3://bucket/prefix): unset fields fall back to the engines' own AWS
    # discovery (AWS_* variables, instance profiles). The secret never appears in a repr or a log.
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:9000 for an S3-compatible server
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_allow_http: bool = False  # plain-HTTP endpoints (a local test server); never for real buckets
    # How delta-rs commits on S3: 'conditional-put' (If-None-Match puts: AWS S3 and most compatible
    # servers), 'unsafe-rename' (one writer at a time, no safety net), or 'dynamodb' (delta-rs'
    # locking provider, configured by its own AWS_S3_LOCKING_PROVIDER / DELTA_DYNAMO_TABLE_NAME).
    s3_commit: str = "conditional-put"

    def __post_init__(self) -> None:
        check_confidence(self.confidence_threshold)
        if self.size_threshold_bytes <= 0:
            raise InvalidParameterError("size threshold must be a positive number of bytes")
        if self.write_threshold_per_s <= 0:
            raise InvalidParameterError("write threshold must be a positive number of writes/s")
        for name in _DURATIONS:
            if getattr(self, name) <= timedelta(0):
                raise InvalidParameterError(f"{name} must be positive")
        if self.forecast_batch_partitions < 0:
            raise InvalidParameterError("forecast_batch_partitions must be 0 (one batch) or a positive count")
        if self.forecast_samples < 10:
            raise InvalidParameterError("forecast_samples must be at least 10")
        if self.min_history_buckets < 2:
            raise InvalidParameterError("min_history_buckets must be at least 2")
        if self.metrics_checkpoints < 0:
            raise InvalidParameterError("metrics_checkpoints must be 0 or more")
        if self.metrics_batch_partitions < 0:
            raise InvalidParameterError("metrics_batch_partitions must be 0 (one batch) or a positive count")
        if self.task_retries < 0:
            raise InvalidParameterError("task_retries must be 0 or more")
        if self.commit_retries < 0:
            raise InvalidParameterError("commit_retries must be 0 or more")
        if self.api_max_page_rows < 1 or self.api_max_recoveries < 1:
            raise InvalidParameterError("api_max_page_rows and api_max_recoveries must be at least 1")
        if self.api_recovery_cache_mb < 0:
            raise InvalidParameterError("api_recovery_cache_mb must be 0 or more")
        if self.forecast_engine not in FORECAST_ENGINES:
            raise InvalidParameterError(f"forecast_engine {self.forecast_engine!r} is not one of "
                                        f"{', '.join(FORECAST_ENGINES)}")
        if not self.forecast_spark_min_s >= 0:  # NaN too
            raise InvalidParameterError("forecast_spark_min_s must be 0 or more seconds")
        if self.weave_engine not in WEAVE_ENGINES:
            raise InvalidParameterError(f"weave_engine {self.weave_engine!r} is not one of {', '.join(WEAVE_ENGINES)}")
        if self.weave_spark_min_changes < 0:
            raise InvalidParameterError("weave_spark_min_changes must be 0 or more")
        if self.s3_commit not in S3_COMMIT_MODES:
            raise InvalidParameterError(f"s3_commit {self.s3_commit!r} is not one of {', '.join(S3_COMMIT_MODES)}")
        for root in (self.lake, self.woven_root):
            if root is not None:
                check_lake_uri(str(root))

    @property
    def woven(self) -> str:
        """Root URI of the woven tier."""
        return self.woven_root or _join(self.lake, "woven")

    def with_overrides(self, **kwargs: Any) -> "Settings":
        """A copy with the given (non-None) fields replaced and validated."""
        clean = {k: v for k, v in kwargs.items() if v is not None}
        for k in _DURATIONS:
            if k in clean:
                clean[k] = parse_duration(clean[k])
        return replace(self, **clean)

    def confidence(self, value: float | None = None) -> float:
        """The confidence threshold a call uses: `value` when given (validated), else the setting's."""
        return check_confidence(self.confidence_threshold if value is None else value)

    @property
    def remote(self) -> bool:
        """Whether the lake or the woven tier lives on an object store."""
        return is_remote(str(self.lake)) or (self.woven_root is not None and is_remote(str(self.woven_root)))

    def storage_options(self, uri: str) -> dict[str, str] | None:
        """delta-rs' `storage_options` for `uri`: None for a local path, the S3 fields for s3://."""
        if not is_remote(uri):
            return None
        opts: dict[str, str] = {}
        for key, value in (("aws_endpoint_url", self.s3_endpoint), ("aws_region", self.s3_region),
                           ("aws_access_key_id", self.s3_access_key_id),
                           ("aws_secret_access_key", self.s3_secret_access_key)):
            if value:
                opts[key] = value
        if self.s3_allow_http:
            opts["aws_allow_http"] = "true"
        if self.s3_commit == "conditional-put":
            opts["aws_conditional_put"] = "etag"
        elif self.s3_commit == "unsafe-rename":
            opts["aws_s3_allow_unsafe_rename"] = "true"
        return opts


S3_COMMIT_MODES = ("conditional-put", "unsafe-rename", "dynamodb")
WEAVE_ENGINES = ("auto", "arrow", "spark")
FORECAST_ENGINES = ("auto", "process", "spark")
REMOTE_SCHEMES = ("s3://",)  # the object stores a lake may live on (s3a:// is Spark's spelling of it)


def is_remote(uri: str) -> bool:
    """Whether `uri` names an object store rather than a local folder (``file://`` is local)."""
    uri = str(uri)
    return "://" in uri and not uri.startswith("file://")


def check_lake_uri(uri: str) -> str:
    """`uri` if weaver can keep a lake there: a local path, ``file://`` or ``s3://bucket[/prefix]``."""
    if is_remote(uri):
        if uri.startswith("s3a://"):
            raise InvalidParameterError(f"lake {uri!r}: write it as s3://... (weaver maps it to s3a:// for Spark)")
        if not uri.startswith(REMOTE_SCHEMES) or not uri[len("s3://"):].strip("/"):
            raise InvalidParameterError(f"lake {uri!r} is not a local path or s3://bucket/prefix; "
                                        "other object stores are not supported")
    return uri


def _flag(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _join(root: str, name: str) -> str:
    if "://" in root:
        return root.rstrip("/") + "/" + name
    return str(Path(root) / name)


def lake_policy_path(lake: str) -> str:
    """Where a lake's producer records its split policy (a local path or an object URI)."""
    return _join(_join(lake, "_weaver"), "lake.json")


def read_lake_policy(lake: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The split policy a lake's producer recorded, or {} when it recorded none.

    An s3:// lake's policy is read with the object-store settings of `env` (the lake is not
    known to the settings yet: the policy is one of their inputs)."""
    from weaver.core import objstore

    p = lake_policy_path(str(lake))
    raw = objstore.read_text(p, storage_options(p, env), missing_ok=True)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"{p} is not valid JSON: {exc}") from exc


_S3_ENV = {
    "WEAVER_S3_ENDPOINT": ("s3_endpoint", str),
    "WEAVER_S3_REGION": ("s3_region", str),
    "WEAVER_S3_ACCESS_KEY_ID": ("s3_access_key_id", str),
    "WEAVER_S3_SECRET_ACCESS_KEY": ("s3_secret_access_key", str),
    "WEAVER_S3_ALLOW_HTTP": ("s3_allow_http", lambda v: _flag(v) if v.strip() else False),
    "WEAVER_S3_COMMIT": ("s3_commit", str),
}


def _s3_fields(env: dict[str, str] | None) -> dict[str, Any]:
    """The object-store fields of the settings from `env` (the process environment when None)."""
    env = dict(os.environ if env is None else env)
    kw: dict[str, Any] = {}
    for var, (name, conv) in _S3_ENV.items():
        if env.get(var):
            try:
                kw[name] = conv(env[var])
            except ValueError as exc:
                raise InvalidParameterError(f"${var}: {exc}") from exc  # never echo the value: it may be a secret
    return kw


def storage_options(uri: str, env: dict[str, str] | None = None) -> dict[str, str] | None:
    """delta-rs' `storage_options` for `uri` from the object-store settings of `env` (the process
    environment when None): what every Delta read and write passes, None for a local path."""
    if not is_remote(uri):
        return None
    return Settings(lake="./lake", **_s3_fields(env)).storage_options(uri)


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment once, then apply explicit overrides."""
    env = dict(os.environ if env is None else env)
    lake = overrides.pop("lake", None) or env.get("WEAVER_LAKE") or "./lake"
    kw: dict[str, Any] = {"lake": lake, **_s3_fields(env)}
    policy = read_lake_policy(check_lake_uri(lake), env)
    if "size_threshold_bytes" in policy:
        kw["size_threshold_bytes"] = int(policy["size_threshold_bytes"])
    if "write_threshold_per_s" in policy:
        kw["write_threshold_per_s"] = float(policy["write_threshold_per_s"])
    if "bucket" in policy:
        kw["bucket"] = parse_duration(policy["bucket"])
    mapping = {
        "WEAVER_WOVEN_ROOT": ("woven_root", str),
        "WEAVER_SPARK_MASTER": ("spark_master", str),
        "WEAVER_SPARK_DRIVER_HOST": ("spark_driver_host", str),
        "WEAVER_SPARK_BIND_ADDRESS": ("spark_bind_address", str),
        "WEAVER_SHUFFLE_PARTITIONS": ("spark_shuffle_partitions", int),
        "WEAVER_SPARK_JARS_ON_NODES": ("spark_jars_on_nodes", _flag),
        "WEAVER_WINDOW": ("window", parse_duration),
        "WEAVER_CONFIDENCE_THRESHOLD": ("confidence_threshold", float),
        "WEAVER_SIZE_THRESHOLD": ("size_threshold_bytes", int),
        "WEAVER_WRITE_THRESHOLD": ("write_threshold_per_s", float),
        "WEAVER_BUCKET": ("bucket", parse_duration),
        "WEAVER_WOVEN_CADENCE": ("woven_cadence", parse_duration),
        "WEAVER_RECOVERY_WINDOW": ("recovery_window", parse_duration),
        "WEAVER_WOVEN_RETENTION": ("woven_retention", parse_duration),
        "WEAVER_CALIBRATION_RETENTION": ("calibration_retention", parse_duration),
        "WEAVER_FORECAST_SAMPLES": ("forecast_samples", int),
        "WEAVER_FORECAST_WORKERS": ("forecast_workers", int),
        "WEAVER_FORECAST_HISTORY": ("forecast_history", parse_duration),
        "WEAVER_MIN_HISTORY_BUCKETS": ("min_history_buckets", int),
        "WEAVER_METRICS_CHECKPOINTS": ("metrics_checkpoints", int),
        "WEAVER_METRICS_BATCH_PARTITIONS": ("metrics_batch_partitions", int),
        "WEAVER_FORECAST_MP_CONTEXT": ("forecast_mp_context", str),
        "WEAVER_FORECAST_TRIAGE": ("forecast_triage", _flag),
        "WEAVER_FORECAST_BATCH_PARTITIONS": ("forecast_batch_partitions", int),
        "WEAVER_FORECAST_ENGINE": ("forecast_engine", str),
        "WEAVER_FORECAST_SPARK_MIN_S": ("forecast_spark_min_s", float),
        "WEAVER_WEAVE_ENGINE": ("weave_engine", str),
        "WEAVER_WEAVE_SPARK_MIN_CHANGES": ("weave_spark_min_changes", int),
        "WEAVER_API_TOKEN": ("api_token", str),
        "WEAVER_DELTA_JARS": ("delta_jars", str),
        "WEAVER_S3_JARS": ("s3_jars", str),
        "WEAVER_IVY_SETTINGS": ("ivy_settings", str),
        "WEAVER_CACHE": ("cache_dir", str),
        "WEAVER_EXPECTATIONS": ("expectations_dir", str),
        "WEAVER_TASK_RETRIES": ("task_retries", int),
        "WEAVER_COMMIT_RETRIES": ("commit_retries", int),
        "WEAVER_API_MAX_PAGE_ROWS": ("api_max_page_rows", int),
        "WEAVER_API_MAX_RECOVERIES": ("api_max_recoveries", int),
        "WEAVER_API_RECOVERY_CACHE_MB": ("api_recovery_cache_mb", int),
    }
    for var, (name, conv) in mapping.items():
        if env.get(var):
            try:
                kw[name] = conv(env[var])
            except ValueError as exc:
                raise InvalidParameterError(f"${var}={env[var]!r}: {exc}") from exc
    settings = Settings(**kw)
    return settings.with_overrides(**overrides) if overrides else settings


def dag_default_args(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Airflow `default_args` of every weaver DAG: the task retry policy from ``WEAVER_TASK_RETRIES``.

    Read at DAG parse time, so it touches the environment only (no lake): 2 retries in production,
    0 in the demo and the tests so a failure shows at once.
    """
    env = dict(os.environ if env is None else env)
    retries = Settings.task_retries
    if env.get("WEAVER_TASK_RETRIES"):
        try:
            retries = int(env["WEAVER_TASK_RETRIES"])
        except ValueError as exc:
            raise InvalidParameterError(f"$WEAVER_TASK_RETRIES={env['WEAVER_TASK_RETRIES']!r}: {exc}") from exc
    if retries < 0:
        raise InvalidParameterError("$WEAVER_TASK_RETRIES must be 0 or more")
    return {"retries": retries, "retry_delay": timedelta(minutes=2)}


def dag_common(*, scheduled: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The `@dag` arguments every weaver DAG shares: a fixed start date, no catchup, one active run,
    the task retry policy; with `scheduled`, the ``WEAVER_SCHEDULE_END`` end date too. Read at DAG
    parse time, so from the environment only."""
    common: dict[str, Any] = {"start_date": datetime(2026, 1, 1, tzinfo=timezone.utc), "catchup": False,
                              "max_active_runs": 1, "tags": ["weaver"], "default_args": dag_default_args(env)}
    if scheduled:
        common["end_date"] = dag_schedule_end(env)
    return common


def dag_schedule_end(env: dict[str, str] | None = None) -> datetime | None:
    """``WEAVER_SCHEDULE_END``: an instant after which no scheduled run starts (a frozen or retired
    lake), or None to run for ever; read at DAG parse time, so from the environment only."""
    raw = dict(os.environ if env is None else env).get("WEAVER_SCHEDULE_END")
    return parse_timepoint(raw) if raw else None


def source_wait_max(env: dict[str, str] | None = None) -> timedelta:
    """Hard bound of temporal_weaver's completeness sensor (``WEAVER_SOURCE_WAIT_MAX_H``, default 6 h);
    read at DAG parse time, so from the environment only."""
    env = dict(os.environ if env is None else env)
    try:
        hours = float(env.get("WEAVER_SOURCE_WAIT_MAX_H") or 6)
    except ValueError as exc:
        raise InvalidParameterError(f"$WEAVER_SOURCE_WAIT_MAX_H={env['WEAVER_SOURCE_WAIT_MAX_H']!r}: {exc}") from exc
    if hours <= 0:
        raise InvalidParameterError("$WEAVER_SOURCE_WAIT_MAX_H must be positive")
    return timedelta(hours=hours)


def settings_from_params(params: dict | None) -> Settings:
    """Settings of a DAG run: the environment, then the run's (already validated) params on top.

    Every DAG passes its `params`; keys a DAG does not declare are simply absent.
    """
    p = dict(params or {})
    return load_settings(lake=p.get("lake"), window=p.get("window"),
                         confidence_threshold=p.get("confidence_threshold"),
                         size_threshold_bytes=p.get("size_threshold"),
                         write_threshold_per_s=p.get("write_threshold"), weave_engine=p.get("weave_engine"),
                         forecast_engine=p.get("forecast_engine"))


@lru_cache(maxsize=1)
def test_pause_points() -> frozenset[str]:
    """Test-only: the named pause points (``WEAVER_TEST_PAUSE_POINTS``, comma-separated) at which
    :func:`weaver.core.faults.point` stops so a crash test can SIGKILL the process there."""
    raw = os.environ.get("WEAVER_TEST_PAUSE_POINTS", "")
    return frozenset(p.strip() for p in raw.split(",") if p.strip())
