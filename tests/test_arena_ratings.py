"""Arena ratings: BT recovers known strengths with calibrated bootstrap intervals; Elo sanity; cleaning."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mova.arena import analysis, ratings

SCALE, BASE, INIT = 400.0, 10.0, 1000.0


def simulate_votes(true: dict[str, float], n: int, rng: np.random.Generator, *, tie_rate: float = 0.1) -> pd.DataFrame:
    """Votes between random pairs of models with known ratings.

    Ties come with a constant probability and wins with ``P(a) - tie_rate / 2``, so the expected
    score of a is exactly ``P(a beats b)`` and the half-win BT estimate is consistent.
    """
    names = list(true)
    a = rng.integers(0, len(names), n)
    b = (a + rng.integers(1, len(names), n)) % len(names)  # a different model
    strength = np.array([true[m] for m in names])
    p_a = 1.0 / (1.0 + BASE ** ((strength[b] - strength[a]) / SCALE))
    u = rng.random(n)
    choice = np.where(u < p_a - tie_rate / 2, "left", np.where(u < p_a + tie_rate / 2, "tie", "right"))
    return pd.DataFrame({"model_a": np.array(names)[a], "model_b": np.array(names)[b], "choice": choice})


TRUE = {"m1": 1150.0, "m2": 1080.0, "m3": 1000.0, "m4": 930.0, "m5": 840.0}
TRUE_CENTRED = {m: v - np.mean(list(TRUE.values())) + INIT for m, v in TRUE.items()}  # mean = INIT, as BT reports


def test_bt_recovers_order_and_values():
    votes = simulate_votes(TRUE, 6000, np.random.default_rng(1))
    bt = ratings.compute_bt(votes)
    assert list(bt.sort_values(ascending=False).index) == list(TRUE)
    assert bt.mean() == pytest.approx(INIT)
    for model, value in TRUE_CENTRED.items():
        assert bt[model] == pytest.approx(value, abs=25)


def test_bt_anchor_and_scale():
    votes = simulate_votes(TRUE, 3000, np.random.default_rng(2))
    anchored = ratings.compute_bt(votes, anchor=("m3", 1000.0))
    assert anchored["m3"] == pytest.approx(1000.0)
    centred = ratings.compute_bt(votes)
    assert np.allclose((anchored - anchored["m3"]).to_numpy(), (centred - centred["m3"]).to_numpy())
    with pytest.raises(ValueError, match="anchor model"):
        ratings.compute_bt(votes, anchor=("nope", 1000.0))


@pytest.mark.slow
def test_bootstrap_intervals_cover_true_values_at_nominal_rate():
    """Over repeated simulations the 95% intervals hold the true ratings about 95% of the time."""
    simulations, rounds = 40, 150
    covered = total = 0
    for sim in range(simulations):
        rng = np.random.default_rng(1000 + sim)
        votes = simulate_votes(TRUE, 1500, rng)
        samples = ratings.bootstrap_ratings(votes, method="bt", rounds=rounds, seed=sim)
        ci = ratings.confidence_intervals(samples)
        for model, value in TRUE_CENTRED.items():
            covered += bool(ci.loc[model, "lower"] <= value <= ci.loc[model, "upper"])
            total += 1
    coverage = covered / total
    assert coverage >= 0.85, f"coverage {coverage:.3f} of {total} intervals"
    assert coverage <= 0.995, f"intervals too wide: coverage {coverage:.3f}"


def test_bootstrap_is_seeded():
    votes = simulate_votes(TRUE, 500, np.random.default_rng(3))
    one = ratings.bootstrap_ratings(votes, rounds=20, seed=7)
    two = ratings.bootstrap_ratings(votes, rounds=20, seed=7)
    other = ratings.bootstrap_ratings(votes, rounds=20, seed=8)
    pd.testing.assert_frame_equal(one, two)
    assert not one.equals(other)
    elo_one = ratings.bootstrap_ratings(votes, method="elo", rounds=5, seed=7)
    pd.testing.assert_frame_equal(elo_one, ratings.bootstrap_ratings(votes, method="elo", rounds=5, seed=7))


def test_elo_sanity():
    one = pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "choice": ["left"]})
    elo = ratings.compute_elo(one, k=32, scale=SCALE, base=BASE, init=INIT)
    assert elo["a"] == pytest.approx(1016.0) and elo["b"] == pytest.approx(984.0)  # k * (1 - 0.5)

    tie = pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "choice": ["tie"]})
    assert ratings.compute_elo(tie, k=32).to_dict() == {"a": 1000.0, "b": 1000.0}

    votes = simulate_votes(TRUE, 4000, np.random.default_rng(4))
    elo = ratings.compute_elo(votes, k=4)
    assert elo.sum() == pytest.approx(INIT * len(TRUE))  # zero-sum updates
    assert list(elo.sort_values(ascending=False).index) == list(TRUE)

    # expected score formula: a 400-point gap at base 10 is 10:1
    gap = pd.DataFrame({"model_a": ["a"] * 2, "model_b": ["b"] * 2, "choice": ["left", "right"]})
    assert ratings.compute_elo(gap.iloc[:1], k=11, scale=400, base=10, init=1000)["a"] == pytest.approx(1005.5)


def test_bothbad_is_a_tie_or_dropped():
    votes = pd.DataFrame({"model_a": ["a", "a"], "model_b": ["b", "b"], "choice": ["left", "bothbad"]})
    _, _, _, scores = ratings.encode_votes(votes)
    assert scores.tolist() == [1.0, 0.5]
    _, _, _, dropped = ratings.encode_votes(votes, bothbad="drop")
    assert dropped.tolist() == [1.0]
    with pytest.raises(ValueError, match="choice"):
        ratings.encode_votes(pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "choice": ["model_a"]}))


def test_rank_from_intervals():
    lower = pd.Series({"a": 1100.0, "b": 1050.0, "c": 900.0})
    upper = pd.Series({"a": 1200.0, "b": 1150.0, "c": 1040.0})
    # a and b overlap -> both rank 1; c's upper (1040) is below a's and b's lower -> rank 3
    assert ratings.rank_from_intervals(lower, upper).to_dict() == {"a": 1, "b": 1, "c": 3}


def test_win_tie_loss_matrix():
    votes = pd.DataFrame(
        {"model_a": ["x", "y", "x", "x"], "model_b": ["y", "x", "y", "y"], "choice": ["left", "left", "tie", "bothbad"]}
    )
    m = ratings.win_tie_loss(votes)
    assert m["count"].loc["x", "y"] == 4 and m["count"].loc["y", "x"] == 4
    assert m["win"].loc["x", "y"] == pytest.approx(0.25) and m["loss"].loc["x", "y"] == pytest.approx(0.25)
    assert m["tie"].loc["x", "y"] == pytest.approx(0.5)
    assert m["win"].loc["y", "x"] == pytest.approx(0.25)
    assert math.isnan(m["win"].loc["x", "x"])


def test_cleaning_counts_dropped_rows_by_reason():
    rows = analysis.votes_frame([
        {"model_a": "a", "model_b": "b", "choice": "left", "anonymous": 1, "judge": "j1", "tstamp": 10.0,
         "seconds_to_vote": 20.0},
        {"model_a": "a", "model_b": "b", "choice": "left", "anonymous": 0, "judge": "j1", "tstamp": 11.0},
        {"model_a": "a", "model_b": "a", "choice": "tie", "anonymous": 1, "judge": "j1", "tstamp": 12.0},
        {"model_a": "a", "model_b": None, "choice": "tie", "anonymous": 1, "judge": "j1", "tstamp": 13.0},
        {"model_a": "a", "model_b": "b", "choice": "maybe", "anonymous": 1, "judge": "j1", "tstamp": 14.0},
        {"model_a": "a", "model_b": "b", "choice": "right", "anonymous": 1, "judge": "j2", "tstamp": 15.0,
         "seconds_to_vote": 0.5},
        {"model_a": "a", "model_b": "b", "choice": "right", "anonymous": 1, "judge": "j1", "tstamp": 16.0},
        {"model_a": "a", "model_b": "b", "choice": "right", "anonymous": 1, "judge": "j1", "tstamp": 17.0},
    ])
    result = analysis.clean_votes(rows, min_seconds_to_vote=2.0, max_votes_per_judge_per_day=2)
    assert result.dropped == {
        "missing field": 1, "invalid choice": 1, "same model on both sides": 1, "not anonymous": 1,
        "voted too fast": 1, "judge daily cap": 1,
    }
    assert len(result.votes) == 2
    assert "6 votes" not in result.summary() and "2 votes kept" in result.summary()


def test_filter_and_leaderboard_table():
    votes = simulate_votes(TRUE, 800, np.random.default_rng(5))
    votes["category"] = np.where(np.arange(len(votes)) % 2 == 0, "speech", "music")
    votes["prompt_set"] = "set1"
    speech = analysis.filter_votes(votes, category="speech")
    assert len(speech) == 400 and set(speech["category"]) == {"speech"}
    board = analysis.build_leaderboard(votes, rounds=30, seed=0)
    assert list(board.table.columns) == list(analysis.TABLE_COLUMNS)
    assert board.table["rating"].is_monotonic_decreasing
    assert (board.table["lower"] <= board.table["rating"] + 1e-6).all()
    assert (board.table["upper"] >= board.table["rating"] - 1e-6).all()
    assert board.table["votes"].sum() == 2 * len(votes)
    assert (board.table["wins"] + board.table["ties"] + board.table["losses"] == board.table["votes"]).all()
    assert board.table.iloc[0]["rank"] == 1
    empty = analysis.build_leaderboard(votes.iloc[:0])
    assert empty.n_votes == 0 and empty.table.empty
