"""Process liveness by pid, for the deployment's service supervision and the scratch folders."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists and is not a zombie (None or 0: no process)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
