"""Training data of the autoencoders: demo-world clips generated (or read) once into a pool on the training device,
random crops drawn from it each step."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from train.demo_world import WorldConfig, clip_seed, generate_clip
from train.vae.configuration import DataSpec, VAETrainConfig

def _make_clip(job: tuple[str, str, int, dict]) -> np.ndarray:
    """One clip's video (uint8 [T, H, W, 3]) or audio (float32 [N]); top-level so worker processes can run it."""
    kind, scene, seed, world = job
    clip = generate_clip(scene, seed, WorldConfig.from_dict(world))
    return clip.video if kind == "video" else clip.audio


def generate_clips(cfg: VAETrainConfig, n: int, split: str = "train", offset: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` clips of ``split`` stacked ([n, T, H, W, 3] uint8 or [n, N] float32) and their scene names."""
    scenes = [cfg.data.scenes[(offset + i) % len(cfg.data.scenes)] for i in range(n)]
    jobs = [(cfg.kind, scenes[i], clip_seed(cfg.data.seed, offset + i, split), cfg.world) for i in range(n)]
    workers = cfg.data.workers or min(16, os.cpu_count() or 1)
    if workers <= 1 or n < 16:
        arrays = list(map(_make_clip, jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            arrays = list(pool.map(_make_clip, jobs, chunksize=max(1, n // (4 * workers))))
    return np.stack(arrays), scenes


def read_clips(cfg: VAETrainConfig, n: int) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` clips of a ``generate_dataset`` folder (``npz_path`` preferred, else ``video_path``)."""
    from train.demo_world import read_manifest, read_npz

    path = Path(cfg.data.path)
    rows = read_manifest(path / "manifest.jsonl" if path.is_dir() else path)[:n]
    world = cfg.world_config()
    arrays = []
    for row in rows:
        if "npz_path" in row:
            video, audio, _, sample_rate = read_npz(row["npz_path"])
        else:
            from mova.media import read_mp4

            media = read_mp4(row["video_path"])
            video, audio, sample_rate = media.video, media.audio, media.sample_rate
        if cfg.kind == "audio" and sample_rate != world.sample_rate:
            raise ValueError(f"data.path: clip {row.get('id')} has sample_rate={sample_rate}, expected "
                             f"world.sample_rate={world.sample_rate}")
        arrays.append(video[: world.num_frames] if cfg.kind == "video" else audio[: world.num_samples])
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"data.path={cfg.data.path!r}: clips differ in shape {sorted(shapes)}; expected one shape")
    return np.stack(arrays), [row.get("scene", "?") for row in rows]


class ClipPool:
    """Clips held on the device; :meth:`sample` cuts a random training batch with one advanced-indexing gather.

    video: uint8 [N, T, H, W, 3] → float [B, 3, crop_frames, crop_size, crop_size] in [-1, 1]
    audio: float32 [N, L]        → float [B, 1, crop_samples]
    """

    def __init__(self, clips: np.ndarray, kind: str, data: DataSpec, device: torch.device):
        self.kind, self.data, self.device = kind, data, device
        self.clips = torch.from_numpy(np.ascontiguousarray(clips)).to(device)

    def __len__(self) -> int:
        return self.clips.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        def randint(high: int, size: int = batch) -> torch.Tensor:
            return torch.randint(0, high, (size,), generator=generator, device=self.device)

        i = randint(len(self))
        if self.kind == "audio":
            n = self.data.crop_samples
            start = randint(self.clips.shape[1] - n + 1)
            idx = start[:, None] + torch.arange(n, device=self.device)
            return self.clips[i[:, None], idx][:, None, :]
        _, t, h, w, _ = self.clips.shape
        f, s = self.data.crop_frames, self.data.crop_size
        ar_f, ar_s = torch.arange(f, device=self.device), torch.arange(s, device=self.device)
        ts = randint(t - f + 1)[:, None] + ar_f                          # [B, F]
        ys = randint(h - s + 1)[:, None] + ar_s                          # [B, S]
        xs = randint(w - s + 1)[:, None] + ar_s                          # [B, S]
        if self.data.flip:
            flip = randint(2).bool()[:, None]
            xs = torch.where(flip, xs.flip(1), xs)
        v = self.clips[i[:, None, None, None], ts[:, :, None, None], ys[:, None, :, None], xs[:, None, None, :]]
        return video_to_model(v)                                         # [B, 3, F, S, S]


def video_to_model(video: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] → float32 [B, 3, T, H, W] in [-1, 1]."""
    return video.permute(0, 4, 1, 2, 3).contiguous().float() / 127.5 - 1.0


def video_from_model(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] → uint8 [B, T, H, W, 3] (rounded, as the pipeline's postprocess)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)

