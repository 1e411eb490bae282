"""Triage before fitting: partitions that cannot reach a split threshold inside the window.

A prediction's probability is the share of `n` sample paths that cross a threshold. A partition
is *unreachable* when an envelope computed from its own history (the arrays the model would get,
no fit) shows that fewer than ``k*`` paths can cross, where ``k*`` is the smallest crossing
count whose (calibrated) probability reaches the confidence threshold. Its row then gets
probability 0 and ``skip_reason`` starting with ``unreachable``, and no model runs for it.

The envelope, per partition, with ``H`` = buckets from the last history point to the window's
end, ``P`` = buckets per day, ``b`` = bucket seconds, ``d`` = the size increments of the history,
``R`` = the largest write rate of the history - for the ``path`` model with its one-off bursts cut
(`models.one_off_capped`, the series its rate paths are built from), for a fitted model as written:

* size  ``U_s = last size + max_k sum_{i <= k} max(a + S i / P, d+ * min(hi, max(lo, M_i / mu+)))``
  with ``a = max d - min mu + mu0 + shift + Z * sd + S / 2``, ``M_i = mu0 + shift + Z * sd + S i / P``
  and ``S = 1.5 * max(slope, 0)``: ``mu`` the
  mean increment of each of the last days (``mu0`` the last, ``mu+`` the least positive one),
  ``d+ = max(max d, 0)``, ``(lo, hi) = models.PATH_SCALE_RANGE``, ``slope = mu0 - mu1``, ``shift``
  the last 6 buckets' deviation from the same hours of earlier days (on a first day, from the
  last day's mean times the lake's ratio `Job.lake_ratio`), ``sd`` the standard deviation
  of the level draw - the deterministic terms of the ``path`` model (`models.size_terms`) - and
  ``Z`` a one-sided Normal quantile (the second term bounds an increment scaled to the step's mean);
* rate  ``U_r = L + y * sqrt(L / b)`` with ``L = B * exp(a+ + x * sigma)``: ``B`` the largest
  base level (``R`` scaled by the day-over-day level ratio and growth), ``a+`` the positive part
  of the current anomaly (read from the rates as written), ``sigma`` the day-over-day log-rate
  noise (<= 1) - the same history statistics the ``path`` model uses - and ``x``, ``y`` Chebyshev-Cantelli factors.

Why it is conservative (docs/prediction.md §2, "Triage"): for the ``path`` model every term
bounds the corresponding term of a sample path, except three random draws per path (the size
level's Normal draw, the rate's AR noise, the Poisson count). Each exceeds its factor with a
probability bounded by Normal tails / Cantelli's inequality (which holds for any distribution
with that variance, the Student t noise included), so one path crosses with probability at most
``q`` and the ``n`` paths are independent: a share of ``k*`` or more crossing paths has
probability ``P(Binomial(n, q) >= k*) <= TOLERANCE``. ``q`` is the largest per-path probability
with that property. Prophet and ARIMA paths follow a fitted trend plus Gaussian noise; their fits
are not bounded by the history in closed form, so for them the envelope's margins
(the largest increment of the history held for every bucket, plus the recent acceleration;
a factor ``exp(x sigma)`` on the rate) are a
safety margin checked by tests/test_triage.py, not a proof.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from weaver.predict import models as _models

UNREACHABLE = "unreachable"
TOLERANCE = 1e-9  # per partition: chance that a triaged partition would have reached the threshold
# Shares of the per-path budget q: the size level draw needs little (its factor only grows like
# sqrt(log 1/q)), the rate's AR noise most (its factor multiplies an exponent).
_SHARE_SIZE, _SHARE_NOISE, _SHARE_COUNT = 0.02, 0.68, 0.30


@dataclass(frozen=True)
class Envelope:
    """Upper bounds of a partition's size (bytes) and write rate (writes/s) over the window."""

    size: float
    rate: float


def min_crossing_count(n: int, confidence: float, cmap=None) -> int:
    """Smallest number of crossing paths (of `n`) whose probability, calibrated by `cmap`, is >= `confidence`.

    ``n + 1`` when no count reaches it. Exact for any map: every count below it maps below the
    confidence threshold, monotone or not.
    """
    k = np.arange(n + 1)
    p = k / n
    cal = cmap.apply(p) if cmap is not None else p
    hit = np.flatnonzero(np.asarray(cal) >= confidence - 1e-12)
    return int(hit[0]) if hit.size else n + 1


def path_budget(n: int, k_star: int, tol: float = TOLERANCE) -> float:
    """Largest per-path crossing probability q with P(Binomial(n, q) >= k_star) <= tol (0 if k_star < 1)."""
    if k_star < 1:
        return 0.0
    if k_star > n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if _binom_sf(k_star, n, mid) <= tol:
            lo = mid
        else:
            hi = mid
    return lo


def _binom_sf(k: int, n: int, q: float) -> float:
    """P(Binomial(n, q) >= k), summed in log space (n is a few hundred sample paths)."""
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    lq, l1q = math.log(q), math.log1p(-q)
    lg = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(lg - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lq + (n - j) * l1q)
                        for j in range(k, n + 1)))


def envelope(job: _models.Job, q: float) -> Envelope:
    """Bounds of size and write rate on the model grid (last history point to the window's end)."""
    step = int(job.step)
    H = max(1, int((int(job.horizon[-1]) - int(job.ds[-1])) // step))
    P = max(1, round(_models.DAY_US / step))
    b = step / 1e6
    if q <= 0:
        return Envelope(math.inf, math.inf)
    q_size, q_noise, q_count = q * _SHARE_SIZE, q * _SHARE_NOISE, q * _SHARE_COUNT
    return Envelope(_size_bound(np.asarray(job.size, float), H, P, NormalDist().inv_cdf(1.0 - q_size),
                                job.lake_ratio),
                    _rate_bound(np.asarray(job.rate, float), H, P, b, _cantelli(H, q_noise), _cantelli(H, q_count),
                                cut_bursts=job.model == "path"))


def _cantelli(H: int, q: float) -> float:
    """x with H / (1 + x^2) = q: a union over H steps of Cantelli's P(X - EX >= x sd) <= 1 / (1 + x^2)."""
    return math.sqrt(max(H / q - 1.0, 0.0))


def _size_bound(y: np.ndarray, H: int, P: int, Z: float, lake_ratio: float | None = None) -> float:
    # The path model's step k has the mean m_k = mu0 + shift + sd * z + share * slope * (k / P + lead)
    # with mu0, shift, slope, sd, lead fixed by the history, z <= Z, share in [0, 1.5]: m_k <= M_k. The step is
    # inc[idx] * clip(m_k / mu[day], lo, hi) where mu[day] > 0 and m_k > 0 - at most
    # max(max inc, 0) * min(hi, max(lo, M_k / the least positive mu)) - else
    # inc[idx] - mu[day] + m_k <= max inc - min mu + M_k (+ S / 2 of slack).
    t = _models.size_terms(y, P, lake_ratio)
    S = 1.5 * max(t.slope, 0.0)
    k = np.arange(1, H + 1)
    M = t.mu[0] + t.shift + Z * t.sd + S * (k / P + t.lead)
    shifted = t.inc.max() - t.mu.min() + M + 0.5 * S
    lo, hi = _models.PATH_SCALE_RANGE
    pos = t.mu[t.mu > 0]
    scaled = max(float(t.inc.max()), 0.0) * np.minimum(hi, np.maximum(lo, np.maximum(M, 0.0) / pos.min())) \
        if pos.size else np.zeros(H)
    return float(y[-1] + np.max(np.cumsum(np.maximum(shifted, scaled))))


def _rate_bound(r: np.ndarray, H: int, P: int, b: float, x: float, y: float, cut_bursts: bool = True) -> float:
    written = np.maximum(r, 0.0)
    eps = 1.0 / b
    # The path model builds its paths from the rates with one-off bursts cut; a fitted model
    # (Prophet, ARIMA, statsforecast) sees them as written, so its margin keeps them.
    r = _models.one_off_capped(written, P, eps) if cut_bursts else written
    R = float(r.max())
    last = min(6, r.size)
    if r.size >= P + last:
        lvl = _models._day_means(r, P)
        growth = _models.rate_growth(r, P, eps)
        # base = r[idx] * (lvl0 + eps) / (lvl[day] + eps) * g^(k/P), g = growth^power, power <= 2;
        # idx lies in the last PATH_MAX_DAYS days (one bucket of jitter earlier at most).
        days = min(_models.PATH_MAX_DAYS, r.size // P)
        R = float(r[max(0, r.size - days * P - 1):].max())
        base = R / (float(lvl.min()) + eps) * (lvl[0] + eps) * max(growth, 1.0) ** (2.0 * H / P)
        prev = [r[r.size - d * P - last: r.size - d * P] * (lvl[0] + eps) / (lvl[min(d, lvl.size - 1)] + eps)
                for d in range(1, min(_models.PATH_MAX_DAYS, r.size // P) + 1) if r.size - d * P - last >= 0]
        expected = float(np.median([np.mean(p) for p in prev]))
        a0 = math.log((float(np.mean(written[-last:])) + eps) / (expected + eps))
        resid = np.log((r[P:] + eps) / (r[:-P] + eps))
        sigma = float(np.std(resid[-P:])) if resid.size else 0.3
    else:
        base, a0 = float(np.mean(r[-last:])), 0.0
        sigma = float(np.std(np.log(r[-P:] + eps)))
    lam = base * math.exp(max(a0, 0.0) + x * min(sigma, 1.0))
    return lam + y * math.sqrt(lam / b)


def check(job: _models.Job, q: float) -> str | None:
    """The ``unreachable ...`` skip reason when neither envelope reaches its threshold, else None."""
    if q <= 0:
        return None
    env = envelope(job, q)
    if env.size > job.size_threshold or env.rate > job.write_threshold:
        return None
    return (f"{UNREACHABLE}: within the window size stays <= {env.size:.4g} B (threshold "
            f"{job.size_threshold:.4g}) and write rate <= {env.rate:.3g}/s (threshold {job.write_threshold:.3g}) "
            "under the triage bound; not fitted")
