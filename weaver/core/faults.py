"""Named pause points for crash-injection tests (tests/crash.py, bench/crash.py).

``point("weave.before_catalog")`` does nothing unless the test-only setting
``WEAVER_TEST_PAUSE_POINTS`` names it; then the process announces the pause on stderr and sleeps,
so the harness can SIGKILL it at exactly that place between two commits. Production never sets it.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from weaver.core.settings import test_pause_points

#: The line a paused process prints (then the point's name) so the harness knows where it is.
PAUSED = "WEAVER_PAUSED"
#: How long a paused process waits for its kill before it carries on (a harness that died).
PAUSE_S = 600.0


_HOOKS: dict[str, Callable[[], None]] = {}


@contextmanager
def hooked(name: str, fn: Callable[[], None]) -> Iterator[None]:
    """Test-only, in-process: call `fn` whenever point `name` is reached (e.g. a barrier that makes
    two writers commit at the same moment). Removed on exit."""
    _HOOKS[name] = fn
    try:
        yield
    finally:
        _HOOKS.pop(name, None)


def point(name: str) -> None:
    """Pause here when the test-only setting names this point; otherwise return at once.

    ``name:go`` in the setting announces the point and carries on, so a harness can kill the
    process a measured time later, in the middle of the write that follows.
    """
    hook = _HOOKS.get(name)
    if hook is not None:
        hook()
    points = test_pause_points()
    if not points:
        return
    if name in points:
        sys.stderr.write(f"{PAUSED} {name}\n")
        sys.stderr.flush()
        time.sleep(PAUSE_S)
    elif f"{name}:go" in points:
        sys.stderr.write(f"{PAUSED} {name}:go\n")
        sys.stderr.flush()
