"""A producer of contract-conforming lakes (``weaver simulate``); the pipeline never assumes it."""

from weaver.simulate.simulator import KEY_SPACE, SimConfig, SimResult, key_name, simulate

__all__ = ["KEY_SPACE", "SimConfig", "SimResult", "key_name", "simulate"]
