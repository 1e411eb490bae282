"""In-process crash injection: raise at a named fault point (``weaver.core.faults.point``) and
expect the raise, so a test can look at what the interrupted write left and then retry it
(tests/crash.py kills a subprocess at the same points instead)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest


class InjectedCrash(Exception):
    """Raised at the hooked fault point; stands for the process dying there."""


@contextmanager
def crash_at(point: str) -> Iterator[None]:
    """Run the body with `point` hooked to raise InjectedCrash, which the body must reach."""
    from weaver.core import faults

    def crash() -> None:
        raise InjectedCrash(point)

    with faults.hooked(point, crash), pytest.raises(InjectedCrash):
        yield
