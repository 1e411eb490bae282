from datetime import datetime, timedelta, timezone

import pytest

from weaver.core.errors import InvalidConfidenceError, InvalidParameterError, InvalidTimepointError
from weaver.core.settings import check_confidence, load_settings
from weaver.core.time import parse_duration, parse_timepoint


def test_timepoint_requires_timezone():
    with pytest.raises(InvalidTimepointError, match="no timezone"):
        parse_timepoint("2026-01-03T14:00:00")
    assert parse_timepoint("2026-01-03T14:00:00Z") == datetime(2026, 1, 3, 14, tzinfo=timezone.utc)
    assert parse_timepoint("2026-01-03T16:00:00+02:00") == datetime(2026, 1, 3, 14, tzinfo=timezone.utc)
    with pytest.raises(InvalidTimepointError):
        parse_timepoint("yesterday")


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), "x"])
def test_confidence_bounds(bad):
    with pytest.raises(InvalidConfidenceError):
        check_confidence(bad)


def test_durations():
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("90m") == timedelta(minutes=90)
    for bad in ("0h", "1 fortnight", "-2h"):
        with pytest.raises(InvalidParameterError):
            parse_duration(bad)


def test_precedence_env_over_lake_policy_and_overrides_over_env(tmp_path):
    lake = tmp_path / "lake"
    (lake / "_weaver").mkdir(parents=True)
    (lake / "_weaver" / "lake.json").write_text('{"size_threshold_bytes": 123, "write_threshold_per_s": 2.5}')
    s = load_settings(env={}, lake=str(lake))
    assert (s.size_threshold_bytes, s.write_threshold_per_s) == (123, 2.5)
    s = load_settings(env={"WEAVER_SIZE_THRESHOLD": "456"}, lake=str(lake))
    assert s.size_threshold_bytes == 456
    s = load_settings(env={"WEAVER_SIZE_THRESHOLD": "456"}, lake=str(lake), size_threshold_bytes=789, window="6h")
    assert s.size_threshold_bytes == 789 and s.window == timedelta(hours=6)
    assert s.woven == str(lake / "woven")
    with pytest.raises(InvalidConfidenceError):
        load_settings(env={"WEAVER_CONFIDENCE_THRESHOLD": "3"}, lake=str(lake))


def test_dag_params_override_the_environment(tmp_path, monkeypatch):
    from weaver.core.settings import settings_from_params

    monkeypatch.setenv("WEAVER_LAKE", str(tmp_path / "envlake"))
    monkeypatch.setenv("WEAVER_CONFIDENCE_THRESHOLD", "0.5")
    s = settings_from_params({"window": "6h", "confidence_threshold": 0.9, "size_threshold": None})
    assert s.lake == str(tmp_path / "envlake") and s.window == timedelta(hours=6)
    assert s.confidence_threshold == 0.9 and s.size_threshold_bytes == 10 * 1024**3
    assert settings_from_params(None).confidence_threshold == 0.5
