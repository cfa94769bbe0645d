"""What the trainer reads: the latent cache written by :mod:`train.cache` (format below) and the resumable order
in which its samples are drawn.

Cache folder (written by ``python -m train cache`` or by the trainer when ``--data`` is a manifest)::

    meta.json                  format, clip geometry, model, VAE constants, text length
    text_null.safetensors      "empty" (T5 of "", for text dropout), "negative" (the default negative prompt),
                               "white_cond" (the first-frame condition of a white frame, for image dropout)
    shards/r{rank}-{k}.safetensors   "{id}/video" [16, T', h, w], "{id}/cond" [20, T', h, w], "{id}/audio" [C_a, N_a],
                               "{id}/text" [n_tokens, D] per sample
    index-r{rank}.jsonl        one row per sample: id, shard, caption, has_video, n_text, line, source
    skipped-r{rank}.jsonl      one row per manifest row that was skipped: line, id, kind, reason
"""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

CACHE_FORMAT = "mova-latent-cache"
CACHE_VERSION = 1
META = "meta.json"
TEXT_NULL = "text_null.safetensors"


def is_cache(path: str | os.PathLike) -> bool:
    meta = Path(path) / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == CACHE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


class LatentCache(torch.utils.data.Dataset):
    """Random access to a cache's samples: ``cache[i]`` → {"id", "video", "cond", "audio", "text", "fps"} with text
    zero-padded to ``text_len`` rows (the zero rows a 512-token T5 output has at inference, docs/model.md#text-encoding).

    Args:
        path: cache folder. text_len: pad text embeddings to this many tokens (default: the cache's).
        require_video: keep only samples with video (joint training); audio-only rows are counted and left out.
        text: read the cached text embeddings; False when the text encoder trains and encodes the captions itself
            (items then have no "text").
    """

    def __init__(self, path: str | os.PathLike, text_len: int | None = None, require_video: bool = True,
                 text: bool = True) -> None:
        self.path, self.text = Path(path), text
        if not is_cache(self.path):
            raise ValueError(f"{str(self.path)!r} is not a latent cache (no {META} with format {CACHE_FORMAT!r}); "
                             "build one with: python -m train cache --manifest M --model DIR --out CACHE")
        self.meta = json.loads((self.path / META).read_text())
        self.text_len = int(text_len or self.meta["max_sequence_length"])
        rows = []
        for index in sorted(self.path.glob("index-r*.jsonl")):
            rows.extend(json.loads(line) for line in index.open() if line.strip())
        rows.sort(key=lambda r: (r["line"], r["id"]))  # deterministic order whatever the number of cache ranks
        self.dropped_audio_only = sum(1 for r in rows if not r["has_video"]) if require_video else 0
        self.rows = [r for r in rows if r["has_video"] or not require_video]
        if not self.rows:
            raise ValueError(f"latent cache {self.path} has no usable samples"
                             + (" with video (it holds audio-only rows)" if self.dropped_audio_only else ""))
        too_long = max(r["n_text"] for r in self.rows)
        if too_long > self.text_len:
            raise ValueError(f"data.text_len={self.text_len} is too small: cached captions have up to "
                             f"{too_long} tokens")
        self._handles: dict[str, Any] = {}
        self._null = load_file(self.path / TEXT_NULL)  # on the CPU

    def __len__(self) -> int:
        return len(self.rows)

    def _pad(self, text: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.text_len, text.shape[1], dtype=torch.float32)
        out[: text.shape[0]] = text.float()
        return out

    def null_text(self, which: str = "empty") -> torch.Tensor:
        """[text_len, D] embeddings of the empty prompt (text dropout) or the default negative prompt."""
        return self._pad(self._null[which])

    def white_cond(self) -> torch.Tensor:
        """[20, T', h, w]: the condition of a pure-white first frame (text-only generation)."""
        if "white_cond" not in self._null:
            raise ValueError(f"latent cache {self.path} has no white-frame condition (built by an older version or "
                             "audio-only); rebuild it to train with diffusion.image_dropout > 0")
        return self._null["white_cond"]

    def preload(self, device: torch.device | str) -> None:
        """Hold every sample in memory on ``device`` (small caches: no per-step reads)."""
        items = [self[i] for i in range(len(self))]
        self._preloaded = {key: torch.stack([it[key] for it in items]).to(device)
                           for key in ("video", "cond", "audio", "text") if key in items[0]}

    def batch(self, indices: list[int]) -> dict[str, Any]:
        """The collated samples ``indices`` (from memory after :meth:`preload`)."""
        pre = getattr(self, "_preloaded", None)
        if pre is None:
            return self.collate([self[i] for i in indices])
        index = torch.tensor(indices, device=next(iter(pre.values())).device)
        return {"ids": [self.rows[i]["id"] for i in indices], "fps": float(self.meta["fps"]),
                **{k: v.index_select(0, index) for k, v in pre.items()}}

    def _handle(self, shard: str):
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.path / shard, framework="pt", device="cpu")
        return self._handles[shard]

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        f = self._handle(row["shard"])
        item: dict[str, Any] = {"id": row["id"], "fps": float(self.meta["fps"]),
                                "audio": f.get_tensor(f"{row['id']}/audio")}
        if self.text:
            item["text"] = self._pad(f.get_tensor(f"{row['id']}/text"))
        if row["has_video"]:
            item["video"] = f.get_tensor(f"{row['id']}/video")
            item["cond"] = f.get_tensor(f"{row['id']}/cond")
        return item

    def check(self, num_frames: int, fps: float, height: int, width: int) -> None:
        """ValueError naming the first field where the cache differs from the run's data config."""
        for name, want in (("num_frames", num_frames), ("fps", fps), ("height", height), ("width", width)):
            have = self.meta[name]
            if not math.isclose(float(have), float(want)):
                raise ValueError(f"data.{name}={want!r} does not match the latent cache {self.path} (built with "
                                 f"{name}={have!r}); set data.{name}={have!r} or rebuild the cache")

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples of one batch (equal shapes: a cache has one geometry)."""
        out: dict[str, Any] = {"ids": [it["id"] for it in items], "fps": items[0]["fps"]}
        for key in ("video", "cond", "audio", "text"):
            if key in items[0]:
                out[key] = torch.stack([it[key] for it in items])
        return out

    def summary(self) -> str:
        skipped = collections.Counter()
        for log in self.path.glob("skipped-r*.jsonl"):
            for line in log.open():
                if line.strip():
                    skipped[json.loads(line)["kind"]] += 1
        return (f"{len(self)} samples ({self.dropped_audio_only} audio-only left out), "
                f"{sum(skipped.values())} manifest rows were skipped at caching {dict(skipped)}")


class ResumableSampler:
    """Global batches of sample indices; the order is reshuffled each epoch from (seed, epoch), so the position
    (epoch, batch index) is the whole state. Rank r takes ``batch[r·B:(r+1)·B]``; the last partial batch of an
    epoch is dropped."""

    def __init__(self, num_samples: int, global_batch: int, seed: int, shuffle: bool = True) -> None:
        if num_samples < global_batch:
            raise ValueError(f"the data has {num_samples} samples, fewer than one global batch of {global_batch} "
                             "(data.batch_size × number of processes)")
        self.n, self.batch, self.seed, self.shuffle = num_samples, global_batch, seed, shuffle
        self.epoch = self.index = 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
                self._order = torch.randperm(self.n, generator=g).tolist()
            else:
                self._order = list(range(self.n))
        return self._order

    def next(self) -> list[int]:
        if self.index >= self.n // self.batch:
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        order = self._epoch_order()
        out = order[self.index * self.batch:(self.index + 1) * self.batch]
        self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._order = int(state["epoch"]), int(state["index"]), None
