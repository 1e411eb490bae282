"""The pinned Delta jars for Spark: fetched once into a project-local cache, or given by the user.

`python -m weaver.core.jars fetch` resolves ``io.delta:delta-spark_2.13`` (and through it
``io.delta:delta-storage``) at the version matching the pinned delta-spark wheel, using Spark's
own Ivy resolver against Maven Central, into ``.cache/ivy``; the jar paths are then listed in
``.cache/jars/jars.txt``. Set ``WEAVER_DELTA_JARS=/path/a.jar,/path/b.jar`` to use local jars
instead (air-gapped machines), or ``WEAVER_IVY_SETTINGS=/path/ivysettings.xml`` to resolve through a
mirror.

The same command fetches Spark's S3 filesystem (``org.apache.hadoop:hadoop-aws`` and the AWS SDK
bundle it was built against) into ``.cache/ivy-s3``, listed in ``.cache/jars/s3-jars.txt``: they go
on the classpath only when the lake or the woven root is ``s3://``. hadoop-aws must be the Hadoop
version inside the pinned pyspark wheel (its ``jars/hadoop-client-api-*.jar``), else S3A fails at
run time with a missing method; :func:`s3_jars` checks it. ``WEAVER_S3_JARS`` names local copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from weaver.core.errors import EnvironmentProblem
from weaver.core.settings import Settings, load_settings

DELTA_VERSION = "4.0.1"  # must equal the delta-spark pin in requirements.txt
SCALA = "2.13"
PACKAGES = [f"io.delta:delta-spark_{SCALA}:{DELTA_VERSION}", f"io.delta:delta-storage:{DELTA_VERSION}"]
REQUIRED_PREFIXES = (f"io.delta_delta-spark_{SCALA}-{DELTA_VERSION}", f"io.delta_delta-storage-{DELTA_VERSION}")
HADOOP_VERSION = "3.4.1"  # must equal pyspark's jars/hadoop-client-api-<version>.jar (pyspark 4.0.1)
AWS_SDK_VERSION = "2.24.6"  # the software.amazon.awssdk:bundle hadoop-aws 3.4.1 depends on
S3_PACKAGES = [f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}", f"software.amazon.awssdk:bundle:{AWS_SDK_VERSION}"]
S3_REQUIRED_PREFIXES = (f"org.apache.hadoop_hadoop-aws-{HADOOP_VERSION}", f"software.amazon.awssdk_bundle-{AWS_SDK_VERSION}")


def _ivy_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "ivy"


def _list_file(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "jars" / "jars.txt"


def check_java() -> str:
    """Return `java -version`'s first line, or raise with what to install."""
    home = os.environ.get("JAVA_HOME")
    java = shutil.which("java", path=((home + "/bin:") if home else "") + os.environ.get("PATH", ""))
    if not java:
        raise EnvironmentProblem("Java not found: install Java 17 (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    first = (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else ""
    return first


def delta_jars(settings: Settings) -> list[str]:
    """Absolute paths of the Delta jars to put on Spark's classpath (the user's, or the fetched ones)."""
    override = settings.delta_jars
    if override:
        jars = [j.strip() for j in override.split(",") if j.strip()]
        missing = [j for j in jars if not Path(j).is_file()]
        if missing:
            raise EnvironmentProblem(f"WEAVER_DELTA_JARS names missing files: {missing}")
        return jars
    list_file = _list_file(settings)
    if not list_file.exists():
        raise EnvironmentProblem(
            "Delta jars not fetched: run `make jars` (needs Maven Central) or set WEAVER_DELTA_JARS "
            f"to local copies of {', '.join(PACKAGES)}"
        )
    jars = [j for j in list_file.read_text().split() if j]
    missing = [j for j in jars if not Path(j).is_file()]
    if missing:
        raise EnvironmentProblem(f"cached Delta jars vanished ({missing}); rerun `make jars`")
    return jars


def _given(override: str, var: str) -> list[str]:
    jars = [j.strip() for j in override.split(",") if j.strip()]
    missing = [j for j in jars if not Path(j).is_file()]
    if missing:
        raise EnvironmentProblem(f"{var} names missing files: {missing}")
    return jars


def spark_hadoop_version() -> str | None:
    """The Hadoop version bundled in the installed pyspark (from its hadoop-client-api jar name)."""
    import pyspark

    found = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    return found[0].name[len("hadoop-client-api-"):-len(".jar")] if found else None


def s3_jars(settings: Settings) -> list[str]:
    """hadoop-aws and its AWS SDK bundle for an s3:// lake (the user's, or the fetched ones)."""
    have = spark_hadoop_version()
    if have is not None and have != HADOOP_VERSION:
        raise EnvironmentProblem(f"pyspark bundles Hadoop {have} but weaver pins hadoop-aws {HADOOP_VERSION}: set "
                                 "HADOOP_VERSION/AWS_SDK_VERSION in weaver/core/jars.py to match, then `make jars`")
    if settings.s3_jars:
        return _given(settings.s3_jars, "WEAVER_S3_JARS")
    list_file = _list_file(settings).with_name("s3-jars.txt")
    if not list_file.exists():
        raise EnvironmentProblem("S3 jars for Spark not fetched: run `make jars` (needs Maven Central) or set "
                                 f"WEAVER_S3_JARS to local copies of {', '.join(S3_PACKAGES)}")
    jars = [j for j in list_file.read_text().split() if j]
    missing = [j for j in jars if not Path(j).is_file()]
    if missing:
        raise EnvironmentProblem(f"cached S3 jars vanished ({missing}); rerun `make jars`")
    return jars


def fetch(settings: Settings) -> list[str]:
    """Resolve the pinned Delta and S3 packages with spark-submit's Ivy into the project cache
    (idempotent). Local jars given by WEAVER_DELTA_JARS mean an air-gapped machine: nothing is
    fetched then (an s3:// lake also needs WEAVER_S3_JARS there)."""
    if settings.delta_jars:
        return delta_jars(settings)  # the user's local jars: validate them, fetch nothing
    jars = _resolve(settings, PACKAGES, REQUIRED_PREFIXES, _ivy_dir(settings), _list_file(settings), ".complete",
                    "WEAVER_DELTA_JARS")
    if not settings.s3_jars:
        _resolve(settings, S3_PACKAGES, S3_REQUIRED_PREFIXES, Path(settings.cache_dir) / "ivy-s3",
                 _list_file(settings).with_name("s3-jars.txt"), ".complete-s3", "WEAVER_S3_JARS")
    return jars


def _resolve(settings: Settings, packages: list[str], prefixes: tuple[str, ...], ivy_dir: Path, list_file: Path,
             marker: str, var: str) -> list[str]:
    """Resolve `packages` (with their dependencies) into `ivy_dir`; list the jars in `list_file`."""
    complete = list_file.parent / marker
    if complete.exists() and list_file.exists():
        jars = [j for j in list_file.read_text().split() if j]
        if all(Path(j).is_file() for j in jars):
            return jars
    check_java()
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    submit = spark_home / "bin" / "spark-submit"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    ivy_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        noop = Path(tmp) / "noop.py"
        noop.write_text("# resolves --packages only\n")
        env = dict(os.environ, SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1",
                   PYSPARK_PYTHON=sys.executable)
        cmd = [str(submit), "--master", "local[1]", "--conf", f"spark.jars.ivy={ivy_dir}",
               "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
               "--packages", ",".join(packages), str(noop)]
        if settings.ivy_settings:  # a corporate mirror instead of Maven Central
            cmd[1:1] = ["--conf", f"spark.jars.ivySettings={settings.ivy_settings}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except subprocess.TimeoutExpired as exc:
            raise EnvironmentProblem(f"fetching {', '.join(packages)} timed out; set {var} to local jars") from exc
    got = sorted(str(p) for p in (ivy_dir / "jars").glob("*.jar"))
    names = [Path(p).name for p in got]
    if proc.returncode != 0 or not all(any(n.startswith(pre) for n in names) for pre in prefixes):
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-2:])
        raise EnvironmentProblem(
            f"could not fetch {', '.join(packages)} from Maven Central; set {var}=/path/a.jar,/path/b.jar "
            f"to local copies (spark-submit said: {tail[-300:]})"
        )
    list_file.write_text("\n".join(got) + "\n")
    complete.touch()
    return got


def main(argv: list[str] | None = None) -> int:
    """`python -m weaver.core.jars fetch`: fetch the jars, or one line saying what to do (exit 1)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["fetch"]:
            settings = load_settings()
            jars = fetch(settings)
            print(f"Delta jars ready ({DELTA_VERSION}): {len(jars)} files")
            if not settings.delta_jars or settings.s3_jars:
                print(f"S3 jars ready (hadoop-aws {HADOOP_VERSION}, AWS SDK {AWS_SDK_VERSION}): "
                      f"{len(s3_jars(settings))} files")
            return 0
        print("usage: python -m weaver.core.jars fetch", file=sys.stderr)
        return 2
    except EnvironmentProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
