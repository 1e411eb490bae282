"""Crash injection (issue 14): a writing command killed with SIGKILL at a named pause point leaves
nothing partial for readers, a rerun completes, and its result equals an uninterrupted run.

The harness is tests/crash.py; bench/crash.py runs every point of every command and commits the
counts (docs/operations.md quotes them). Here: every vacuum point (no JVM, seconds), ingest at its
commit point, and one point of predict (an ARIMA fit per subprocess: marked slow).
"""

from __future__ import annotations

import pytest

from tests import crash


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return crash.base_lake(tmp_path_factory.mktemp("crash") / "template")


@pytest.fixture(scope="module")
def references(template, tmp_path_factory):
    cache: dict = {}
    work = tmp_path_factory.mktemp("crash-ref")

    def get(name: str):
        if name not in cache:
            cache[name] = crash.reference(crash.SCENARIOS[name], template, work)
        return cache[name]

    return get


# The Spark commands (snapshot, weave, restore-table) run through bench/crash.py only: each kill
# costs three JVM starts, too slow for the suite.
CASES = [("vacuum", p) for p in crash.SCENARIOS["vacuum"].points] + [
    ("ingest", "ingest.after_changelog"),  # the commit point: the ledger is behind, the rerun repairs it
    pytest.param("predict", "predict.after_publish", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("command,point", CASES)
def test_a_kill_at_a_pause_point_is_survived(command, point, template, references, tmp_path):
    sc = crash.SCENARIOS[command]
    want = references(command)
    o = crash.crash_once(sc, template, tmp_path, point, want)
    assert o.result == "killed", f"{command} never reached {point}"
    assert o.reader_ok, f"a reader saw a partial {command} after a kill at {point}"
    assert o.rerun_equal, f"the rerun after a kill at {point} differs from an uninterrupted {command}"
    assert o.scratch_clear, f"a scratch folder of the {command} killed at {point} outlived the rerun"
