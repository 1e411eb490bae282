"""The one settings object: read once from the environment (and the CLI's overrides).

Precedence, highest first: explicit overrides (CLI flags, DAG params) > ``WEAVER_*`` environment
variables > the lake's own split policy (``<lake>/_weaver/lake.json``, written by whoever
produces the lake, e.g. ``weaver simulate``) > built-in defaults (DESIGN §5, DynamoDB-like).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from weaver.errors import InvalidConfidenceError, InvalidParameterError, InvalidTimepointError

GIB = 1024**3
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | timedelta) -> timedelta:
    """Parse ``90m``, ``24h``, ``7d`` (or pass a timedelta through)."""
    if isinstance(text, timedelta):
        value = text
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise InvalidParameterError(f"duration {text!r} is not like '30m', '24h' or '7d'")
        value = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if value <= timedelta(0):
        raise InvalidParameterError(f"duration {text!r} must be positive")
    return value


def format_duration(value: timedelta) -> str:
    secs = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"


def parse_timepoint(text: str | datetime) -> datetime:
    """Parse an ISO-8601 instant that carries a timezone; return it in UTC.

    A naive time is refused: a restore 'at 14:00' in an unknown zone is a silent hours-wide error.
    """
    if isinstance(text, datetime):
        dt = text
    else:
        raw = str(text).strip()
        if raw.endswith("Z") or raw.endswith("z"):
            raw = raw[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise InvalidTimepointError(f"timepoint {text!r} is not ISO-8601 (e.g. 2026-01-03T14:00:00Z)") from exc
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise InvalidTimepointError(
            f"timepoint {text!r} has no timezone; add one, e.g. '{dt.isoformat()}Z' or '+00:00'"
        )
    return dt.astimezone(timezone.utc)


def check_confidence(value: float, what: str = "confidence_threshold") -> float:
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
    window: timedelta = timedelta(hours=24)
    confidence_threshold: float = 0.75
    size_threshold_bytes: int = 10 * GIB
    write_threshold_per_s: float = 1000.0
    bucket: timedelta = timedelta(hours=1)
    woven_cadence: timedelta = timedelta(hours=1)
    recovery_window: timedelta = timedelta(days=35)
    woven_retention: timedelta = timedelta(days=7)
    forecast_samples: int = 200
    forecast_workers: int = 0  # 0 = one per core
    api_token: str | None = None
    delta_jars: str | None = None  # comma-separated local jar paths overriding the fetched ones
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_confidence(self.confidence_threshold)
        if self.size_threshold_bytes <= 0:
            raise InvalidParameterError("size threshold must be a positive number of bytes")
        if self.write_threshold_per_s <= 0:
            raise InvalidParameterError("write threshold must be a positive number of writes/s")
        for name in ("window", "bucket", "woven_cadence", "recovery_window", "woven_retention"):
            if getattr(self, name) <= timedelta(0):
                raise InvalidParameterError(f"{name} must be positive")
        if self.forecast_samples < 10:
            raise InvalidParameterError("forecast_samples must be at least 10")

    @property
    def woven(self) -> str:
        """Root URI of the woven tier."""
        return self.woven_root or _join(self.lake, "woven")

    def with_overrides(self, **kwargs: Any) -> "Settings":
        """A copy with the given (non-None) fields replaced and validated."""
        clean = {k: v for k, v in kwargs.items() if v is not None}
        for k in ("window", "bucket", "woven_cadence", "recovery_window", "woven_retention"):
            if k in clean:
                clean[k] = parse_duration(clean[k])
        return replace(self, **clean)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "api_token":
                v = "***" if v else None
            out[k] = format_duration(v) if isinstance(v, timedelta) else v
        out["woven"] = self.woven
        return out


def _join(root: str, name: str) -> str:
    if "://" in root:
        return root.rstrip("/") + "/" + name
    return str(Path(root) / name)


def lake_policy_path(lake: str) -> Path:
    return Path(lake) / "_weaver" / "lake.json"


def read_lake_policy(lake: str) -> dict[str, Any]:
    """The split policy a lake's producer recorded, or {} (remote lakes carry none)."""
    if "://" in lake:
        return {}
    p = lake_policy_path(lake)
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"{p} is not valid JSON: {exc}") from exc


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment once, then apply explicit overrides."""
    env = dict(os.environ if env is None else env)
    lake = overrides.pop("lake", None) or env.get("WEAVER_LAKE") or "./lake"
    kw: dict[str, Any] = {"lake": lake}
    policy = read_lake_policy(lake)
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
        "WEAVER_WINDOW": ("window", parse_duration),
        "WEAVER_CONFIDENCE_THRESHOLD": ("confidence_threshold", float),
        "WEAVER_SIZE_THRESHOLD": ("size_threshold_bytes", int),
        "WEAVER_WRITE_THRESHOLD": ("write_threshold_per_s", float),
        "WEAVER_BUCKET": ("bucket", parse_duration),
        "WEAVER_WOVEN_CADENCE": ("woven_cadence", parse_duration),
        "WEAVER_RECOVERY_WINDOW": ("recovery_window", parse_duration),
        "WEAVER_WOVEN_RETENTION": ("woven_retention", parse_duration),
        "WEAVER_FORECAST_SAMPLES": ("forecast_samples", int),
        "WEAVER_FORECAST_WORKERS": ("forecast_workers", int),
        "WEAVER_API_TOKEN": ("api_token", str),
        "WEAVER_DELTA_JARS": ("delta_jars", str),
    }
    for var, (name, conv) in mapping.items():
        if env.get(var):
            try:
                kw[name] = conv(env[var])
            except ValueError as exc:
                raise InvalidParameterError(f"${var}={env[var]!r}: {exc}") from exc
    settings = Settings(**kw)
    return settings.with_overrides(**overrides) if overrides else settings


def settings_from_params(params: dict | None) -> Settings:
    """Settings of a DAG run: the environment, then the run's (already validated) params on top.

    Every DAG passes its `params`; keys a DAG does not declare are simply absent.
    """
    p = dict(params or {})
    return load_settings(lake=p.get("lake"), window=p.get("window"),
                         confidence_threshold=p.get("confidence_threshold"),
                         size_threshold_bytes=p.get("size_threshold"),
                         write_threshold_per_s=p.get("write_threshold"))
