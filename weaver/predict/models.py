"""Forecast models behind `weaver.forecasting`: sample paths per series, first crossings.

Everything here is a plain function of numpy arrays so it can run in a worker process or a
Spark Python worker (``applyInPandas``). A job carries one partition's history (size in bytes
and write rate in writes/s at bucket ends), the future bucket ends of the window and the
thresholds; the result carries the crossing probability and the first-crossing quantiles.

Models:

- ``prophet`` - Prophet (linear trend, daily seasonality once two days of history exist), fitted
  by MAP; `predictive_samples` draws paths that include trend-change uncertainty (future
  changepoints sampled at the historical rate) and observation noise.
- ``arima``  - statsmodels ARIMA (state-space SARIMAX underneath): regression with ARIMA errors
  on a linear time trend (the drift) and, once two days exist, two daily Fourier pairs; errors
  ARI(1,1) for size (smooth, integrated growth) and IMA(1,1) for write rate (a noisy level:
  exponential smoothing); paths from `simulate` at the series' end (parameters at their MLE).

A constant series needs no model: its paths are the constant itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

MODELS = ("prophet", "arima")
DAY_US = 86_400 * 1_000_000
# Prophet's trend flexibility (changepoint_prior_scale). Size keeps Prophet's default 0.05: on 40
# simulated partitions (bench/forecast.py setup) 0.1 / 0.2 worsen the 24 h-ahead size MASE from 3.3
# to 6.6 / 7.5 (naive drift 5.4) - the trend then bends to each night's slower growth. (0.2 did
# halve the Brier score of one backtested day, 0.11 vs 0.21, but on 4 partitions only.) A write rate
# jumps in a burst, which 0.05 averages away: 0.15 follows a burst and keeps the rate MASE of 0.05,
# 0.5 overfits noise.
PROPHET_SIZE_CPS = 0.05
PROPHET_RATE_CPS = 0.15


@dataclass
class Job:
    """One partition's forecast problem (picklable, numpy only)."""

    partition_id: str
    ds: np.ndarray  # int64 us, bucket ends of the history
    size: np.ndarray  # float, bytes at each bucket end
    rate: np.ndarray  # float, writes/s over each bucket
    horizon: np.ndarray  # int64 us, future bucket ends inside the window
    size_threshold: float
    write_threshold: float
    n_samples: int
    seed: int
    model: str = "prophet"
    step: int = 3_600_000_000  # us between buckets


@dataclass
class Result:
    """Outcome of a Job: probability, dominant reason, first-crossing quantiles (us) or a skip reason."""

    partition_id: str
    probability: float = 0.0
    reason: str | None = None
    p10: int | None = None
    p50: int | None = None
    p90: int | None = None
    skip_reason: str | None = None
    fit_seconds: float = 0.0
    size_median: list = field(default_factory=list)  # per horizon point, for accuracy checks
    rate_median: list = field(default_factory=list)


def seed_for(text: str) -> int:
    """A deterministic 32-bit seed from text (e.g. the prediction id)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def quiet() -> None:
    """Silence Prophet/cmdstanpy/statsmodels chatter (worker initializer, and in-process)."""
    for name in ("prophet", "cmdstanpy", "prophet.plot", "py.warnings"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.ERROR)
        lg.propagate = False
        if not lg.handlers:
            lg.addHandler(logging.NullHandler())
    warnings.filterwarnings("ignore")
    os.environ.setdefault("CMDSTANPY_SILENCE", "1")


def preload() -> None:
    """Import the model libraries once (a forked worker then inherits them)."""
    quiet()
    import prophet  # noqa: F401
    from statsmodels.tsa.arima import model  # noqa: F401


def _is_constant(y: np.ndarray) -> bool:
    return bool(y.size == 0 or np.all(y == y[0]))


def sample_paths(ds: np.ndarray, y: np.ndarray, horizon: np.ndarray, *, model: str, n: int, seed: int,
                 flexible: bool = False) -> np.ndarray:
    """`n` predictive sample paths of series (ds, y) at `horizon` (shape n x len(horizon)).

    `flexible` marks a write-rate series: Prophet's trend may bend more (rates jump, sizes do not)
    and ARIMA models it as a noisy level, IMA(1,1), instead of a smooth integrated size, ARI(1,1).
    """
    if _is_constant(y):
        return np.full((n, len(horizon)), float(y[0]) if y.size else 0.0)
    if model == "prophet":
        return _prophet_paths(ds, y, horizon, n, seed, PROPHET_RATE_CPS if flexible else PROPHET_SIZE_CPS,
                              noise=flexible)
    if model == "arima":
        return _arima_paths(ds, y, horizon, n, seed, (0, 1, 1) if flexible else (1, 1, 0))
    raise ValueError(f"unknown model {model!r}")


def _naive(us: np.ndarray):
    import pandas as pd

    return pd.to_datetime(np.asarray(us, dtype="int64"), unit="us")  # Prophet wants tz-naive (UTC)


def _prophet_paths(ds, y, horizon, n, seed, cps: float, noise: bool = True) -> np.ndarray:
    """Prophet paths. Without `noise`, trend samples + the seasonal part (no observation noise):
    a size is measured exactly, and iid noise on each step would make first crossings early."""
    import pandas as pd

    quiet()  # before the import: prophet logs an error about plotly when it loads
    from prophet import Prophet

    span_days = (ds[-1] - ds[0]) / DAY_US
    m = Prophet(growth="linear", daily_seasonality=bool(span_days >= 2), weekly_seasonality=False,
                yearly_seasonality=False, uncertainty_samples=n,
                n_changepoints=int(min(25, max(0, len(y) // 3))), changepoint_range=0.95,
                changepoint_prior_scale=cps)
    m.fit(pd.DataFrame({"ds": _naive(ds), "y": y.astype(float)}))
    future = pd.DataFrame({"ds": _naive(horizon)})
    np.random.seed(seed)  # Prophet draws paths from numpy's global generator
    draws = m.predictive_samples(future)
    if noise:
        return np.asarray(draws["yhat"], dtype=float).T
    seasonal = m.predict(future)["additive_terms"].to_numpy(dtype=float)
    return (np.asarray(draws["trend"], dtype=float) + seasonal[:, None]).T


def _fourier(us: np.ndarray, k: int = 2) -> np.ndarray:
    phase = 2 * np.pi * (np.asarray(us, dtype="int64") % DAY_US) / DAY_US
    return np.column_stack([f(j * phase) for j in range(1, k + 1) for f in (np.sin, np.cos)])


def _arima_paths(ds, y, horizon, n, seed, order: tuple[int, int, int]) -> np.ndarray:
    quiet()
    from statsmodels.tsa.arima.model import ARIMA

    scale = float(np.max(np.abs(y))) or 1.0
    z = y.astype(float) / scale  # keep the optimiser in a well-conditioned range
    seasonal = (ds[-1] - ds[0]) / DAY_US >= 2
    exog = _fourier(ds) if seasonal else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Regression with ARIMA errors: y = drift * t + fourier * beta + e. (SARIMAX's own trend='t'
        # would act on the differenced series: a drift growing in time, quadratic paths.)
        # Unconstrained first (several times faster); refit constrained only when the estimate
        # is explosive (AR >= 1) or degenerate (MA far outside the unit circle, e.g. on a series
        # that is constant but for one point). An MA at -1 (an over-differenced noisy level) is
        # common and simulates fine.
        res = ARIMA(z, exog=exog, order=order, trend="t", enforce_stationarity=False,
                    enforce_invertibility=False).fit()
        if (not np.all(np.isfinite(res.params)) or np.any(np.abs(res.arparams) >= 1)
                or np.any(np.abs(res.maparams) > 1.05)):
            res = ARIMA(z, exog=exog, order=order, trend="t").fit()
        sims = res.simulate(len(horizon), anchor="end", repetitions=n,
                            exog=_fourier(horizon) if seasonal else None, rng=np.random.default_rng(seed))
    sims = np.asarray(sims, dtype=float).reshape(len(horizon), n)
    # A step of the simulation is one bucket; the window may start after the last history point.
    return sims.T * scale


def first_crossing(paths: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the first horizon point where each path exceeds `threshold` (len = no crossing)."""
    above = paths > threshold
    idx = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), idx, paths.shape[1])


def _horizon_from(ds: np.ndarray, horizon: np.ndarray, step: int) -> np.ndarray:
    """Future grid from the last history point to the window's end (models step one bucket)."""
    return np.arange(int(ds[-1]) + step, int(horizon[-1]) + 1, step, dtype=np.int64)


def run_job(job: Job) -> Result:
    """Sample both series, combine paths pairwise (independent models) and summarise crossings."""
    t0 = time.perf_counter()
    res = Result(job.partition_id)
    try:
        grid = _horizon_from(job.ds, job.horizon, job.step)  # includes bucket ends between history and window
        keep = np.isin(grid, job.horizon)
        size_p = sample_paths(job.ds, job.size, grid, model=job.model, n=job.n_samples, seed=job.seed)[:, keep]
        rate_p = sample_paths(job.ds, job.rate, grid, model=job.model, n=job.n_samples,
                              seed=(job.seed + 1) % 2**32, flexible=True)[:, keep]
    except Exception as exc:  # noqa: BLE001 - a model failing on one series must not stop the run
        res.skip_reason = f"{job.model} fit failed: {type(exc).__name__}: {str(exc)[:200]}"
        res.fit_seconds = time.perf_counter() - t0
        return res
    if not (np.all(np.isfinite(size_p)) and np.all(np.isfinite(rate_p))):
        res.skip_reason = f"{job.model} produced non-finite sample paths (degenerate fit)"
        res.fit_seconds = time.perf_counter() - t0
        return res
    h = len(job.horizon)
    fs = first_crossing(size_p, job.size_threshold)
    fr = first_crossing(rate_p, job.write_threshold)
    first = np.minimum(fs, fr)
    crossed = first < h
    res.probability = float(np.mean(crossed))
    if crossed.any():
        # The data manager checks size first, so a tie is a size split.
        size_first = (fs <= fr)[crossed]
        res.reason = "size" if np.mean(size_first) >= 0.5 else "throughput"
        times = job.horizon[first[crossed]]
        q = np.quantile(times, [0.1, 0.5, 0.9], method="inverted_cdf")
        res.p10, res.p50, res.p90 = (int(v) for v in q)
    res.size_median = [float(v) for v in np.median(size_p, axis=0)]
    res.rate_median = [float(v) for v in np.median(rate_p, axis=0)]
    res.fit_seconds = time.perf_counter() - t0
    return res


def spark_fit(pdf):
    """`applyInPandas` body: one pickled Job per row in, one pickled Result per row out."""
    import pickle

    import pandas as pd

    quiet()
    rows = [{"partition_id": pid, "result": pickle.dumps(run_job(pickle.loads(blob)))}
            for pid, blob in zip(pdf["partition_id"], pdf["job"])]
    return pd.DataFrame(rows, columns=["partition_id", "result"])
