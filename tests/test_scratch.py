"""Scratch folders (weaver.core.scratch): a run's spill folder outlives a SIGKILL, and the next run
on the host removes it; folders of live processes and of other hosts are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from weaver.core import scratch as scratch_module
from weaver.core.scratch import PREFIX, host_tag, scratch

KILLED = """
import os, signal, sys
from weaver.core.scratch import scratch
with scratch("weave") as folder:
    (__import__("pathlib").Path(folder) / "woven.arrows").write_bytes(b"x" * 4096)
    print(folder, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_no_other(tmp_path, monkeypatch):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == -signal.SIGKILL, err
    left = Path(out.strip())
    assert left.parent == tmp_path and (left / "woven.arrows").exists()  # the kill left it behind

    other_host = tmp_path / f"{PREFIX}{p.pid}-{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-weave-a"
    mine_alive = tmp_path / f"{PREFIX}{os.getpid()}-{host_tag()}-restore-b"
    unrelated = tmp_path / "weaver-weave-c"  # not a scratch folder's name
    for d in (other_host, mine_alive, unrelated):
        d.mkdir()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scratch_module, "_next_clear", 0.0)  # this process has not looked yet
    with scratch("run") as folder:
        assert Path(folder).parent == tmp_path and Path(folder).is_dir()
        assert not left.exists()
        assert other_host.is_dir() and mine_alive.is_dir() and unrelated.is_dir()
    assert not Path(folder).exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted([other_host.name, mine_alive.name, unrelated.name])

    # Within the minute the process does not look again: a folder that died since stays until then.
    late = tmp_path / f"{PREFIX}{p.pid}-{host_tag()}-weave-d"
    late.mkdir()
    with scratch("run"):
        assert late.is_dir()
    monkeypatch.setattr(scratch_module, "_next_clear", 0.0)
    with scratch("run"):
        assert not late.exists()
