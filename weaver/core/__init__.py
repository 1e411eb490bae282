"""The small core every stage stands on: settings, time, ids, errors, storage and schemas, Spark.

Nothing is imported here: ``weaver.core.settings`` must stay cheap to import (DAG files parse it).
"""
