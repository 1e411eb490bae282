"""Run a Spark standalone master or worker from the pip pyspark (the compose Spark services' command).

``python -m weaver.deploy.spark_daemon master --host H --port P --webui-port W`` and
``... worker --host H --webui-port W [--cores N] [--memory M] spark://MASTER:PORT`` replace this
process with ``spark-class`` (exec), so signals reach the JVM directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from weaver.core.jars import check_java

_CLASSES = {"master": "org.apache.spark.deploy.master.Master", "worker": "org.apache.spark.deploy.worker.Worker"}


def spark_home() -> Path:
    """The pip pyspark's folder, which is a complete SPARK_HOME (bin/, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _CLASSES:
        print("usage: python -m weaver.deploy.spark_daemon master|worker [spark-class options]", file=sys.stderr)
        return 2
    check_java()
    home = spark_home()
    os.environ["SPARK_HOME"] = str(home)
    # Spark daemons must not background themselves: the supervisor (compose, weaver services) owns them.
    os.environ["SPARK_NO_DAEMONIZE"] = "1"
    exe = str(home / "bin" / "spark-class")
    os.execv(exe, [exe, _CLASSES[args[0]], *args[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
