"""From stored votes to a leaderboard: clean (counting every dropped row by reason), filter, rate.

Rows come from ``ArenaStore.vote_rows()`` (or an exported file): ``model_a``, ``model_b``, ``choice``,
``judge``, ``client``, ``browser``, ``anonymous``, ``served``, ``tstamp``, ``flag``, ``category``, ``prompt_set``,
``seconds_to_vote``. Nothing here deletes a stored vote: cleaning chooses which rows count and reports the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mova.arena import ratings
from mova.arena.store import CHOICES

VOTE_COLUMNS = (
    "vote_id", "battle_id", "prompt_id", "category", "prompt_set", "model_a", "model_b", "choice", "winner",
    "judge", "client", "browser", "anonymous", "served", "tstamp", "flag", "seconds_to_vote",
)
OVER_SHARE = "over one client's share"
REQUIRED_COLUMNS = ("model_a", "model_b", "choice")

TABLE_COLUMNS = ("rank", "model", "rating", "lower", "upper", "votes", "wins", "ties", "losses", "win_rate")


def votes_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Vote rows as a DataFrame with the standard columns (missing ones filled with NA)."""
    frame = pd.DataFrame(list(rows))
    for column in VOTE_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


@dataclass
class CleanResult:
    votes: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of rows dropped

    def summary(self) -> str:
        kept = f"{len(self.votes)} votes kept"
        if not self.dropped:
            return kept
        return kept + "; dropped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))


def clean_votes(
    votes: pd.DataFrame,
    *,
    anonymous_only: bool = True,
    min_seconds_to_vote: float | None = None,
    max_votes_per_judge_per_day: int | None = None,
    exclude_models: Collection[str] = (),
    max_client_share: float | None = None,
    client_floor: int = 0,
) -> CleanResult:
    """Drop rows that should not count, and say how many were dropped for each reason.

    Reasons, checked in this order (a row is counted under the first that applies): ``missing field``,
    ``invalid choice``, ``same model on both sides``, ``excluded model``, ``not anonymous`` (names were
    visible when the vote was cast), the row's own ``flag`` (set when the vote was cast, e.g. ``voted too
    fast``), ``voted too fast`` (under ``min_seconds_to_vote`` after serving), ``judge daily cap`` (a judge's
    votes beyond the cap on one UTC day, in time order), ``over one client's share`` (see ``over_client_share``).
    """
    dropped: Counter[str] = Counter()
    frame = votes.reset_index(drop=True)

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        n = int(mask.sum())
        if n:
            dropped[reason] += n
            frame = frame[~mask].reset_index(drop=True)

    missing = pd.Series(False, index=frame.index)
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise ValueError(f"vote table has no column {column!r}; columns: {list(frame.columns)}")
        missing |= frame[column].isna() | (frame[column].astype(str) == "")
    drop(missing, "missing field")
    drop(~frame["choice"].isin(CHOICES), "invalid choice")
    drop(frame["model_a"] == frame["model_b"], "same model on both sides")
    if exclude_models:
        drop(frame["model_a"].isin(exclude_models) | frame["model_b"].isin(exclude_models), "excluded model")
    if anonymous_only and "anonymous" in frame.columns:
        drop(frame["anonymous"].fillna(0).astype(int) != 1, "not anonymous")
    if "flag" in frame.columns:
        for reason in sorted(set(frame["flag"].fillna("").astype(str)) - {""}):
            drop(frame["flag"].fillna("").astype(str) == reason, reason)
    if min_seconds_to_vote is not None and "seconds_to_vote" in frame.columns:
        seconds = pd.to_numeric(frame["seconds_to_vote"], errors="coerce")
        drop(seconds.notna() & (seconds < min_seconds_to_vote), "voted too fast")
    if max_votes_per_judge_per_day is not None and {"judge", "tstamp"} <= set(frame.columns):
        day = pd.to_datetime(pd.to_numeric(frame["tstamp"]), unit="s", utc=True).dt.date
        order = frame.assign(_day=day).sort_values("tstamp", kind="stable")
        nth = order.groupby(["judge", "_day"], dropna=False).cumcount()
        over = pd.Series(False, index=frame.index)
        over[nth.index[nth >= max_votes_per_judge_per_day]] = True
        drop(over, "judge daily cap")
    if max_client_share is not None:
        drop(over_client_share(frame, max_client_share, floor=client_floor), OVER_SHARE)
    return CleanResult(votes=frame, dropped=dict(dropped))


def over_client_share(votes: pd.DataFrame, share: float, *, floor: int = 0) -> pd.Series:
    """Rows beyond one client's share: each client keeps its first ``max(floor, share × len(votes))`` votes
    (in time order); the mask marks the rest.

    A client is the ``client`` column (one address), or the ``judge`` (session) where the address is unknown.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"max_client_share={share} is not allowed; use a value in (0, 1]")
    if floor < 0:
        raise ValueError(f"client_floor={floor} is not allowed; use 0 or more")
    if len(votes) == 0:
        return pd.Series(False, index=votes.index)
    client = votes["client"] if "client" in votes.columns else pd.Series("", index=votes.index)
    client = client.fillna("").astype(str)
    judge = votes["judge"].fillna("").astype(str) if "judge" in votes.columns else pd.Series("", index=votes.index)
    key = client.where(client != "", "session:" + judge)
    order = votes["tstamp"] if "tstamp" in votes.columns else pd.Series(range(len(votes)), index=votes.index)
    nth = key.to_frame("key").assign(_t=pd.to_numeric(order)).sort_values("_t", kind="stable").groupby("key").cumcount()
    allowed = max(floor, int(share * len(votes)))
    return (nth >= allowed).reindex(votes.index)


def filter_votes(
    votes: pd.DataFrame, *, category: str | None = None, prompt_set: str | None = None
) -> pd.DataFrame:
    """Votes on prompts of one category and/or one prompt set (``None`` or ``""`` = all)."""
    if category:
        votes = votes[votes["category"] == category]
    if prompt_set:
        votes = votes[votes["prompt_set"] == prompt_set]
    return votes.reset_index(drop=True)


@dataclass
class Leaderboard:
    """A rated leaderboard: ``table`` has ``TABLE_COLUMNS``, best first."""

    table: pd.DataFrame
    matrix: dict[str, pd.DataFrame]
    method: str
    n_votes: int
    dropped: dict[str, int]


def build_leaderboard(
    votes: pd.DataFrame,
    *,
    method: ratings.Method = "bt",
    rounds: int = 200,
    seed: int = 0,
    level: float = 0.95,
    k: float = 4.0,
    anchor: tuple[str, float] | None = None,
    dropped: Mapping[str, int] | None = None,
) -> Leaderboard:
    """Point ratings, bootstrap intervals, ranks from the intervals, and per-model vote counts."""
    if len(votes) == 0:
        empty = pd.DataFrame(columns=list(TABLE_COLUMNS))
        return Leaderboard(table=empty, matrix={}, method=method, n_votes=0, dropped=dict(dropped or {}))
    if method == "bt":
        point = ratings.compute_bt(votes, anchor=anchor)
    elif method == "elo":
        point = ratings.compute_elo(votes, k=k)
    else:
        raise ValueError(f"method={method!r} is not allowed; use 'bt' or 'elo'")
    samples = ratings.bootstrap_ratings(votes, method=method, rounds=rounds, seed=seed, k=k, anchor=anchor)
    intervals = ratings.confidence_intervals(samples, level=level)
    matrix = ratings.win_tie_loss(votes)
    counts = matrix["count"].sum(axis=1)
    wins = (matrix["win"] * matrix["count"]).sum(axis=1).round().astype(int)
    ties = (matrix["tie"] * matrix["count"]).sum(axis=1).round().astype(int)
    per_model = {"lower": intervals["lower"], "upper": intervals["upper"], "votes": counts, "wins": wins, "ties": ties}
    table = pd.DataFrame({"model": point.index, "rating": point.to_numpy(),
                          **{name: values.reindex(point.index).to_numpy() for name, values in per_model.items()}})
    table["losses"] = table["votes"] - table["wins"] - table["ties"]
    table["win_rate"] = table["wins"] / table["votes"].where(table["votes"] > 0)
    by_model = table.set_index("model")
    table["rank"] = ratings.rank_from_intervals(by_model["lower"], by_model["upper"]).to_numpy()
    table = table.sort_values(["rating", "model"], ascending=[False, True]).reset_index(drop=True)
    return Leaderboard(table=table[list(TABLE_COLUMNS)], matrix=matrix, method=method, n_votes=len(votes),
                       dropped=dict(dropped or {}))
