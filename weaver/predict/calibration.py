"""Recalibration of split probabilities from the lake's own scored history (no look-ahead).

A model's raw probability (the share of crossing sample paths) is only as good as its paths; the
backtests showed systematic under-confidence. A run at instant ``at`` therefore maps the raw
probability through a monotone map fitted on *earlier* predictions of the same model whose windows
had closed by ``at`` (``window_end <= at``), each scored against `splits` (a split of the
partition in ``(run_ts, window_end]`` - every such split has ``split_ts <= at``, so nothing from
after the run is read). Skipped rows (``skip_reason``) are not scored, and neither is a window in
which an operator split the partition (``splits.reason`` in ``UNPREDICTABLE_REASONS``, i.e.
``manual``): no model can forecast that decision and the split ends the partition, so the window
has no outcome - left out of the fit as the backtest leaves it out of its scores. Size and
throughput splits are the positives.

Methods (``METHODS``):

- ``isotonic`` - pool-adjacent-violators on the raw probability, interpolated linearly between
  block centres (monotone, non-parametric; needs the most data); a block of k splits in n rows
  maps to (k + 1/2) / (n + 1), Jeffreys' posterior mean, never to exactly 0 or 1;
- ``platt``    - logistic regression on logit(raw): ``sigmoid(a * logit(p) + b)``;
- ``beta``     - logistic regression on ``(ln p, -ln(1 - p))`` (Kull et al. 2017, three
  parameters; contains the identity and Platt's family);
- ``none``     - the identity.
- ``auto``     - the default: of the prior, the identity and an isotonic map fitted on the rows
  closed before the last ``HOLDOUT_HOURS``, the one with the lowest Brier on the rows closed within
  them (`choose`).

Fallback: with fewer than ``MIN_ROWS`` scored rows, or fewer than ``MIN_CLASS`` positives or
negatives among them, `fit` returns the identity (method ``identity``, reason stated); a run
(`map_for_run`) then applies the model's *prior* map where one ships (``PRIORS``, method
``prior`` alone applies only it): a map fitted by ``bench/forecast_quality.py --fit-prior`` on
simulated lakes whose seeds the committed evaluation does not use, versioned by its parameters.
It is the simulator fleet's calibration, not this lake's: the stated fallback while the lake's own
history is too thin, replaced by the lake's own map once there is enough.

Storage: every fitted map is a JSON file ``<lake>/_weaver/calibration/<model>/<version>.json``
(method, parameters, the history cut-off, row counts); ``version`` is the run instant (UTC) and a
hash of the model, the method, the instant and the scored rows (prediction ids and labels), so the
same history gives the same version and a rerun rewrites the same file. `prune` (a `weaver
maintain` step) deletes the maps of runs older than ``settings.calibration_retention``. The `predictions` table keeps the raw probability in
``probability_raw`` beside the calibrated ``probability``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import objstore, storage
from weaver.core.errors import InvalidParameterError
from weaver.core.time import parse_timepoint
from weaver.log.lineage import first_splits, window_split

METHODS = ("auto", "none", "prior", "isotonic", "platt", "beta")
# ``isotonic``: the lake's own isotonic map once MIN_ROWS scored rows of closed windows exist, the
# shipped prior before that (issue 15's seventh pass, docs/prediction.md §8). On 8-day lakes that map
# cost Brier in its first days (day-3 grid runs 0.103 against 0.083 raw), so the default, ``auto``,
# checks it before use (`choose`, the tenth pass): the rows whose windows closed in the last
# HOLDOUT_HOURS are held out, an AUTO_FIT map is fitted on the earlier rows, and of {prior, identity,
# that map} the one with the lowest Brier on the held-out rows is applied (the map refitted on all
# rows when it wins); the prior below MIN_ROWS, as ``isotonic``. Tuning seeds 100-104
# (bench/results/calibration_guard.json, rule ``pick24``): 4-day lakes identical, 8-day grid Brier
# 0.0728 -> 0.0696, hourly 0.0763 -> 0.0756. Each run reads the last HISTORY_DAYS of scored
# predictions for it; bench/scale.py measures that read inside the hourly cycle.
DEFAULT_METHOD = "auto"
AUTO_FIT = "isotonic"
HOLDOUT_HOURS = 24.0
# Scored predictions needed before a lake-own map is fitted. 50 fitted maps on the first ~2 days
# of a 4-day lake, a non-stationary history too thin for them (hourly Brier of the isotonic method
# on tuning seeds 100-104, by hand: 0.154 at 50, 0.142 at 100, 0.1313 at 200 vs 0.1314 for the
# prior; on 8-day tuning lakes from hour 48, bench/results/forecast_transfer.json: 0.0719 at 200,
# 0.0750 at 50, prior 0.0734).
MIN_ROWS = 200
MIN_CLASS = 5  # ... of which at least this many positives and negatives
# Only predictions whose windows closed within this many days before the run are read and scored:
# the read stays bounded as the lake ages (the hourly cycle's cost must not grow with history,
# issue 11), and a regime of weeks ago does not outvote the recent one. 7 days of hourly runs hold
# 168 x (live partitions) scored rows, far above MIN_ROWS.
HISTORY_DAYS = 7.0
EPS = 1e-4  # probabilities are clipped to [EPS, 1 - EPS] before logits


@dataclass
class CalibrationMap:
    """A fitted monotone map from raw to calibrated probability."""

    model: str
    method: str  # isotonic | platt | beta | identity
    params: dict = field(default_factory=dict)
    rows: int = 0
    positives: int = 0
    cutoff: str | None = None  # ISO instant: only windows closed by then were used
    version: str = "identity"
    note: str = ""

    def apply(self, p) -> np.ndarray:
        """Calibrated probabilities for raw probabilities `p` (array-like)."""
        p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
        if self.method == "isotonic":
            return np.interp(p, self.params["x"], self.params["y"])
        if self.method == "platt":
            return _sigmoid(self.params["a"] * _logit(p) + self.params["b"])
        if self.method == "beta":
            q = np.clip(p, EPS, 1 - EPS)
            return _sigmoid(self.params["a"] * np.log(q) - self.params["b"] * np.log(1 - q) + self.params["c"])
        return p


# Shipped prior maps per model (see the module docstring): written by
# `bench/forecast_quality.py --fit-prior`, which prints this entry with its provenance.
PRIORS: dict[str, dict] = {
    "path": {
        "method": "isotonic",
        "params": {
            "x": [0.0, 0.005, 0.0282, 0.0743, 0.1033, 0.1644, 0.236, 0.267, 0.275, 0.2835, 0.295, 0.3431,
                  0.449, 0.5231, 0.5527, 0.5643, 0.5929, 0.6252, 0.6525, 0.6732, 0.7163, 0.7552, 0.7911,
                  0.82, 0.825, 0.8392, 0.884, 0.92, 0.9385, 0.9813, 1.0],
            "y": [0.0621, 0.1067, 0.116, 0.1304, 0.1833, 0.2333, 0.2349, 0.2667, 0.2727, 0.3, 0.3077, 0.3293,
                  0.3832, 0.3942, 0.4167, 0.45, 0.4948, 0.5942, 0.6418, 0.65, 0.6872, 0.7619, 0.7685, 0.8,
                  0.8095, 0.8313, 0.8347, 0.875, 0.8798, 0.8868, 0.8886],
        },
        "rows": 6485, "positives": 3086,
        "fitted_on": ("bench/forecast_quality.py --fit-prior isotonic at 10ba3cdce879: seeds 100-104 x "
                      "steady/bursty/diurnal/shrink/drift, 6485 scored runs"),
    },
}


def prior(model: str) -> CalibrationMap | None:
    """The shipped prior map of `model` (None when it has none); its version hashes its parameters."""
    d = PRIORS.get(model)
    if d is None:
        return None
    key = json.dumps([model, d["method"], d["params"]], sort_keys=True)
    version = "prior-" + hashlib.sha1(key.encode()).hexdigest()[:12]
    return CalibrationMap(model, d["method"], dict(d["params"]), d["rows"], d["positives"], None, version,
                          f"prior map (fitted on {d['fitted_on']})")


def with_prior(cm: CalibrationMap) -> CalibrationMap:
    """`cm`, or the model's prior map where `cm` is the identity for want of history."""
    if cm.method != "identity" or cm.note == "calibration disabled":
        return cm
    pm = prior(cm.model)
    if pm is None:
        return cm
    pm.note = f"{pm.note}; the lake's own history is too thin ({cm.note})"
    pm.cutoff = cm.cutoff
    return pm


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q / (1 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def logistic(X: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton's method (tiny ridge keeps separable sets finite)."""
    X = np.column_stack([X, np.ones(len(y))])
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        mu = _sigmoid(X @ w)
        g = X.T @ (mu - y) + ridge * w
        H = (X * (mu * (1 - mu))[:, None]).T @ X + ridge * np.eye(X.shape[1])
        delta = np.linalg.solve(H, g)
        w -= delta
        if np.max(np.abs(delta)) < 1e-9:
            break
    return w


def _pava(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted pool-adjacent-violators over points sorted by `x`: the non-decreasing fit of values
    `v` with weights `w`; returns the blocks' weighted centres, weighted means and total weights."""
    blocks: list[list[float]] = []  # [sum v*w, sum w, sum x*w]
    for xi, vi, wi in zip(x, v, w):
        blocks.append([vi * wi, wi, xi * wi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, c2, x2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][2] += x2
    b = np.array(blocks, dtype=float).reshape(-1, 3)
    return b[:, 2] / b[:, 1], b[:, 0] / b[:, 1], b[:, 1]


def pav(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares fit of outcomes `y` on raw probabilities `p`: the
    blocks' centres, split frequencies and row counts."""
    order = np.argsort(p, kind="mergesort")
    xs, ys = np.asarray(p, float)[order], np.asarray(y, float)[order]
    # Equal raw probabilities form one block to start with (a map must be a function of p).
    ux, start = np.unique(xs, return_index=True)
    sums = np.add.reduceat(ys, start)
    cnt = np.diff(np.append(start, len(xs))).astype(float)
    return _pava(ux, sums / cnt, cnt)


def fit(p, y, method: str = "platt", *, model: str = "", cutoff: str | None = None,
        ids: list[str] | None = None) -> CalibrationMap:
    """Fit a calibration map of `method` on raw probabilities `p` and outcomes `y` (0/1).

    Below ``MIN_ROWS`` rows or ``MIN_CLASS`` of either class the identity is returned, with the
    reason in ``note``.
    """
    if method not in METHODS:
        raise InvalidParameterError(f"calibration {method!r} is unknown; choose one of {', '.join(METHODS)}")
    if method == "auto":
        raise InvalidParameterError("calibration 'auto' chooses between maps on held-out rows: use "
                                    "calibration.choose (or map_for_run), not fit")
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    y = np.asarray(y, dtype=float)
    n, pos = len(y), int(y.sum())
    cm = CalibrationMap(model, "identity", {}, n, pos, cutoff)
    if method == "none":
        cm.note = "calibration disabled"
        return cm
    if method == "prior":
        pm = prior(model)
        if pm is None:
            cm.note = f"identity: model {model!r} ships no prior map"
            return cm
        pm.cutoff = cutoff
        return pm
    if n < MIN_ROWS or pos < MIN_CLASS or n - pos < MIN_CLASS:
        cm.note = (f"identity: {n} scored rows ({pos} splits) before the run; a map needs {MIN_ROWS} rows "
                   f"with {MIN_CLASS} of each outcome")
        return cm
    if method == "isotonic":
        bx, by, bn = pav(p, y)
        # Each block's split frequency k/n becomes its posterior mean under Jeffreys' prior,
        # (k + 1/2) / (n + 1), so no block maps to exactly 0 or 1: 500 splits out of 500 rows say
        # 0.999, not certainty. Blocks the shrinkage leaves out of order are pooled again.
        bx, by, _ = _pava(bx, (by * bn + 0.5) / (bn + 1.0), bn + 1.0)
        # Anchor the ends so the map covers [0, 1] (flat beyond the outermost blocks).
        x = np.concatenate([[0.0], bx, [1.0]])
        v = np.concatenate([[by[0]], by, [by[-1]]])
        x, keep = np.unique(x, return_index=True)
        cm.params = {"x": [float(a) for a in x], "y": [float(b) for b in v[keep]]}
    elif method == "platt":
        a, b = logistic(_logit(p)[:, None], y)
        cm.params = {"a": float(a), "b": float(b)}
    else:
        q = np.clip(p, EPS, 1 - EPS)
        a, mb, c = logistic(np.column_stack([np.log(q), np.log(1 - q)]), y)
        # Kull et al. constrain a, b >= 0 (a monotone map); refit on the remaining feature if violated.
        if a < 0 or -mb < 0:
            if a < 0:
                a, (mb, c) = 0.0, logistic(np.log(1 - q)[:, None], y)
            else:
                mb, (a, c) = 0.0, logistic(np.log(q)[:, None], y)
        cm.params = {"a": float(max(a, 0.0)), "b": float(max(-mb, 0.0)), "c": float(c)}
    cm.method = method
    h = hashlib.sha1(f"{model}|{method}|{cutoff}".encode())
    for i, label in zip(ids or [f"{a:.12g}" for a in p], y):
        h.update(f"|{i}:{int(label)}".encode())
    cm.version = _version(cutoff, h.hexdigest())
    return cm


def choose(p, y, held, *, model: str = "", cutoff: str | None = None,
           ids: list[str] | None = None) -> CalibrationMap:
    """The ``auto`` map: of {the prior, the identity, an AUTO_FIT map}, the one with the lowest Brier
    on the held-out rows (`held`: those whose windows closed in the last HOLDOUT_HOURS before the run).

    The candidate map is fitted on the rows not held out and scored on the held-out ones; when it wins
    it is refitted on all rows (what is applied). Ties keep the earlier candidate (prior, identity,
    map). Below MIN_ROWS rows (or MIN_CLASS of an outcome) the prior, as `with_prior`; with no
    held-out rows (no run in the last HOLDOUT_HOURS) the prior, or the map for a model without one.
    The note names the choice and every candidate's held-out Brier."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    y = np.asarray(y, dtype=float)
    held = np.asarray(held, dtype=bool)
    full = fit(p, y, AUTO_FIT, model=model, cutoff=cutoff, ids=ids)
    if full.method == "identity":
        return with_prior(full)
    pm = prior(model)
    if pm is not None:
        pm.cutoff = cutoff
    if not held.any():
        chosen = pm if pm is not None else full
        chosen.note = f"auto: no window closed in the {HOLDOUT_HOURS:g} h before the run; {chosen.note or chosen.method}"
        return chosen
    ident = CalibrationMap(model, "identity", {}, len(y), int(y.sum()), cutoff)
    rest = fit(p[~held], y[~held], AUTO_FIT, model=model)
    cands = ([("prior", pm, pm)] if pm is not None else []) + [("identity", ident, ident)] \
        + ([("lake map", rest, full)] if rest.method != "identity" else [])
    scored = [(name, float(np.mean((m.apply(p[held]) - y[held]) ** 2)), chosen) for name, m, chosen in cands]
    name, _, chosen = min(scored, key=lambda c: c[1])
    chosen.note = (f"auto: {name} chosen on the {int(held.sum())} rows whose windows closed in the last "
                   f"{HOLDOUT_HOURS:g} h (held-out Brier " + ", ".join(f"{n} {b:.4f}" for n, b, _ in scored)
                   + f"; candidate map fitted on the {int((~held).sum())} earlier rows)")
    return chosen


_STAMP = "%Y%m%dT%H%M%SZ"
_DATED = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+\.json$")


def _version(cutoff: str | None, digest: str) -> str:
    """``<cutoff, UTC, %Y%m%dT%H%M%SZ>-<12 hex of the digest>`` (the run instant first, so `prune`
    dates a stored map from its name); a map fitted without a cutoff is named by its digest alone."""
    if not cutoff:
        return digest[:16]
    at = datetime.fromisoformat(cutoff)
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    return f"{at.strftime(_STAMP)}-{digest[:12]}"


# --- the lake's scored history -------------------------------------------------------------------
def scored_history(settings, model: str, at: datetime,
                   days: float = HISTORY_DAYS) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(prediction ids, raw probabilities, outcomes) of `model`'s predictions whose windows closed by
    `at`, and no earlier than `days` before it (windows holding a manual split left out) (``HISTORY_DAYS``; the read is pushed down to Delta
    file skipping on ``window_end``, so its cost follows the days read, not the lake's age)."""
    ids, p, y, _ = _scored(settings, model, at, days)
    return ids, p, y


def _before(at: datetime, span: timedelta) -> datetime:
    """``at - span``, or the earliest instant when that lies before year 1: a run in the first days
    of the calendar (before any lake's first change) reads the whole, empty, history."""
    floor = datetime.min.replace(tzinfo=at.tzinfo)
    return floor if at - floor < span else at - span


def _scored(settings, model: str, at: datetime,
            days: float) -> tuple[list[str], np.ndarray, np.ndarray, list[datetime]]:
    """`scored_history` and each row's ``window_end``, in prediction-id order."""
    at_s = pa.scalar(at, storage.TS)
    since = pa.scalar(_before(at, timedelta(days=days)), storage.TS)
    t = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS, missing_ok=True,
                     filters=[("window_end", ">", since), ("window_end", "<=", at_s), ("model", "=", model)])
    if t.num_rows == 0:
        return [], np.zeros(0), np.zeros(0), []
    t = t.filter(pc.is_null(t.column("skip_reason")))
    if t.num_rows == 0:
        return [], np.zeros(0), np.zeros(0), []
    # Only splits that can label these rows: after the earliest run read, by `at`.
    first_run = pc.min(t.column("run_ts"))
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS, missing_ok=True,
                          filters=[("split_ts", ">", first_run), ("split_ts", "<=", at_s)])
    # Only splits known at `at` (every split inside a closed window is, but be explicit).
    first = first_splits(s for s in splits.to_pylist() if s["split_ts"] <= at)
    raw = t.column("probability_raw").to_pylist()
    cal = t.column("probability").to_pylist()
    ids, p, y, ends = [], [], [], []
    for i, pid, r, we, a, c in zip(t.column("prediction_id").to_pylist(), t.column("partition_id").to_pylist(),
                                   t.column("run_ts").to_pylist(), t.column("window_end").to_pylist(), raw, cal):
        hit, _ = window_split(first, pid, r, we)
        if hit is None:
            continue  # an operator's split in the window: no outcome, neither positive nor negative
        ids.append(i)
        p.append(a if a is not None else c)
        y.append(float(hit))
        ends.append(we)
    order = np.argsort(ids) if ids else np.zeros(0, dtype=int)
    p_arr, y_arr = np.array(p, dtype=float), np.array(y, dtype=float)
    return [ids[i] for i in order], p_arr[order], y_arr[order], [ends[i] for i in order]


def calibration_dir(settings, model: str) -> str:
    """Where `model`'s maps are kept: ``<lake>/_weaver/calibration/<model>`` (a path or an s3:// prefix)."""
    return objstore.lake_file(settings.lake, "calibration", model)


def map_for_run(settings, model: str, at: datetime, method: str = DEFAULT_METHOD, *, store: bool = True) -> CalibrationMap:
    """The map a run of `model` at `at` applies: fitted on windows closed by `at`, stored as JSON."""
    if method not in METHODS:
        raise InvalidParameterError(f"calibration {method!r} is unknown; choose one of {', '.join(METHODS)}")
    if method == "none":
        return CalibrationMap(model, "identity", note="calibration disabled")
    if method == "prior":
        cm = fit([], [], "prior", model=model, cutoff=at.isoformat())
    else:
        ids, p, y, ends = _scored(settings, model, at, HISTORY_DAYS)
        if method == "auto":
            since = _before(at, timedelta(hours=HOLDOUT_HOURS))
            cm = choose(p, y, [e > since for e in ends], model=model, cutoff=at.isoformat(), ids=ids)
        else:
            cm = with_prior(fit(p, y, method, model=model, cutoff=at.isoformat(), ids=ids))
    if store and cm.method != "identity":
        save(settings, cm)
    return cm


def save(settings, cm: CalibrationMap) -> str:
    """Write the map to ``<lake>/_weaver/calibration/<model>/<version>.json`` atomically; returns its URI."""
    path = objstore.join(calibration_dir(settings, cm.model), f"{cm.version}.json")
    return objstore.write_text(path, json.dumps(asdict(cm), indent=2, sort_keys=True), storage.options(path))


def load(settings, model: str, version: str) -> CalibrationMap:
    """A stored map by model and version."""
    d = calibration_dir(settings, model)
    path = objstore.join(d, f"{version}.json")
    text = objstore.read_text(path, storage.options(path), missing_ok=True)
    if text is None:
        raise InvalidParameterError(f"no calibration map {version} for model {model} under {d}; `weaver maintain` "
                                    "deletes the maps of runs older than calibration_retention (a rerun of that "
                                    "run refits the same map)")
    return CalibrationMap(**json.loads(text))


def prune(settings, now: datetime, retention: timedelta | None = None) -> dict:
    """Delete the stored lake-own maps of runs before ``now - retention``
    (``settings.calibration_retention`` by default); the `weaver maintain` step.

    Each run stores its map, so an hourly cycle adds ~8,760 files a year per model. Nothing reads a
    stored map back to forecast (each run refits on its own history), and a deleted one can be
    refitted: the same predictions and splits give the same map and version while the predictions
    are kept. A map is dated by the run instant in its name; one stored before maps were named so is
    dated by its JSON's ``cutoff``. The shipped priors (``prior-*``, one file each) are kept.
    Deleting is idempotent: a rerun, or a pass after a crash, deletes what is left.
    """
    now = parse_timepoint(now)  # a naive instant is refused before anything is deleted
    retention = settings.calibration_retention if retention is None else retention
    if retention <= timedelta(0):
        raise InvalidParameterError(f"calibration retention must be positive, got {retention}")
    before = now - retention
    root = objstore.lake_file(settings.lake, "calibration")
    opts = storage.options(root)
    deleted = kept = 0
    for model in objstore.list_folder(root, opts, folders=True):
        folder = objstore.join(root, model)
        for name in objstore.list_folder(folder, opts):
            if not name.endswith(".json"):
                continue  # a local write's leftover temporary file, not a map
            if name.startswith("prior-"):
                kept += 1
                continue
            path = objstore.join(folder, name)
            m = _DATED.match(name)
            if m:
                cut = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=timezone.utc)
            else:
                try:
                    text = objstore.read_text(path, opts, missing_ok=True)  # a concurrent prune may take it
                    cut = datetime.fromisoformat(json.loads(text or "{}")["cutoff"])
                except (KeyError, TypeError, ValueError):
                    cut = None  # no instant to date it by: left alone
                if cut is not None and cut.tzinfo is None:
                    cut = None
            if cut is not None and cut < before:
                objstore.delete(path, opts)
                deleted += 1
            else:
                kept += 1
    return {"maps_deleted": deleted, "maps_kept": kept, "deleted_before": before.isoformat()}


# --- scores --------------------------------------------------------------------------------------
def ece(p, y, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean |observed - mean predicted| over equal-width bins."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    if not len(p):
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    tot = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            tot += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(tot / len(p))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, c - h)), float(min(1.0, c + h))
