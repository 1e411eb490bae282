"""Local scratch folders that a killed process does not leave behind for good.

Runs spill to local disk: the Arrow weave's spool (about the run's rows, compressed), restore_many's
group tails, the metrics run's checkpoint copies - gigabytes on a large lake. A process killed by
SIGKILL or the OOM killer cannot remove its folder, and reruns after such kills would fill the
disk. So every folder is named after its process (``weaver-scratch-<pid>-<host>-<kind>-...``, host
as a short hash of the host name), and opening one first removes this host's folders whose
process is gone - at most once a minute per process, since a long-lived server (the API's
standard recoveries) opens one per request and the temp dir may be large. A folder of a live
process, or of another host sharing the temp dir, is never touched; a reused pid only delays a
removal to a later run. "Host" is the host name: containers that share one and a temp dir but
not a pid namespace (two containers of a pod over one emptyDir) need a TMPDIR each.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Iterator, Mapping

from weaver.core.procs import pid_alive

PREFIX = "weaver-scratch-"
#: A process looks for dead processes' folders at most this often.
CLEAR_EVERY_S = 60.0
_next_clear = 0.0


@cache
def host_tag() -> str:
    """This host's tag in folder names (8 hex digits: host names may hold dashes and dots)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def clear_dead(root: str | Path | None = None) -> list[str]:
    """Remove this host's scratch folders under `root` (default: the temp dir) whose process is
    gone; returns their names."""
    root = Path(root or tempfile.gettempdir())
    host, gone = host_tag(), []
    for d in root.glob(PREFIX + "*"):
        parts = d.name[len(PREFIX):].split("-")
        if len(parts) < 3 or not parts[0].isdigit() or parts[1] != host or not d.is_dir():
            continue
        if not pid_alive(int(parts[0])):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d.name)
    return gone


def _clear_now_and_then() -> None:
    global _next_clear
    if time.monotonic() >= _next_clear:
        clear_dead()
        _next_clear = time.monotonic() + CLEAR_EVERY_S


def _prefix(kind: str) -> str:
    return f"{PREFIX}{os.getpid()}-{host_tag()}-{kind}-"


@contextmanager
def scratch(kind: str) -> Iterator[str]:
    """A temporary folder for this process (removed on exit), after clearing dead processes' ones
    (when this process has not looked for a minute)."""
    _clear_now_and_then()
    with tempfile.TemporaryDirectory(prefix=_prefix(kind)) as folder:
        yield folder


def process_scratch(kind: str) -> str:
    """A scratch folder for the rest of this process' life: removed when the interpreter exits,
    or after a kill by the next process on the host that clears (as :func:`scratch`'s).

    For what a child of this process writes while this process lives (the Spark JVM's block
    manager and shuffle files, `weaver.core.spark`): a child killed on its own leaves its files in
    a folder named after this process, which goes with it."""
    _clear_now_and_then()
    folder = tempfile.mkdtemp(prefix=_prefix(kind))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def jvm_scratch_env(folder: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that make a Spark JVM started with `environ` put its local dir (block manager,
    shuffle and spill files, `spark-*` folders) and its Java temp dir in `folder`.

    Spark's default for both is `java.io.tmpdir` (`/tmp`, whatever `TMPDIR` says); a JVM killed on
    its own (the OOM killer's pick: it is the largest process) leaves its files there for good. An
    operator's own `-Djava.io.tmpdir` in `SPARK_SUBMIT_OPTS` wins; callers leave an operator's
    `SPARK_LOCAL_DIRS` alone (they pass no folder then)."""
    env = {"SPARK_LOCAL_DIRS": folder}
    opts = environ.get("SPARK_SUBMIT_OPTS", "")
    if "-Djava.io.tmpdir=" not in opts:
        env["SPARK_SUBMIT_OPTS"] = f"{opts} -Djava.io.tmpdir={folder}".strip()
    return env
