"""What every benchmark records about the machine it ran on (one definition for all of bench/)."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
from pathlib import Path


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
