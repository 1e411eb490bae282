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

- ``path``   - the thing that splits, modelled directly and in numpy only (no fit, ~ms per
  series): size paths are the current size plus block-bootstrapped hourly increments (whole
  days of the recent history, aligned by hour of day, so daily seasonality, bursts and
  autocorrelation come along), scaled from their own day's mean increment to the last day's plus the last 6
  buckets' deviation from the same hours of earlier days (on a first day: from the day's mean times
  the lake's median ratio of the two, `Job.lake_ratio`) (the level drawn per path, Normal with
  twice the standard error of that mean combined with the spread of the last days' means), and
  extrapolated with the day-over-day change of that mean (a random share per path); write-rate paths are a
  seasonal naive forecast (the same hour on a bootstrapped recent day, scaled to the last day's
  level and its day-over-day growth, `rate_growth`: on a second day from the same hours a day
  apart; one-off bursts cut to a cap, `one_off_capped`) times a decaying anomaly (the last hours' deviation from that pattern, AR(1) with
  phi = 0.93) with heavy-tailed (Student t, 4 dof) AR noise, then Poisson counts per bucket.
- ``statsforecast`` - Nixtla statsforecast's `AutoETS` (exponential smoothing, error/trend/season
  chosen per series by AICc; seasonal candidates once three days of history exist), fitted for
  all series of a run at once: `StatsForecast(...).simulate` over one frame of every partition's
  series, spread over `n_jobs` processes (`run_batch`); paths are simulated from the fitted state
  space model. Size and write rate are two such frames (one model object per frame).

A constant series needs no model: its paths are the constant itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from weaver.core.scratch import process_scratch, scratch

MODELS = ("prophet", "arima", "path", "statsforecast")
BATCH_MODELS = ("statsforecast",)  # fitted for all partitions of a run at once (`run_batch`)
SF_SEASON_DAYS = 3  # AutoETS gets daily-seasonal candidates from this much history on (fewer: 24 states on 48 points)
DEFAULT_MODEL = "path"  # chosen by bench/forecast_quality.py; see docs/prediction.md §8
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
    hot: HotContext | None = None  # the run's moving hot spot as it concerns this partition (`path` only)
    lake_ratio: float | None = None  # the run's `lake_recent_ratio` (`path` only; used on a first day)


@dataclass
class Result:
    """Outcome of a Job: probability, dominant reason, first-crossing quantiles (us) or a skip reason."""

    partition_id: str
    probability: float = 0.0
    reason: str | None = None
    # The probability split by the kind of the first crossing (sums to `probability`): what a
    # score of throughput-triggered splits alone must use, not the any-kind probability.
    p_size: float = 0.0
    p_throughput: float = 0.0
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
    _prophet_class()
    from statsmodels.tsa.arima import model  # noqa: F401


def _prophet_class():
    """Prophet's model class, its Stan backend's per-process temp dir in a scratch folder.

    cmdstanpy makes a temp dir when it is imported (`tempfile.mkdtemp()`: the data and init files
    of a fit in progress, and the output of fits given no folder of their own) and removes it only
    at interpreter exit, so a killed process left it in /tmp. Imported here with `tempfile.tempdir`
    pointing into a scratch folder of this process (`weaver.core.scratch.process_scratch`), it
    goes with this process' exit or, after a kill, with the next run's clear. Forked forecast
    workers inherit the parent's."""
    quiet()  # before the import: prophet logs an error about plotly when it loads
    if "cmdstanpy" not in sys.modules:
        given = tempfile.tempdir
        tempfile.tempdir = process_scratch("stan")
        try:
            import cmdstanpy  # noqa: F401
        finally:
            tempfile.tempdir = given
    from prophet import Prophet

    return Prophet


def _is_constant(y: np.ndarray) -> bool:
    return bool(y.size == 0 or np.all(y == y[0]))


def sample_paths(ds: np.ndarray, y: np.ndarray, horizon: np.ndarray, *, model: str, n: int, seed: int,
                 flexible: bool = False, lake_ratio: float | None = None) -> np.ndarray:
    """`n` predictive sample paths of series (ds, y) at `horizon` (shape n x len(horizon)).

    `flexible` marks a write-rate series: Prophet's trend may bend more (rates jump, sizes do not)
    and ARIMA models it as a noisy level, IMA(1,1), instead of a smooth integrated size, ARI(1,1).
    `lake_ratio` (`path` sizes only): the run's `lake_recent_ratio`, see `size_terms`.
    """
    if _is_constant(y):
        return np.full((n, len(horizon)), float(y[0]) if y.size else 0.0)
    if model == "prophet":
        return _prophet_paths(ds, y, horizon, n, seed, PROPHET_RATE_CPS if flexible else PROPHET_SIZE_CPS,
                              noise=flexible)
    if model == "arima":
        return _arima_paths(ds, y, horizon, n, seed, (0, 1, 1) if flexible else (1, 1, 0))
    if model == "path":
        return _path_rate(ds, y, horizon, n, seed) if flexible else _path_size(ds, y, horizon, n, seed, lake_ratio)
    if model == "statsforecast":
        return _sf_paths([(ds, y)], [len(horizon)], n, seed, n_jobs=1, flexible=flexible)[0]
    raise ValueError(f"unknown model {model!r}")


def _naive(us: np.ndarray):
    import pandas as pd

    return pd.to_datetime(np.asarray(us, dtype="int64"), unit="us")  # Prophet wants tz-naive (UTC)


def _prophet_paths(ds, y, horizon, n, seed, cps: float, noise: bool = True) -> np.ndarray:
    """Prophet paths. Without `noise`, trend samples + the seasonal part (no observation noise):
    a size is measured exactly, and iid noise on each step would make first crossings early."""
    import pandas as pd

    Prophet = _prophet_class()
    span_days = (ds[-1] - ds[0]) / DAY_US
    m = Prophet(growth="linear", daily_seasonality=bool(span_days >= 2), weekly_seasonality=False,
                yearly_seasonality=False, uncertainty_samples=n,
                n_changepoints=int(min(25, max(0, len(y) // 3))), changepoint_range=0.95,
                changepoint_prior_scale=cps)
    # cmdstanpy writes each fit's output (CSV, console) into a folder of its per-process temp dir
    # and removes only that whole dir, at interpreter exit: a process that ends without atexit
    # (a pool or PySpark worker, a killed task) left every fit's folder in /tmp for good. Here each
    # fit has its own scratch folder, gone once the fit has been read (a killed worker's with the
    # next run's clear).
    with scratch("prophet") as out:
        m.fit(pd.DataFrame({"ds": _naive(ds), "y": y.astype(float)}), output_dir=out)
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


# --- the path model ------------------------------------------------------------------------------
PATH_MAX_DAYS = 3  # bootstrap blocks come from the last 3 days (older days describe another regime)
# Width of the size level's spread in units of its estimated uncertainty. Hourly Brier on tuning
# seeds 100-102 (5 shapes; never the evaluated seeds 0-4): 1 -> 0.178, 2 -> 0.168 (0.165 with the
# slope from the next bucket on), 3 -> 0.163 raw but 0.160 vs 0.159 for 2 after an isotonic map
# fitted leaving one seed out, and a lower recall at precision 0.8.
PATH_LEVEL_WIDTH = 2.0
# Share of the day means' spread (or, with < 2 days, of the recent shift) taken into the level's
# uncertainty. 1 counted a growing partition's growth twice: as the slope and as level noise (a
# noise-free history growing 40 %/day got 0.82 for a crossing 12 h ahead, 0.22 for one 6 h past the
# window). Hourly Brier on tuning seeds 100-104 after an isotonic map fitted on seeds 100-102 and
# applied to 103-104 and the other way round: 1 -> 0.1367, 0.5 -> 0.1335, 0.25 -> 0.1332, 0 -> 0.1336
# (grid 0.131 / 0.127 / 0.125 / 0.127); 0.5 keeps the best raw Brier of those (0.140 vs 0.143, 0.145).
PATH_SPREAD_SHARE = 0.5
# Days of history (whole days of increments) from which the slope is extrapolated from the middle of
# the last day instead of its end. The last day's mean increment is its level 12 h back, so a growing
# partition's level now is half a day of growth higher: without this the size paths of 8-day lakes
# cross late 4-16 h ahead (47-55 % of those splits more than 1 h late, calibration_guard's
# ``lake_timing_by_lead``). From 3 days on (two day-over-day changes agree on the slope; from 2 the
# noisier single change over-extrapolated: 4-day tuning lakes no better). Tuning seeds 100-104, 8-day
# lakes, with the held-out calibration choice: grid Brier 0.0696 -> 0.0692, hourly 0.0756 -> 0.0743,
# share of timing errors <= 1 h 0.50 -> 0.53; seeds 105-109: grid 0.0803 -> 0.0768, hourly
# 0.0866 -> 0.0836 (both with the choice, by hand, docs/prediction.md §8 tenth pass).
PATH_LEAD_MIN_DAYS = 3
PATH_PHI = 0.93  # hourly persistence of a write-rate anomaly (half-life ~10 h: a level shift lasts, a burst fades)
# Bounds of the factor that scales a bootstrapped size increment from its own day's mean increment
# to the step's (a near-zero day mean must not blow one bucket up without limit). Hourly Brier
# after the prior map on tuning seeds 100-104: (0.25, 4) 0.1314, (0.1, 10) 0.1321.
PATH_SCALE_RANGE = (0.25, 4.0)


def _grid(ds: np.ndarray, horizon: np.ndarray) -> tuple[int, int]:
    """(bucket us, buckets per day) of a series."""
    step = int(horizon[1] - horizon[0]) if len(horizon) > 1 else int(np.median(np.diff(ds))) if len(ds) > 1 \
        else 3_600_000_000
    return step, max(1, int(round(DAY_US / step)))


def _block_index(rng, m: int, per_day: int, h: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per path a lag of j whole days (1..PATH_MAX_DAYS, weight 1/j) and the source index of each
    future step in a series of length m: the same time of day j days back, wrapping every j days.
    Returns (index n x h, day-of-source n x h: 0 = the last day)."""
    days = min(PATH_MAX_DAYS, m // per_day)
    k = np.arange(h)
    if days < 1:  # less than a day: iid bootstrap of what there is
        idx = rng.integers(0, m, size=(n, h))
        return idx, np.zeros((n, h), dtype=int)
    w = 1.0 / np.arange(1, days + 1)
    j = rng.choice(np.arange(1, days + 1), size=n, p=w / w.sum())
    shift = rng.integers(-1, 2, size=n) if per_day >= 12 else np.zeros(n, dtype=int)  # +-1 bucket of jitter
    span = j[:, None] * per_day
    idx = (m - span) + (k[None, :] % span)
    idx = np.clip(idx + shift[:, None], 0, m - 1)
    return idx, (m - 1 - idx) // per_day


def _day_means(x: np.ndarray, per_day: int) -> np.ndarray:
    """Mean of each whole day counted back from the end (0 = the last day); 1 entry when < a day."""
    days = max(1, min(PATH_MAX_DAYS + 1, len(x) // per_day))
    return np.array([np.mean(x[max(0, len(x) - (d + 1) * per_day): len(x) - d * per_day]) for d in range(days)])


@dataclass
class SizeTerms:
    """The deterministic part of the path model's size paths (a function of the history only)."""

    inc: np.ndarray  # increments of the history
    mu: np.ndarray  # mean increment of each whole day back from the end (0 = the last day)
    slope: float  # change of the mean increment per day
    sd: float  # standard deviation of the level (the mean increment ahead) across paths
    shift: float  # the last 6 buckets against the same buckets of earlier days (first day: of the lake)
    lead: float = 0.0  # days the slope is extrapolated over before the first step (PATH_LEAD_MIN_DAYS)


PATH_RECENT = 6  # buckets of the recent level: the shift compares their mean increment with earlier ones


def recent_ratio(y: np.ndarray, per_day: int) -> float | None:
    """The last PATH_RECENT buckets' mean size increment over the last day's (the whole history's
    when shorter), or None with fewer than 2 x PATH_RECENT increments or a last-day mean <= 0."""
    inc = np.diff(np.asarray(y, dtype=float))
    if len(inc) < 2 * PATH_RECENT:
        return None
    mu0 = float(np.mean(inc[-per_day:]))  # the last day's mean, `_day_means(inc, per_day)[0]`
    return float(np.mean(inc[-PATH_RECENT:])) / mu0 if mu0 > 0 else None


def lake_recent_ratio(series: list[np.ndarray], per_day: int) -> float | None:
    """The median `recent_ratio` of a run's partitions (None from fewer than 3): what the lake's
    daily cycle and shared growth alone make of a first day's last hours (`size_terms`)."""
    got = [r for r in (recent_ratio(y, per_day) for y in series) if r is not None]
    return float(np.median(got)) if len(got) >= 3 else None


def size_terms(y: np.ndarray, per_day: int, lake_ratio: float | None = None) -> SizeTerms:
    """Deterministic terms of `_path_size` (shared with `weaver.predict.triage`'s bound).

    `lake_ratio` (`lake_recent_ratio`, `Job.lake_ratio`) gives a first day's history its shift."""
    y = np.asarray(y, dtype=float)
    inc = np.diff(y) if len(y) > 1 else np.zeros(1)
    mu = _day_means(inc, per_day)
    slope = (mu[0] - mu[1]) if len(mu) > 1 else 0.0  # change of the mean increment per day
    # Level uncertainty: the standard error of the last day's mean plus how much whole days' means
    # differ (a hot spot arriving or leaving, a change of op mix: the next day is one more such
    # draw), widened PATH_LEVEL_WIDTH times. With the standard error alone the paths were far too
    # sharp: raw probabilities of 0.9-1 came true 81 % of the time, those below 0.1 16 %.
    se = float(np.std(inc[-per_day:])) / np.sqrt(min(per_day, len(inc)))
    # The last 6 buckets against the same buckets of earlier days (re-levelled): a hot spot that
    # arrived or left within the day shifts the level now, not a day later.
    last, m = min(PATH_RECENT, len(inc)), len(inc)
    prev = [inc[m - d * per_day - last: m - d * per_day] - mu[min(d, len(mu) - 1)] + mu[0]
            for d in range(1, min(PATH_MAX_DAYS, m // per_day) + 1) if m - d * per_day - last >= 0]
    if prev:
        shift = float(np.mean(inc[-last:]) - np.median([np.mean(x) for x in prev]))
    elif lake_ratio is not None and m >= 2 * PATH_RECENT:
        # A first day has no earlier day's same hours; the lake's other partitions went through
        # them: its last buckets against the last day's mean times the lake's median ratio of the
        # two, so the daily cycle and growth all partitions share cancel and a spot that left or
        # arrived does not. Tuning seeds 100-104, 4-day lakes, path + `auto`: grid Brier
        # 0.1154 -> 0.1119 (drift 0.140 -> 0.129, the other shapes within 0.001), hourly
        # 0.1269 -> 0.1252 (docs/prediction.md §8, fourteenth pass).
        shift = float(np.mean(inc[-last:]) - lake_ratio * mu[0])
    else:
        shift = 0.0
    spread = float(np.std(mu[:PATH_MAX_DAYS])) if len(mu) > 1 else abs(shift)  # < 2 days: the shift is all there is
    # Only a share of it: the day means of a growing partition differ by its growth, which the
    # slope term already extrapolates (with two day means their spread is half the slope).
    sd = PATH_LEVEL_WIDTH * float(np.hypot(se, PATH_SPREAD_SHARE * spread))
    lead = 0.5 if len(mu) >= PATH_LEAD_MIN_DAYS else 0.0
    return SizeTerms(inc, mu, float(slope), sd, shift, lead)


def _path_size(ds, y, horizon, n, seed, lake_ratio: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    step, per_day = _grid(ds, horizon)
    t = size_terms(y, per_day, lake_ratio)
    inc, mu, slope, sd, shift = t.inc, t.mu, t.slope, t.sd, t.shift
    h = len(horizon)
    idx, day = _block_index(rng, len(inc), per_day, h, n)
    level = mu[0] + shift + sd * rng.standard_normal(n)
    share = np.clip(rng.normal(1.0, 0.5, n), 0.0, 1.5)
    # The day-over-day change of the mean increment, from the next bucket on (an extra half day of
    # it from the first step over-extrapolated every acceleration: hourly Brier 0.178 -> 0.175 on
    # tuning seeds 100-102 without it) - until PATH_LEAD_MIN_DAYS days of history agree on it, then
    # from the middle of the last day (`SizeTerms.lead`).
    ahead = (np.arange(1, h + 1) / per_day + t.lead)[None, :]
    mud = mu[np.minimum(day, len(mu) - 1)]  # the mean increment of each block's own day
    target = level[:, None] + share[:, None] * slope * ahead  # the mean increment of each step
    # Each increment is scaled, not shifted, from its day's mean to the step's: writes are a level
    # times a daily cycle (and counts), so peaks and noise grow with the level. Shifted, a block
    # from a slower day kept its smaller peaks, and a crossing at the daily peak came at the wrong
    # hour (tuning seeds 100-104: share of timing errors <= 1 h 0.493 -> 0.563, diurnal shape
    # 0.46 -> 0.67; hourly Brier after the prior map 0.1322 -> 0.1314). Shifted where either mean
    # is not positive (a shrinking partition: no level to scale by).
    ok = (mud > 0) & (target > 0)
    scale = np.clip(target / np.where(ok, mud, 1.0), *PATH_SCALE_RANGE)
    steps = np.where(ok, inc[idx] * scale, inc[idx] - mud + target)
    return y[-1] + np.cumsum(steps, axis=1)


PATH_GROWTH_SHARE = 0.75  # share of a day the history must hold before its last day for a rate growth


def rate_growth(r: np.ndarray, per_day: int, eps: float) -> float:
    """Day-over-day growth of a write-rate series: the mean of its last k buckets over the same k
    buckets a day earlier, k = a day, or on a second day what the history holds before its last day
    once that is PATH_GROWTH_SHARE of a day (none before: 1.0); clipped to [0.5, 2]. With two whole
    days it is the ratio of the last two day means. On a second day the same hours a day apart
    cancel the daily cycle (tuning seeds 100-104, 4-day lakes, path + `auto`: hourly Brier
    0.1227 -> 0.1211, steady 0.109 -> 0.096; from half a day on the grid's hour-36 runs lost,
    0.1108 -> 0.1140, as a lake's first hours ramp up; docs/prediction.md §8, sixteenth pass)."""
    k = min(len(r) - per_day, per_day)
    if k < max(1.0, PATH_GROWTH_SHARE * per_day):
        return 1.0
    return float(np.clip((np.mean(r[-k:]) + eps) / (np.mean(r[-k - per_day:-per_day]) + eps), 0.5, 2.0))


# A bucket writing more than PATH_BURST_CAP times the last day's median rate is a burst. Unless a
# bucket a day apart was one too (a daily job) or it is still going on at the run (the history's last
# buckets), it is a one-off: the write-rate paths take it at that cap, so a burst in the history does
# not come back at the same hour of every bootstrapped day (nor widen the noise); the anomaly now
# still reads the rates as written. Tuning seeds 100-104, 4-day lakes, path + `auto`: grid Brier
# 0.1108 -> 0.1087 (bursty 0.090 -> 0.076, the other shapes as before; recall at precision 0.8
# 0.891 -> 0.899), hourly 0.1211 -> 0.1182 (0.851 -> 0.857): false throughput alarms after a burst.
# Cutting a burst still going on too scored 0.1074 / 0.1172, but a partition 5 % under its write
# threshold through the last 4 hours then got 0.37 (tests/test_forecasting.py's known answer: >= 0.5).
# Caps of 2 / 2.5 / 4 (cutting every burst): grid 0.1070 / 0.1071 / 0.1082 (docs/prediction.md §8,
# nineteenth pass).
PATH_BURST_CAP = 3.0


def one_off_capped(r: np.ndarray, per_day: int, eps: float) -> np.ndarray:
    """`r` (write rates per bucket) with its one-off bursts cut to PATH_BURST_CAP times the last
    day's median rate (the whole history's when shorter): a bucket above that cap is one-off unless
    the bucket a day before or after it is above the cap too, or it belongs to the run of buckets
    above it that ends the history (a burst still going on). Fewer than PATH_RECENT buckets: `r`."""
    r = np.asarray(r, dtype=float)
    if r.size < PATH_RECENT:
        return r
    cap = PATH_BURST_CAP * max(float(np.median(r[-per_day:])), eps)
    high = r > cap
    below = np.flatnonzero(~high)
    high[(below[-1] + 1 if below.size else 0):] = False  # a burst still going on at the run is now, not past
    again = np.zeros(r.size, dtype=bool)
    if r.size > per_day:
        again[per_day:] |= high[:-per_day]
        again[:-per_day] |= high[per_day:]
    return np.where(high & ~again, cap, r)


def _path_rate(ds, y, horizon, n, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    written = np.maximum(np.asarray(y, dtype=float), 0.0)
    step, per_day = _grid(ds, horizon)
    bucket_s = step / 1e6
    h = len(horizon)
    eps = 1.0 / bucket_s  # one write per bucket: keeps logs finite on idle hours
    r = one_off_capped(written, per_day, eps)
    idx, day = _block_index(rng, len(r), per_day, h, n)
    lvl = _day_means(r, per_day)
    growth = rate_growth(r, per_day, eps)
    g = growth ** np.clip(rng.normal(1.0, 0.5, n), 0.0, 2.0)
    ahead = (np.arange(1, h + 1) / per_day)[None, :]
    base = r[idx] * ((lvl[0] + eps) / (lvl[np.minimum(day, len(lvl) - 1)] + eps)) * g[:, None] ** ahead
    # The anomaly now: the last 6 buckets against the same buckets of the previous days.
    last = min(6, len(r))
    if len(r) >= per_day + last:
        prev = [r[len(r) - d * per_day - last: len(r) - d * per_day] * (lvl[0] + eps) / (lvl[min(d, len(lvl) - 1)] + eps)
                for d in range(1, min(PATH_MAX_DAYS, len(r) // per_day) + 1) if len(r) - d * per_day - last >= 0]
        expected = float(np.median([np.mean(p) for p in prev]))
        a0 = float(np.log((np.mean(written[-last:]) + eps) / (expected + eps)))
        resid = np.log((r[per_day:] + eps) / (r[:-per_day] + eps))
        sigma = float(np.std(resid[-per_day:])) if resid.size else 0.3
    else:
        base = np.full((n, h), float(np.mean(r[-last:])))
        a0, sigma = 0.0, float(np.std(np.log(r[-per_day:] + eps)))
    sigma = min(sigma, 1.0) * np.sqrt(1 - PATH_PHI ** 2) / np.sqrt(2.0)  # t(4) has variance 2
    z = rng.standard_t(4, size=(n, h)) * sigma
    e = np.empty((n, h))
    prev_e = np.zeros(n)
    for k in range(h):  # AR(1) noise: persistence without a fit
        prev_e = PATH_PHI * prev_e + z[:, k]
        e[:, k] = prev_e
    anomaly = a0 * PATH_PHI ** np.arange(1, h + 1)
    lam = np.maximum(base * np.exp(anomaly[None, :] + e), 0.0)
    return rng.poisson(lam * bucket_s) / bucket_s


# --- a write hot spot moving across the key space (cross-partition) ------------------------------
# A partition's own history cannot show a hot spot that is about to arrive from its neighbour: the
# run's partitions together can. `track_hot_spot` finds, over the range histories of all partitions
# of a run (data up to the run instant only), the buckets where a contiguous key range wrote at
# least HOT_RATIO times the run's median partition rate, the moments that range moved to the
# adjacent one (a crossing of their shared boundary), and from the last two crossings in one
# direction the spot's speed. `hot_deltas` then moves the spot on per sample path and adds its
# excess writes (bytes and rate) to the partition it is in, and takes them away from one it leaves.
# Where no line fits (in a lake's first days a spot has seldom crossed two boundaries), one crossing
# still tells the direction and bounds the speed (`_one_crossing`).
HOT_RATIO = 2.0  # a range writing this many times the median partition is hot (the drift shape: x5)
HOT_WINDOW = 24  # buckets through which the spot's track is fitted
HOT_MIN_BUCKETS = 12  # fewer buckets of history: no track
HOT_COVER = 0.75  # share of the window's buckets with a hot range (a few hours' burst is not a moving spot)
HOT_MIN_RUN = 3  # the last buckets must all be hot
HOT_MIN_MOVE = 0.05  # key positions the fitted track must move over the window
HOT_SPEED_SD = 0.25  # log-normal spread of the speed across paths
HOT_EDGE = 0.1  # the spot is placed at least this share of the hot range's width from its edges
HOT_LAST = 6  # buckets averaged for the spot's current excess and a partition's share of it
HOT_ONE_MIN = 0.1  # one crossing: per path the speed is uniform in [HOT_ONE_MIN, 1] x its bound


@dataclass
class HotSpot:
    """A hot spot tracked over a run's partitions: where it is at the last history bucket end and
    how it moves, in key positions (0..1, `key_positions`) per bucket."""

    pos: float
    speed: float  # signed, key positions per bucket
    lo: float  # the key range hot in the last bucket (the spot is inside it)
    hi: float
    excess_bytes: float  # extra size increment per bucket of the range holding it
    excess_rate: float  # extra writes/s of the range holding it
    # A spot seen crossing one boundary only (`_one_crossing`): `pos` is the edge it entered its
    # range by `since` buckets before the last one, and `speed` an upper bound on its speed.
    since: int = 0
    bounded: bool = False


@dataclass
class HotContext:
    """The hot spot as it concerns one partition: its key range and the spot's excess in its history."""

    spot: HotSpot
    lo: float
    hi: float
    # The spot's excess in this partition's own history (per bucket of `Job.ds`): taken out before
    # the model sees the history, so a spot that passed is not read as the partition's own growth.
    hist_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hist_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))


def key_positions(keys: list[str]) -> list[float]:
    """Order-preserving positions in [0, 1] of boundary keys ("" = the start, None = the end).

    Keys that are a common prefix plus decimal digits (the simulator's ``k00000000``) map linearly
    by their number; other keys by their first 8 bytes after the common prefix read as a base-256
    fraction (monotone, coarse)."""
    real = [k for k in keys if k]
    pre = os.path.commonprefix(real) if real else ""
    rest = [k[len(pre):] for k in real]
    width = max((len(r) for r in rest), default=0)
    digits = width > 0 and all(r.isdigit() or r == "" for r in rest)
    out = []
    for k in keys:
        if k is None:
            out.append(1.0)
        elif not k or k == pre:
            out.append(0.0)
        elif digits:
            out.append(int(k[len(pre):].ljust(width, "0")) / 10 ** width)
        else:
            b = k[len(pre):].encode()[:8].ljust(8, b"\x00")
            out.append(int.from_bytes(b, "big") / 2.0 ** 64)
    return out


def _neighbours(ranges: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(left, right): per range, the index of the range ending where it starts and of the one
    starting where it ends (-1: none). The run's partitions tile the key space, so these are the
    ranges sharing a boundary with it."""
    by_hi = {hi: i for i, (_, hi) in enumerate(ranges)}
    by_lo = {lo: i for i, (lo, _) in enumerate(ranges)}
    left = np.array([by_hi.get(lo, -1) for lo, _ in ranges], dtype=np.int64)
    right = np.array([by_lo.get(hi, -1) for _, hi in ranges], dtype=np.int64)
    idx = np.arange(len(ranges))
    return np.where(left == idx, -1, left), np.where(right == idx, -1, right)


def _hot_test(rates: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hot, rate relative to `own`, the run's median relative rate per bucket)."""
    rel = rates / np.maximum(own, 1e-12)[:, None]
    med_rel = np.nanmedian(rel, axis=0)
    hot = (rel >= HOT_RATIO * med_rel[None, :]) & (med_rel[None, :] > 0) & (own[:, None] > 0)
    return hot, rel, med_rel


def _hot_excess(sides: tuple[np.ndarray, np.ndarray], rates: np.ndarray,
                sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hot, excess writes/s, excess bytes per bucket), partitions x buckets (excess 0 where not hot).

    Each partition's rate is taken against its own usual rate (ranges differ in width), and that
    against the run's median partition in the same bucket (the daily cycle and growth are common
    to all). Its excess bytes are the increment above its own median increment of cool buckets.

    The usual rate is the partition's median rate over the buckets in which it wrote and was neither
    hot nor sharing a hot neighbour's excess (a neighbour hot while it wrote at or above the run's
    median relative rate), found from a first test against its median over the buckets it wrote in.
    Idle buckets are left out (a range whose keys the writes have left behind or not yet reached: a
    usual rate of 0 would never let it be hot, half its rate would make it hot at its own pace);
    so are they from the cool increments. A partition cut from a hot
    parent has the parent's excess over its own keys in its range history (the whole parent wrote
    more), which its sibling, hot then, shows; counted as usual, it hides the spot when the spot
    reaches this partition (docs/prediction.md §8, thirteenth pass). `sides`: `_neighbours` of the ranges."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a partition hot in every bucket: no usual rate
        wrote = np.where(rates > 0, rates, np.nan)  # an idle bucket is no measure of a range's usual rate
        own = np.nanmedian(wrote, axis=1)
        hot, rel, med_rel = _hot_test(rates, own)
        near = np.zeros_like(hot)
        for side in sides:
            has = side >= 0
            near[has] |= hot[side[has]]
        usual = np.nanmedian(np.where(hot | (near & (rel >= med_rel[None, :])), np.nan, wrote), axis=1)
        own = np.where(np.isfinite(usual), usual, own)
        hot, _, med_rel = _hot_test(rates, own)
        ex = np.where(hot, rates - own[:, None] * med_rel[None, :], 0.0)
        inc = np.diff(sizes, axis=1, prepend=np.nan)
        cool = np.nanmedian(np.where(hot | np.isnan(wrote), np.nan, inc), axis=1)
        ex_b = np.where(hot, inc - np.nan_to_num(cool)[:, None], 0.0)
    return hot, np.nan_to_num(np.maximum(ex, 0.0)), np.nan_to_num(ex_b)


def _track(ranges: list[tuple[float, float]], rates: np.ndarray, sizes: np.ndarray):
    """(spot, hot, excess writes/s, excess bytes) of `track_hot_spot`, or None."""
    k, m = rates.shape
    if k < 3 or min(HOT_WINDOW, m) < HOT_MIN_BUCKETS:
        return None
    sides = _neighbours(ranges)
    hot, ex, ex_b = _hot_excess(sides, rates, sizes)
    spot = _fitted_track(ranges, hot, ex, ex_b) or _one_crossing(ranges, sides, hot, ex, ex_b)
    return None if spot is None else (spot, hot, ex, ex_b)


def track_hot_spot(ranges: list[tuple[float, float]], ds: np.ndarray, rates: np.ndarray,
                   sizes: np.ndarray) -> tuple[HotSpot | None, np.ndarray | None]:
    """The moving hot spot of a run, or None when the histories show none moving.

    `ranges` are the partitions' key positions (lo, hi), `rates` / `sizes` their histories on the
    common bucket ends `ds` (partitions x buckets, NaN where a partition has no value). The spot is
    the fitted track of `_fitted_track`, else the one crossing of `_one_crossing`. Returns the spot
    and the boolean hot matrix."""
    got = _track(ranges, rates, sizes)
    return (got[0], got[1]) if got is not None else (None, None)


def _spot_excess(ex: np.ndarray, ex_b: np.ndarray) -> tuple[float, float] | None:
    """(excess bytes per bucket, excess writes/s) of the spot now: the last HOT_LAST buckets' mean."""
    tail = slice(ex.shape[1] - HOT_LAST, ex.shape[1])
    ex_rate = float(np.mean(ex[:, tail].sum(axis=0)))
    ex_bytes = float(np.mean(ex_b[:, tail].sum(axis=0)))
    if not (np.isfinite(ex_rate) and np.isfinite(ex_bytes)):
        return None
    return max(ex_bytes, 0.0), max(ex_rate, 0.0)


def _fitted_track(ranges: list[tuple[float, float]], hot: np.ndarray, ex: np.ndarray,
                  ex_b: np.ndarray) -> HotSpot | None:
    """Per bucket of the last HOT_WINDOW, the spot's position is the excess-weighted centre of the
    hot ranges (those writing >= HOT_RATIO x the median partition); a straight line through those
    centres gives its position now and its speed."""
    k, m = hot.shape
    w = min(HOT_WINDOW, m)
    mid = np.array([(lo + hi) / 2 for lo, hi in ranges])
    tot = ex.sum(axis=0)
    t = np.arange(m - w, m)
    ok = tot[t] > 0
    # A spot that moves: hot somewhere in most buckets of the window and in the last ones.
    if ok.mean() < HOT_COVER or not ok[-HOT_MIN_RUN:].all():
        return None
    centre = (ex[:, t] * mid[:, None]).sum(axis=0)[ok] / tot[t][ok]
    tt = t[ok].astype(float)
    speed, icpt = np.polyfit(tt, centre, 1)
    resid = centre - (speed * tt + icpt)
    moved = abs(speed) * (tt[-1] - tt[0])
    if moved < HOT_MIN_MOVE or moved < 2.0 * float(np.std(resid)):
        return None
    now = [i for i in range(k) if hot[i, m - 1]]
    lo, hi = min(ranges[i][0] for i in now), max(ranges[i][1] for i in now)
    # Where in the range hot now: it entered at the edge behind the spot when that range turned
    # hot, and moved on since (the fitted line lags or leads a range's edges by hours, and a spot
    # put on the edge it is heading for leaves at once although the range is still hot).
    held = hot[now].any(axis=0)
    gaps = np.flatnonzero(~held[:-1][::-1])  # buckets back from the last one that were not hot
    since = int(gaps[0]) + 1 if gaps.size else m
    fitted = speed * (m - 1) + icpt
    edge = lo if speed > 0 else hi
    pos = edge + speed * since if since < w else fitted
    pos = float(np.clip(pos, lo + HOT_EDGE * (hi - lo), hi - HOT_EDGE * (hi - lo)))
    excess = _spot_excess(ex, ex_b)
    return HotSpot(pos, float(speed), lo, hi, *excess) if excess is not None else None


def _one_crossing(ranges: list[tuple[float, float]], sides: tuple[np.ndarray, np.ndarray], hot: np.ndarray,
                  ex: np.ndarray, ex_b: np.ndarray) -> HotSpot | None:
    """A spot seen crossing one boundary: exactly one partition B hot now, for the last
    HOT_MIN_RUN buckets at least (with more than HOT_MIN_RUN buckets before), and exactly one neighbour A
    (sharing a boundary with B) hot in all of the HOT_MIN_RUN buckets before B turned hot. The spot
    moves from A to B; its speed is at most A's width over the buckets A was seen hot and B's
    width over the buckets B has been hot (it crossed neither in less), and it entered B at the
    shared edge when B turned hot. `sides`: `_neighbours(ranges)`."""
    m = hot.shape[1]
    now = np.flatnonzero(hot[:, m - 1])
    if len(now) != 1:
        return None
    b = int(now[0])
    cool = np.flatnonzero(~hot[b, ::-1])
    run = int(cool[0]) if cool.size else m  # buckets B has been hot, the last one included
    if run < HOT_MIN_RUN or run >= m - HOT_MIN_RUN:
        return None
    start = m - run  # B's first hot bucket
    b_lo, b_hi = ranges[b]
    before = [int(i) for i in (side[b] for side in sides)
              if i >= 0 and hot[i, start - HOT_MIN_RUN:start].all()]
    if len(before) != 1:
        return None
    a = before[0]
    a_cool = np.flatnonzero(~hot[a, :start][::-1])
    in_a = int(a_cool[0]) if a_cool.size else start  # buckets A was hot up to B's start
    a_lo, a_hi = ranges[a]
    bound = min((a_hi - a_lo) / in_a, (b_hi - b_lo) / run)
    excess = _spot_excess(ex, ex_b)
    if excess is None or not bound > 0:
        return None
    sign = 1.0 if a_lo < b_lo else -1.0
    edge = b_lo if sign > 0 else b_hi
    return HotSpot(edge, sign * bound, b_lo, b_hi, *excess, since=run, bounded=True)


def hot_contexts(ranges: list[tuple[float, float]], ds: np.ndarray, rates: np.ndarray,
                 sizes: np.ndarray) -> list[HotContext | None]:
    """Per partition (rows of `rates`), its `HotContext`, or all None when no spot moves."""
    got = _track(ranges, rates, sizes)
    if got is None:
        return [None] * len(ranges)
    spot, _, ex, ex_b = got
    return [HotContext(spot, lo, hi, ex_b[i], ex[i]) for i, (lo, hi) in enumerate(ranges)]


def hot_deltas(ctx: HotContext, h: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the moving spot adds to one partition's paths: (size, rate) deltas, n x h each.

    Per path the speed is drawn log-normally around the tracked one (uniform in [HOT_ONE_MIN, 1] x
    the bound of a one-crossing spot); the spot moves on from its position (held at the key space's
    ends) and the partition gains the spot's excess in the buckets it holds it (its history has the
    spot taken out, `clean_history`)."""
    s = ctx.spot
    rng = np.random.default_rng((seed + 7) % 2**32)
    if s.bounded:
        v = s.speed * rng.uniform(HOT_ONE_MIN, 1.0, n)
    else:
        v = s.speed * np.exp(HOT_SPEED_SD * rng.standard_normal(n))
    x = np.clip(s.pos + v[:, None] * (s.since + np.arange(1, h + 1))[None, :], 0.0, 1.0)
    inside = ((x >= ctx.lo) & (x < ctx.hi)) | ((ctx.hi >= 1.0) & (x >= 1.0))
    return np.cumsum(np.where(inside, s.excess_bytes, 0.0), axis=1), np.where(inside, s.excess_rate, 0.0)


def clean_history(ctx: HotContext, size: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The partition's (size, rate) history without the hot spot's excess (same length)."""
    if len(ctx.hist_bytes) != len(size):
        return size, rate
    return size - np.cumsum(ctx.hist_bytes), np.maximum(rate - ctx.hist_rate, 0.0)


def first_crossing(paths: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the first horizon point where each path exceeds `threshold` (len = no crossing)."""
    above = paths > threshold
    idx = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), idx, paths.shape[1])


def _horizon_from(ds: np.ndarray, horizon: np.ndarray, step: int) -> np.ndarray:
    """Future grid from the last history point to the window's end (models step one bucket)."""
    return np.arange(int(ds[-1]) + step, int(horizon[-1]) + 1, step, dtype=np.int64)


def job_paths(job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, size paths, rate paths) of `job`: the paths `run_job` summarises, on the grid of
    bucket ends from the last history point to the window's end (n_samples x len(grid) each)."""
    grid = _horizon_from(job.ds, job.horizon, job.step)  # includes bucket ends between history and window
    hot = job.hot if job.model == "path" else None
    size, rate = clean_history(hot, job.size, job.rate) if hot is not None else (job.size, job.rate)
    size_p = sample_paths(job.ds, size, grid, model=job.model, n=job.n_samples, seed=job.seed,
                          lake_ratio=job.lake_ratio)
    rate_p = sample_paths(job.ds, rate, grid, model=job.model, n=job.n_samples,
                          seed=(job.seed + 1) % 2**32, flexible=True)
    if hot is not None:
        dsz, drt = hot_deltas(hot, len(grid), job.n_samples, job.seed)
        size_p = size_p + dsz + (job.size[-1] - size[-1])  # paths start from the real size
        rate_p = rate_p + drt
    return grid, size_p, rate_p


def run_job(job: Job) -> Result:
    """Sample both series, combine paths pairwise (independent models) and summarise crossings."""
    t0 = time.perf_counter()
    try:
        _, size_p, rate_p = job_paths(job)
    except Exception as exc:  # noqa: BLE001 - a model failing on one series must not stop the run
        size_p = rate_p = exc
    return summarise(job, size_p, rate_p, time.perf_counter() - t0)


def summarise(job: Job, size_p, rate_p, seconds: float) -> Result:
    """A Result from the paths of both series on `_horizon_from`'s grid (or the exception a fit raised)."""
    t0 = time.perf_counter()
    res = Result(job.partition_id)
    for p in (size_p, rate_p):
        if isinstance(p, BaseException):
            res.skip_reason = f"{job.model} fit failed: {type(p).__name__}: {str(p)[:200]}"
            res.fit_seconds = seconds
            return res
    keep = np.isin(_horizon_from(job.ds, job.horizon, job.step), job.horizon)
    size_p, rate_p = size_p[:, keep], rate_p[:, keep]
    if not (np.all(np.isfinite(size_p)) and np.all(np.isfinite(rate_p))):
        res.skip_reason = f"{job.model} produced non-finite sample paths (degenerate fit)"
        res.fit_seconds = seconds
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
        res.p_size = float(np.sum(size_first)) / len(first)
        res.p_throughput = res.probability - res.p_size
        res.reason = "size" if np.mean(size_first) >= 0.5 else "throughput"
        times = job.horizon[first[crossed]]
        q = np.quantile(times, [0.1, 0.5, 0.9], method="inverted_cdf")
        res.p10, res.p50, res.p90 = (int(v) for v in q)
        # The median among crossing paths: the median of the split time given that the split
        # falls in the window, which is what a timing error is measured on. (From probability 0.5
        # on, the median over every path - a path that has not crossed crossing later - was used
        # from a39d16f; with the model of issue 15's fourth pass it no longer helps: share of
        # true positives within 1 h on tuning seeds, hourly, 4-day lakes 0.563 -> 0.568, 8-day
        # lakes 0.491 -> 0.502, mean |error| 2.16 -> 2.13 h and 2.33 -> 2.13 h.)
    res.size_median = [float(v) for v in np.median(size_p, axis=0)]
    res.rate_median = [float(v) for v in np.median(rate_p, axis=0)]
    res.fit_seconds = seconds + time.perf_counter() - t0
    return res


# --- statsforecast: one fit call for all series of a run -----------------------------------------
def _sf_season(ds: np.ndarray, step: int) -> int:
    per_day = max(1, int(round(DAY_US / step)))
    return per_day if len(ds) > 1 and (ds[-1] - ds[0]) / DAY_US >= SF_SEASON_DAYS and per_day > 1 else 1


def _sf_paths(series: list, hs: list[int], n: int, seed: int, *, n_jobs: int, flexible: bool,
              step: int | None = None) -> list:
    """AutoETS sample paths (n x hs[i]) for every (ds, y) in `series`, fitted in one `StatsForecast`
    call per season length; an entry is the exception instead when that series could not be fitted.

    The fits are one `StatsForecast.fit` over a frame of all series, spread over `n_jobs`
    processes; the paths come from `ets_paths`. Each series is scaled by its largest |value| (a byte count of 1e9 and a rate of 0.01 share a
    frame; the optimiser wants both near 1). A write rate is floored at 0 (Gaussian noise on a
    low rate goes negative; a negative rate never crosses a threshold either way).
    """
    import pandas as pd

    quiet()
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    out: list = [None] * len(series)
    groups: dict[int, list[int]] = {}
    for i, (ds, y) in enumerate(series):
        y = np.asarray(y, dtype=float)
        if _is_constant(y):
            out[i] = np.full((n, hs[i]), float(y[0]) if y.size else 0.0)
            continue
        st = step or (int(np.median(np.diff(ds))) if len(ds) > 1 else 3_600_000_000)
        groups.setdefault(_sf_season(np.asarray(ds), st), []).append(i)
    for m, idx in groups.items():
        ys = [np.asarray(series[i][1], dtype=float) for i in idx]
        scale = np.array([float(np.max(np.abs(y))) or 1.0 for y in ys])
        df = pd.DataFrame({"unique_id": np.repeat(np.arange(len(idx), dtype=np.int64), [len(y) for y in ys]),
                           "ds": np.concatenate([np.arange(len(y), dtype=np.int64) for y in ys]),
                           "y": np.concatenate([y / c for y, c in zip(ys, scale)])})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sf = StatsForecast(models=[AutoETS(season_length=m)], freq=1, n_jobs=max(1, min(n_jobs, len(idx))))
                sf.fit(df)
            if not np.array_equal(np.asarray(sf.uids), np.arange(len(idx))):
                raise RuntimeError("statsforecast returned series in an unexpected order")
            fitted = [sf.fitted_[k, 0].model_ for k in range(len(idx))]
        except Exception:  # noqa: BLE001 - one bad series must not fail the frame: fit one by one
            fitted = [_sf_fit_one(y / c, m) for y, c in zip(ys, scale)]
        rng = np.random.default_rng(seed)
        for k, i in enumerate(idx):
            if isinstance(fitted[k], BaseException):
                out[i] = fitted[k]
                continue
            p = ets_paths(fitted[k], hs[i], n, rng) * scale[k]
            out[i] = np.maximum(p, 0.0) if flexible else p
    return out


def _sf_fit_one(z, m):
    from statsforecast.models import AutoETS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoETS(season_length=m).fit(z).model_
    except Exception as exc:  # noqa: BLE001
        return exc


def ets_paths(mod: dict, h: int, n: int, rng) -> np.ndarray:
    """`n` sample paths (n x h) of a fitted statsforecast ETS model, all paths one step at a time.

    The state-space recursions of statsforecast's own `etssimulate` (Hyndman et al.; R forecast's
    etssimulate/etsupdate), in numpy over paths. Not statsforecast's `simulate` because 2.1.1
    sets phi = 0 for an undamped trend there (its `forecast` uses phi = 1): a Holt model's paths
    lose their trend and a growing partition never crosses; and it loops over paths in Python.
    """
    err, trend, season = (str(c) for c in mod["components"][:3])
    damped = str(mod["components"][3]) != "N"
    alpha, beta, gamma, phi = (float(v) for v in mod["par"][:4])
    beta = 0.0 if np.isnan(beta) else beta
    gamma = 0.0 if np.isnan(gamma) else gamma
    phi = phi if damped and not np.isnan(phi) else 1.0
    m = int(mod["m"])
    x = np.asarray(mod["states"][-1], dtype=float)
    level = np.full(n, x[0])
    b = np.full(n, x[1] if trend != "N" else 0.0)
    k0 = 1 + (trend != "N")
    s = np.tile(x[k0:k0 + m], (n, 1)) if season != "N" else None
    e = rng.standard_normal((n, h)) * float(np.sqrt(mod["sigma2"]))
    y = np.empty((n, h))
    with np.errstate(all="ignore"):  # a degenerate multiplicative path becomes non-finite: reported, not raised
        for i in range(h):
            if trend == "N":
                phib, q = 0.0, level
            elif trend == "A":
                phib = phi * b
                q = level + phib
            else:
                phib = b ** phi
                q = level * phib
            sl = s[:, m - 1] if s is not None else None
            p = q if season == "N" else (q + sl if season == "A" else q * sl)
            yi = p + e[:, i] if err == "A" else p * (1.0 + e[:, i])
            y[:, i] = yi
            t = yi if season == "N" else (yi - sl if season == "A" else yi / sl)
            old = level
            level = q + alpha * (t - q)
            if trend != "N":
                r = level - old if trend == "A" else level / old
                b = phib + (beta / alpha) * (r - phib)
            if s is not None:
                t = yi - q if season == "A" else yi / q
                s = np.column_stack([sl + gamma * (t - sl), s[:, : m - 1]])
    return y


def run_batch(jobs, n_jobs: int = 1) -> list[Result]:
    """Results of `BATCH_MODELS` jobs: every partition's size series in one statsforecast call,
    every write-rate series in another, each spread over `n_jobs` processes.

    The run's paths are reproducible: the batch seed derives from the jobs' seeds (statsforecast
    draws one seed per series from it), so the same partitions at the same run time give the
    same paths; a partition fitted alone (Spark, `run_job`) gets other draws of the same model.
    """
    if not jobs:
        return []
    t0 = time.perf_counter()
    out: list[Result | None] = [None] * len(jobs)
    by_n: dict[tuple[int, int], list[int]] = {}
    for i, j in enumerate(jobs):
        by_n.setdefault((j.n_samples, j.step), []).append(i)
    for (n, step), idx in by_n.items():
        grids = [_horizon_from(jobs[i].ds, jobs[i].horizon, jobs[i].step) for i in idx]
        hs = [len(g) for g in grids]
        seed = seed_for(",".join(str(jobs[i].seed) for i in idx))
        size_p = _sf_paths([(jobs[i].ds, jobs[i].size) for i in idx], hs, n, seed, n_jobs=n_jobs, flexible=False,
                           step=step)
        rate_p = _sf_paths([(jobs[i].ds, jobs[i].rate) for i in idx], hs, n, (seed + 1) % 2**32, n_jobs=n_jobs,
                           flexible=True, step=step)
        per = (time.perf_counter() - t0) / len(jobs)  # wall share: the fits ran in one call
        for k, i in enumerate(idx):
            out[i] = summarise(jobs[i], size_p[k], rate_p[k], per)
    return out  # type: ignore[return-value]


def spark_fit(pdf):
    """`applyInPandas` body: one pickled Job per row in, one pickled Result per row out."""
    import pickle

    import pandas as pd

    quiet()
    rows = [{"partition_id": pid, "result": pickle.dumps(run_job(pickle.loads(blob)))}
            for pid, blob in zip(pdf["partition_id"], pdf["job"])]
    return pd.DataFrame(rows, columns=["partition_id", "result"])
