"""Choosing the next battle: two clips of one prompt from two different models.

Two weighted draws, so that the leaderboard fills evenly:

1. a model pair, with weight ``1 / (1 + votes for that model pair)``;
2. a clip pair of that model pair (same prompt), with weight ``1 / (1 + votes for that clip pair)``.

Clip pairs already served to this judge are left out while others remain. Left and right are swapped
with probability 1/2 (FastChat's ``get_battle_pair`` does the same for chat models).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence

from mova.arena.store import ArenaError, Candidate

ClipPair = tuple[int, int]  # (smaller clip id, larger clip id)


def clip_pairs(candidates: Sequence[Candidate]) -> dict[ClipPair, tuple[Candidate, Candidate]]:
    """Every pair of clips of one prompt from two different models."""
    by_prompt: dict[str, list[Candidate]] = defaultdict(list)
    for clip in candidates:
        by_prompt[clip.prompt_id].append(clip)
    pairs: dict[ClipPair, tuple[Candidate, Candidate]] = {}
    for clips in by_prompt.values():
        for a, b in itertools.combinations(sorted(clips, key=lambda c: c.clip_id), 2):
            if a.model != b.model:
                pairs[(a.clip_id, b.clip_id)] = (a, b)
    return pairs


def choose_pair(
    candidates: Sequence[Candidate],
    pair_votes: Mapping[ClipPair, int],
    rng: random.Random,
    *,
    exclude: Collection[ClipPair] = (),
) -> tuple[Candidate, Candidate]:
    """Return ``(left, right)`` for the next battle. Raises ``ArenaError`` when no pair exists."""
    pairs = clip_pairs(candidates)
    if not pairs:
        raise ArenaError(
            "the arena pool has no prompt with clips from two different models; "
            "add clips with `python -m mova arena import`"
        )
    fresh = {key: pair for key, pair in pairs.items() if key not in exclude}
    pairs = fresh or pairs

    # 1. model pair, fewer votes favoured
    by_model_pair: dict[tuple[str, str], list[ClipPair]] = defaultdict(list)
    for key, (a, b) in pairs.items():
        by_model_pair[tuple(sorted((a.model, b.model)))].append(key)
    model_pairs = sorted(by_model_pair)
    model_votes = [sum(pair_votes.get(key, 0) for key in by_model_pair[mp]) for mp in model_pairs]
    (model_pair,) = rng.choices(model_pairs, weights=[1.0 / (1 + v) for v in model_votes])

    # 2. clip pair of that model pair, fewer votes favoured
    keys = by_model_pair[model_pair]
    (key,) = rng.choices(keys, weights=[1.0 / (1 + pair_votes.get(k, 0)) for k in keys])

    # 3. random sides
    left, right = pairs[key]
    if rng.random() < 0.5:
        left, right = right, left
    return left, right
