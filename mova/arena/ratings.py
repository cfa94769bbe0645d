"""Ratings from vote rows: online Elo, Bradley–Terry MLE, bootstrap confidence intervals, ranks.

Pure functions over a vote table (no I/O, no global random state). A vote table is a pandas DataFrame
with at least the columns

- ``model_a``: the model shown on the left (clip A),
- ``model_b``: the model shown on the right (clip B),
- ``choice``:  ``"left"`` (A better), ``"right"`` (B better), ``"tie"`` or ``"bothbad"``,

in the order the votes were cast (online Elo depends on the order). Ties count half a win to each
side; "both are bad" counts as a tie unless ``bothbad="drop"``.

The shape follows FastChat's ``fastchat/serve/monitor/rating_systems.py`` (explicit k, base, scale and
initial rating; BT fitted by maximum likelihood and reported on the Elo scale; bootstrap by resampling
votes), with a seeded ``numpy.random.Generator`` everywhere.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit

BothBad = Literal["tie", "drop"]
Method = Literal["bt", "elo"]

# score of model_a for each choice
_SCORE_A = {"left": 1.0, "right": 0.0, "tie": 0.5, "bothbad": 0.5}


def encode_votes(votes: pd.DataFrame, *, bothbad: BothBad = "tie") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(models, index_a [N], index_b [N], score_a [N])``; score_a is 1, 0 or 0.5. Models sorted by name."""
    unknown = set(votes["choice"]) - set(_SCORE_A)
    if unknown:
        raise ValueError(f"choice values {sorted(unknown)} are not allowed; use one of {sorted(_SCORE_A)}")
    if bothbad == "drop":
        votes = votes[votes["choice"] != "bothbad"]
    elif bothbad != "tie":
        raise ValueError(f"bothbad={bothbad!r} is not allowed; use 'tie' or 'drop'")
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    position = {m: i for i, m in enumerate(models)}
    index_a = votes["model_a"].map(position).to_numpy(dtype=np.int64)
    index_b = votes["model_b"].map(position).to_numpy(dtype=np.int64)
    score_a = votes["choice"].map(_SCORE_A).to_numpy(dtype=np.float64)
    return models, index_a, index_b, score_a


# --- Elo ------------------------------------------------------------------------------------------


def _elo(
    n_models: int, index_a: np.ndarray, index_b: np.ndarray, score_a: np.ndarray,
    *, k: float, scale: float, base: float, init: float,
) -> np.ndarray:
    rating = np.full(n_models, init, dtype=np.float64)
    for a, b, s in zip(index_a.tolist(), index_b.tolist(), score_a.tolist()):
        expected_a = 1.0 / (1.0 + base ** ((rating[b] - rating[a]) / scale))
        rating[a] += k * (s - expected_a)
        rating[b] -= k * (s - expected_a)
    return rating


def compute_elo(
    votes: pd.DataFrame,
    *,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
    bothbad: BothBad = "tie",
) -> pd.Series:
    """Online Elo over the votes in row order: ``E_a = 1 / (1 + base ** ((R_b - R_a) / scale))``,
    ``R_a += k (S_a - E_a)``, ``R_b -= k (S_a - E_a)``. Returns ratings indexed by model name."""
    models, index_a, index_b, score_a = encode_votes(votes, bothbad=bothbad)
    rating = _elo(len(models), index_a, index_b, score_a, k=k, scale=scale, base=base, init=init)
    return pd.Series(rating, index=pd.Index(models, name="model"), name="elo")


# --- Bradley–Terry --------------------------------------------------------------------------------


def _aggregate(index_a: np.ndarray, index_b: np.ndarray, score_a: np.ndarray, n_models: int):
    """Unique (a, b, score) outcomes and how often each occurs: the sufficient statistics for BT."""
    keys = (index_a * n_models + index_b) * 3 + (score_a * 2).astype(np.int64)  # score 0, .5, 1 -> 0, 1, 2
    unique, counts = np.unique(keys, return_counts=True)
    outcome = unique % 3
    pair = unique // 3
    return pair // n_models, pair % n_models, outcome / 2.0, counts.astype(np.float64)


def _fit_bt(
    n_models: int, a: np.ndarray, b: np.ndarray, s: np.ndarray, w: np.ndarray,
    *, reg: float, x0: np.ndarray | None = None,
) -> np.ndarray:
    """Maximise ``sum w [s log σ(θa − θb) + (1 − s) log σ(θb − θa)] − reg/2 |θ|²`` over log-strengths θ.

    ``reg`` is a weak L2 penalty: it only matters when a model won (or lost) every vote, where the
    MLE is infinite, and keeps the fit finite there. Returns θ centred on mean 0.
    """

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[a] - theta[b]
        log_lik = np.sum(w * (s * log_expit(d) + (1.0 - s) * log_expit(-d)))
        g_d = w * (s - expit(d))  # d log_lik / d d
        grad = np.bincount(a, weights=g_d, minlength=n_models) - np.bincount(b, weights=g_d, minlength=n_models)
        return -log_lik + 0.5 * reg * theta @ theta, -grad + reg * theta

    def hessian(theta: np.ndarray) -> np.ndarray:
        d = theta[a] - theta[b]
        h = w * expit(d) * expit(-d)
        hess = reg * np.eye(n_models)
        np.add.at(hess, (a, a), h)
        np.add.at(hess, (b, b), h)
        np.add.at(hess, (a, b), -h)
        np.add.at(hess, (b, a), -h)
        return hess

    # Newton-CG with the exact Hessian: a handful of iterations, ~1 ms for ten models
    start = np.zeros(n_models) if x0 is None else x0
    result = minimize(objective, start, jac=True, hess=hessian, method="Newton-CG", options={"xtol": 1e-9})
    theta = result.x
    return theta - theta.mean()


def _to_points(
    theta: np.ndarray, models: list[str], *, scale: float, base: float, init: float,
    anchor: tuple[str, float] | None,
) -> np.ndarray:
    """Log-strength → Elo-like points: ``init + θ · scale / ln(base)``, then shifted so ``anchor``
    (a ``(model, rating)`` pair) sits at its rating; without an anchor the mean rating is ``init``."""
    points = init + theta * (scale / math.log(base))
    if anchor is not None:
        name, value = anchor
        if name not in models:
            raise ValueError(f"anchor model {name!r} has no votes; models with votes: {models}")
        points = points - points[..., models.index(name), None] + value
    return points


def compute_bt(
    votes: pd.DataFrame,
    *,
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
    anchor: tuple[str, float] | None = None,
    reg: float = 1e-2,
    bothbad: BothBad = "tie",
) -> pd.Series:
    """Bradley–Terry maximum likelihood (ties as half wins) on the Elo scale.

    ``P(a beats b) = 1 / (1 + base ** ((R_b - R_a) / scale))``. Returns ratings indexed by model name.
    """
    models, index_a, index_b, score_a = encode_votes(votes, bothbad=bothbad)
    a, b, s, w = _aggregate(index_a, index_b, score_a, len(models))
    theta = _fit_bt(len(models), a, b, s, w, reg=reg)
    points = _to_points(theta, models, scale=scale, base=base, init=init, anchor=anchor)
    return pd.Series(points, index=pd.Index(models, name="model"), name="bt")


# --- bootstrap ------------------------------------------------------------------------------------


def bootstrap_ratings(
    votes: pd.DataFrame,
    *,
    method: Method = "bt",
    rounds: int = 1000,
    seed: int = 0,
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
    k: float = 4.0,
    anchor: tuple[str, float] | None = None,
    reg: float = 1e-2,
    bothbad: BothBad = "tie",
) -> pd.DataFrame:
    """Ratings on ``rounds`` resamples of the votes (with replacement), [rounds, models].

    BT resamples the counts of each distinct outcome (multinomial, equal to resampling rows); Elo
    resamples rows in random order. Seeded: the same inputs give the same samples.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not allowed; use 1 or more")
    rng = np.random.default_rng(seed)
    models, index_a, index_b, score_a = encode_votes(votes, bothbad=bothbad)
    n_models, n_votes = len(models), len(score_a)
    samples = np.empty((rounds, n_models))
    if n_votes == 0:
        samples[:] = init
    elif method == "bt":
        a, b, s, w = _aggregate(index_a, index_b, score_a, n_models)
        theta_hat = _fit_bt(n_models, a, b, s, w, reg=reg)
        resampled = rng.multinomial(n_votes, w / w.sum(), size=rounds)  # [rounds, distinct outcomes]
        for r in range(rounds):
            theta = _fit_bt(n_models, a, b, s, resampled[r].astype(np.float64), reg=reg, x0=theta_hat)
            samples[r] = _to_points(theta, models, scale=scale, base=base, init=init, anchor=anchor)
    elif method == "elo":
        for r in range(rounds):
            rows = rng.integers(0, n_votes, n_votes)
            samples[r] = _elo(n_models, index_a[rows], index_b[rows], score_a[rows],
                              k=k, scale=scale, base=base, init=init)
    else:
        raise ValueError(f"method={method!r} is not allowed; use 'bt' or 'elo'")
    return pd.DataFrame(samples, columns=pd.Index(models, name="model"))


def confidence_intervals(samples: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Percentile intervals per model: columns ``lower`` and ``upper``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} is not allowed; use a value between 0 and 1")
    tail = (1.0 - level) / 2.0
    return pd.DataFrame({"lower": samples.quantile(tail), "upper": samples.quantile(1.0 - tail)})


def rank_from_intervals(lower: pd.Series, upper: pd.Series) -> pd.Series:
    """Rank = 1 + the number of models whose lower bound is above this model's upper bound.

    Models whose intervals overlap share a rank (FastChat's ``elo_analysis``).
    """
    low = lower.to_numpy()
    up = upper.reindex(lower.index).to_numpy()
    ranks = 1 + (low[None, :] > up[:, None]).sum(axis=1)
    return pd.Series(ranks, index=lower.index, name="rank")


# --- win / tie / loss -----------------------------------------------------------------------------


def win_tie_loss(votes: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Pairwise outcome tables, row model against column model, whatever side each was shown on.

    Returns ``{"win", "tie", "loss"}`` as fractions of the pair's votes ("both are bad" counts in
    ``tie``) and ``"count"``, the number of votes per pair. Cells of pairs with no votes are NaN.
    """
    models, index_a, index_b, score_a = encode_votes(votes, bothbad="tie")
    n = len(models)
    wins = np.zeros((n, n))
    ties = np.zeros((n, n))
    np.add.at(wins, (index_a, index_b), score_a == 1.0)
    np.add.at(wins, (index_b, index_a), score_a == 0.0)
    np.add.at(ties, (index_a, index_b), score_a == 0.5)
    ties = ties + ties.T
    count = wins + wins.T + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(count > 0, count, np.nan)
        tables = {"win": wins / total, "tie": ties / total, "loss": wins.T / total}
    index = pd.Index(models, name="model")
    out = {name: pd.DataFrame(table, index=index, columns=index) for name, table in tables.items()}
    out["count"] = pd.DataFrame(count.astype(np.int64), index=index, columns=index)
    return out
