"""The set-up fails in one line that says what to do when Java or the Delta jars are missing."""

from __future__ import annotations

import os
import subprocess
import sys


def _fetch(tmp_path, **env):
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WEAVER_CACHE": str(tmp_path / "cache")}
    base.update(env)
    return subprocess.run([sys.executable, "-m", "weaver.core.jars", "fetch"], capture_output=True, text=True,
                          timeout=120, env=base)


def test_missing_java_says_what_to_install(tmp_path):
    (tmp_path / "bin").mkdir()
    p = _fetch(tmp_path, PATH=str(tmp_path / "bin"), JAVA_HOME=str(tmp_path / "nojava"))
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Java not found" in lines[0] and "Java 17" in lines[0]


def test_local_jars_variable_is_checked(tmp_path):
    p = _fetch(tmp_path, WEAVER_DELTA_JARS=str(tmp_path / "missing.jar"))
    assert p.returncode == 1
    assert "WEAVER_DELTA_JARS names missing files" in p.stderr
    jar = tmp_path / "delta.jar"
    jar.write_bytes(b"PK")
    ok = _fetch(tmp_path, WEAVER_DELTA_JARS=str(jar))
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "cache").exists()  # nothing fetched


def test_unreachable_repository_names_the_variable(tmp_path):
    # A mirror on a closed loopback port stands in for an unreachable Maven Central.
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(
        '<ivysettings><settings defaultResolver="dead"/><resolvers>'
        '<ibiblio name="dead" m2compatible="true" root="http://127.0.0.1:9/maven2/"/>'
        "</resolvers></ivysettings>")
    env = {"WEAVER_IVY_SETTINGS": str(settings)}
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    p = _fetch(tmp_path, **env)
    assert p.returncode == 1
    assert len(p.stderr.strip().splitlines()) == 1
    assert "WEAVER_DELTA_JARS" in p.stderr and "could not fetch" in p.stderr
