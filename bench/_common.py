"""What every benchmark records about the machine it ran on (one definition for all of bench/), and
what a benchmark stopped by a signal leaves behind.

A benchmark builds its lakes in a temporary folder (gigabytes for weave and scale) and starts
servers (uvicorn, Postgres, Spark), removed and stopped in ``finally`` blocks. Python runs those on
Ctrl-C but not on SIGTERM or SIGHUP (``timeout``, ``kill``, a closed terminal): importing this
module makes both raise SystemExit in the benchmark's own process, so the same blocks run. A forked
worker keeps the default (it dies by the signal, as before); SIGKILL cannot be caught.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import signal
import subprocess
import threading
from pathlib import Path

_MAIN_PID = os.getpid()


def _exit_on_signal(signum, frame) -> None:
    if os.getpid() != _MAIN_PID:  # a forked worker: die by the signal, as without this handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(_sig) is signal.SIG_DFL:  # a handler the benchmark set itself is kept
            signal.signal(_sig, _exit_on_signal)


def machine(*packages: str) -> dict:
    """CPU model, cores, RAM, OS, Python/Java versions, load at start, and `packages`' versions."""
    cpu, ram = platform.processor() or "", None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        ram = round(int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                             if line.startswith("MemTotal"))) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        java = None
    out = {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram, "python": platform.python_version(), "java": java,
           "os": platform.platform(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    for name in packages:
        out[name] = getattr(importlib.import_module(name), "__version__", None)
    out.update(git())
    return out


def git() -> dict:
    """The commit the benchmark measured, and whether the working tree differed from it."""
    root = Path(__file__).resolve().parent.parent

    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        return {"git_commit": run("rev-parse", "HEAD") or None,
                # Code only: a result file another benchmark just wrote (bench/results) is not a change
                # of what is measured.
                "git_dirty": bool(run("status", "--porcelain", "--untracked-files=no", "--", "weaver", "bench",
                                      "spark_jobs", ":(exclude)bench/results"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def save(result: dict, out: str, *, quick: bool = False) -> None:
    """Print the result's ratios and write it to `out` (a ``--quick`` smoke run writes nothing)."""
    print(json.dumps(result["ratios"], indent=2, default=str))
    if quick:
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
