"""A bad time on the command line is reported like every other bad input (DESIGN §6: `--json`
prints one machine-readable object): under --json one JSON object naming InvalidTimepointError
and the option, exit 2, Click's usage box nowhere, and nothing read or written in the lake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lakes import make_log, write_lake

NAIVE = "2026-01-01T05:00:00"  # no timezone
GOOD = "2026-01-01T05:00:00Z"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# (command line with {lake} / {out}, the option whose value is bad)
CASES = {
    "recover --at": (["recover", "--partition", "p0", "--at", NAIVE, "--out", "{out}"], "--at"),
    "recover --as-of": (["recover", "--partition", "p0", "--at", GOOD, "--as-of", NAIVE, "--out", "{out}"],
                        "--as-of"),
    "backtest --from": (["backtest", "--from", NAIVE, "--to", GOOD], "--from"),
    "backtest --to": (["backtest", "--from", GOOD, "--to", NAIVE], "--to"),
    # The other commands that take a time, held to the same behaviour.
    "restore --at": (["restore", "--partition", "p0", "--at", NAIVE, "--out", "{out}"], "--at"),
    "predict --at": (["predict", "--at", NAIVE], "--at"),
    "weave --run-ts": (["weave", "--at", GOOD, "--run-ts", NAIVE], "--run-ts"),
    "vacuum --now": (["vacuum", "--now", NAIVE], "--now"),
    "woven-vacuum --now": (["woven-vacuum", "--now", NAIVE], "--now"),
    "maintain --now": (["maintain", "--now", NAIVE], "--now"),
    "query --at": (["query", "--partition", "p0", "--at", NAIVE], "--at"),
    "whatif weave --until": (["whatif", "weave", "--partition", "p0", "--at", GOOD, "--until", NAIVE], "--until"),
    "whatif advise --at": (["whatif", "advise", "--at", NAIVE], "--at"),
    "whatif report --at": (["whatif", "report", "--at", NAIVE], "--at"),
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-tp") / "lake"
    write_lake(root, make_log(seed=3))
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_a_time_without_timezone_is_a_json_error_and_nothing_is_written(lake, tmp_path, case):
    from typer.testing import CliRunner

    from weaver.cli import app

    args, option = CASES[case]
    out = tmp_path / "out.parquet"
    args = [a.replace("{out}", str(out)) for a in args] + ["--lake", str(lake), "--json"]
    before = _files(lake)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stdout.strip().splitlines()  # one JSON object, nothing else on stdout
    err = json.loads(line)
    assert err["error"] == "InvalidTimepointError"
    assert err["message"].startswith(f"{option}: ") and NAIVE in err["message"] and "timezone" in err["message"]
    assert "Usage:" not in res.output and "Invalid value" not in res.output
    assert _files(lake) == before and not out.exists()


def test_without_json_it_is_one_error_line(lake):
    from typer.testing import CliRunner

    from weaver.cli import app

    res = CliRunner().invoke(app, ["backtest", "--from", NAIVE, "--to", GOOD, "--lake", str(lake)])
    assert res.exit_code == 2 and res.stdout == ""
    assert "InvalidTimepointError" in res.stderr and "--from" in res.stderr and "Usage:" not in res.stderr


# A confidence threshold outside [0, 1] (or NaN) and an unknown --key-by: the same one JSON error.
OPTION_CASES = {
    "recover 1.5": (["recover", "--partition", "p0", "--at", GOOD, "--confidence-threshold", "1.5", "--out", "{out}"],
                    "InvalidConfidenceError", "--confidence-threshold"),
    "query -0.1": (["query", "--partition", "p0", "--at", GOOD, "--confidence-threshold", "-0.1"],
                   "InvalidConfidenceError", "--confidence-threshold"),
    "weave nan": (["weave", "--at", GOOD, "--confidence-threshold", "nan"],
                  "InvalidConfidenceError", "--confidence-threshold"),
    "whatif advise 2": (["whatif", "advise", "--at", GOOD, "--confidence-threshold", "2"],
                        "InvalidConfidenceError", "--confidence-threshold"),
    "whatif weave --key-by": (["whatif", "weave", "--partition", "p0", "--at", GOOD, "--key-by", "median"],
                              "InvalidParameterError", "--key-by"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_a_bad_threshold_or_key_by_is_a_json_error_and_nothing_is_written(lake, tmp_path, case):
    from typer.testing import CliRunner

    from weaver.cli import app

    args, error, option = OPTION_CASES[case]
    out = tmp_path / "out.parquet"
    args = [a.replace("{out}", str(out)) for a in args] + ["--lake", str(lake), "--json"]
    before = _files(lake)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stdout.strip().splitlines()
    err = json.loads(line)
    assert err["error"] == error and option in err["message"], err
    assert "Usage:" not in res.output and "Invalid value" not in res.output
    assert _files(lake) == before and not out.exists()
