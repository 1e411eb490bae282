"""The folds: a state plus changes, the last op per key winning - one per engine.

``arrow`` (single process, pyarrow.compute), ``spark`` (DataFrame -> DataFrame transforms) and
``sizes`` (numpy, item sizes only, for metrics). Each is checked against the same brute-force
oracle in the tests.
"""

from weaver.replay.arrow import empty_state, fold, last_per_key
from weaver.replay.sizes import KeyState, LogView
from weaver.replay.spark import materialize_with_spark, with_last_state, woven_rows

__all__ = ["KeyState", "LogView", "empty_state", "fold", "last_per_key", "materialize_with_spark",
           "with_last_state", "woven_rows"]
