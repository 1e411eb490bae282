"""Prediction: partition metrics, forecast models, split probabilities and keys, backtests."""

from weaver.predict.backtest import backtest, read_results
from weaver.predict.forecasting import (MODELS, gather, gather_batched, predict, read_predictions, run_jobs,
                                       run_jobs_of, run_params)
from weaver.predict.metrics import build_metrics, compute_metrics, read_log, read_metrics
from weaver.predict.splitkey import balanced_key, in_range, size_split_key, throughput_split_key

__all__ = ["MODELS", "backtest", "balanced_key", "build_metrics", "compute_metrics", "gather", "gather_batched",
           "in_range", "predict", "read_log", "read_metrics", "read_predictions", "read_results", "run_jobs",
           "run_jobs_of", "run_params", "size_split_key", "throughput_split_key"]
