"""Latent cache: encode each clip of a manifest once (VAEs, text encoder), train from the cached latents.

Input — a JSONL manifest, one clip per row (relative paths are resolved against the manifest's folder):

    {"id": "000042", "caption": "...", "video_path": "clips/000042.mp4"}      # video + audio from one mp4
    {"id": "000043", "caption": "...", "npz_path": "clips/000043.npz"}        # lossless arrays (demo world)
    {"id": "a-17",   "caption": "...", "audio_path": "sfx/a-17.wav"}          # audio only (audio pretraining)

Accepted keys: ``video``/``video_path``, ``npz``/``npz_path``, ``audio``/``audio_path`` (a separate audio file that
replaces the video's own track), optional ``start_s`` (clip start inside the file) and ``keep`` (false = filtered
out upstream). Extra keys (measured values of the data pipeline) are ignored and kept out of the cache.

Output — a folder::

    meta.json                  format, clip geometry, model, VAE constants, text length
    text_null.safetensors      "empty" (T5 of "", used for text dropout) and "negative" (the default negative
                               prompt), each [n_tokens, D], trimmed; "white_cond" [20, T', h, w] (the condition of
                               a pure-white first frame: MOVA's text-only input, used for image dropout)
    shards/r{rank}-{k}.safetensors   per sample: "{id}/video" [16, T', h, w] (normalised posterior mode),
                               "{id}/cond" [20, T', h, w] (first-frame mask ‖ latent, as at inference),
                               "{id}/audio" [C_a, N_a] (DAC posterior mean), "{id}/text" [n_tokens, D]
    index-r{rank}.jsonl        one row per cached sample: id, shard, caption, has_video, n_text, source
    skipped-r{rank}.jsonl      one row per skipped manifest row: line, id, reason

Bad rows (missing fields or files, undecodable video, clips shorter than the target, no audio stream, audio
too short, non-finite latents) are skipped with a logged reason and counted in the summary; the run never stops
on one. Several processes (``torchrun --nproc_per_node N -m train cache``) split the rows and write their own
shards and index; :class:`LatentCache` reads every ``index-*.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mova.media import atomic_path
from train.latents import CACHE_FORMAT, CACHE_VERSION, META, TEXT_NULL, LatentCache, is_cache  # noqa: F401

logger = logging.getLogger(__name__)

AUDIO_SHORT_TOLERANCE = 0.05  # audio up to 5 % shorter than the clip is zero-padded (AAC priming/trim); more is bad


@dataclasses.dataclass(kw_only=True)
class CacheSpec:
    """Clip geometry the cache is built at, and storage choices.

    Args:
        num_frames, fps, height, width: every clip is cut to ``num_frames`` frames at ``fps`` (frames picked by
            time when the file's rate differs), centre-cropped and resized to height × width.
        max_sequence_length: T5 tokens (captions are truncated like at inference).
        shard_size: samples per shard file.
        batch_size: clips encoded together (one VAE call per batch: small clips on a GPU are launch-bound). A
            batch that fails is encoded again clip by clip, so one bad clip costs only itself.
        text_dtype: ``float32`` or ``bfloat16`` for stored text embeddings (the largest tensors at full size).
        audio_only: cache audio + text only (no video encode) — for audio pretraining.
    """

    num_frames: int
    fps: float
    height: int
    width: int
    max_sequence_length: int = 512
    shard_size: int = 64
    batch_size: int = 1
    text_dtype: str = "float32"
    audio_only: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames={self.num_frames!r} is invalid: expected 4k + 1")
        for name in ("height", "width"):
            if getattr(self, name) <= 0 or getattr(self, name) % 16:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected a positive multiple of 16")
        if not self.fps > 0:
            raise ValueError(f"fps={self.fps!r} is invalid: expected a positive number")
        if self.text_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"text_dtype={self.text_dtype!r} is invalid: expected 'float32' or 'bfloat16'")
        for name in ("shard_size", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected a positive integer")

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


class SkipRow(Exception):
    """A manifest row that cannot become a training sample. ``kind`` is the summary category ("missing file",
    "clip too short", ...); ``str(exc)`` is the logged reason ("kind: detail")."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


@dataclasses.dataclass
class CacheSummary:
    cached: int = 0
    skipped: int = 0
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        total = self.cached + self.skipped
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        return f"cached {self.cached} of {total} rows; skipped {self.skipped}" + (f" ({parts})" if parts else "")


# ----------------------------------------------------------------------------------------------------------------------
# Reading one row's media
# ----------------------------------------------------------------------------------------------------------------------


def _field(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def _resolve(path: Any, root: Path) -> Path:
    if not isinstance(path, str):
        raise SkipRow("invalid field", f"path {path!r} is not a string")
    p = Path(path)
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise SkipRow("missing file", str(p))
    return p


def pick_frames(video: np.ndarray, src_fps: float, spec: CacheSpec, start_s: float) -> np.ndarray:
    """``spec.num_frames`` frames at ``spec.fps`` from ``start_s``; SkipRow when the file is too short."""
    if abs(src_fps - spec.fps) <= 1e-3 * spec.fps:
        first = int(round(start_s * src_fps))
        index = np.arange(first, first + spec.num_frames)
    else:  # nearest frame in time
        index = np.round((start_s + np.arange(spec.num_frames) / spec.fps) * src_fps).astype(np.int64)
    if index[-1] >= len(video):
        have = len(video) / src_fps - start_s
        raise SkipRow("clip too short", f"{len(video)} frames at {src_fps:g} fps from {start_s:g} s "
                      f"({max(have, 0):.2f} s), need {spec.num_frames} frames at {spec.fps:g} fps "
                      f"({spec.duration_s:.2f} s)")
    return video[index]


def cut_audio(audio: np.ndarray, rate: int, spec: CacheSpec, start_s: float) -> np.ndarray:
    """The clip's ``int(rate·num_frames/fps)`` samples (docs/model.md#audio-latents); a small shortfall is zero-padded."""
    need = int(rate * spec.num_frames / spec.fps)
    first = int(round(start_s * rate))
    out = audio[first:first + need]
    if len(out) < need:
        if len(out) < (1 - AUDIO_SHORT_TOLERANCE) * need:
            raise SkipRow("audio too short", f"{len(audio) / rate:.2f} s from {start_s:g} s, need "
                          f"{spec.duration_s:.2f} s")
        out = np.pad(out, (0, need - len(out)))
    return out.astype(np.float32, copy=False)


def load_row_media(row: dict[str, Any], root: Path, spec: CacheSpec, sample_rate: int
                   ) -> tuple[np.ndarray | None, np.ndarray]:
    """(frames uint8 [T, H0, W0, 3] or None, audio float32 [N] at ``sample_rate``) of one manifest row."""
    from mova import media

    start_s = row.get("start_s", 0.0) or 0.0
    if not isinstance(start_s, (int, float)) or start_s < 0:
        raise SkipRow("invalid field", f"start_s={start_s!r}")
    video_path = _field(row, "video_path", "video")
    npz_path = _field(row, "npz_path", "npz")
    audio_path = _field(row, "audio_path", "audio")
    if video_path is None and npz_path is None and audio_path is None:
        raise SkipRow("missing field", "one of video_path/video, npz_path/npz, audio_path/audio")
    need_video = not spec.audio_only
    frames = audio = None
    rate = None
    if npz_path is not None:
        path = _resolve(npz_path, root)
        try:
            with np.load(path) as data:
                frames = data["video"] if (need_video and "video" in data) else None
                src_fps = float(data["fps"]) if "fps" in data else spec.fps
                if "audio" in data:
                    audio, rate = data["audio"].astype(np.float32), int(data["sample_rate"])
        except (OSError, ValueError, KeyError) as exc:
            raise SkipRow("corrupt npz", f"{str(path)!r}: {exc}") from None
        if need_video and frames is None:
            raise SkipRow("no video stream", f"npz {str(path)!r} has no 'video' array")
    elif video_path is not None:
        path = _resolve(video_path, root)
        try:
            decoded = media.read_mp4(path)
        except ValueError as exc:
            raise SkipRow("corrupt video", f"{str(path)!r}: {exc}") from None
        if need_video:
            if decoded.video is None or len(decoded.video) == 0:
                raise SkipRow("no video stream", str(path))
            frames, src_fps = decoded.video, decoded.fps or spec.fps
        if decoded.audio is not None and len(decoded.audio):
            audio, rate = decoded.audio, int(decoded.sample_rate)
    elif need_video:
        raise SkipRow("missing field", "video_path or npz_path (audio-only rows need an audio_only cache)")
    if audio_path is not None:
        path = _resolve(audio_path, root)
        try:
            audio, rate = media.read_audio(path, sample_rate=sample_rate)
        except ValueError as exc:
            raise SkipRow("corrupt audio", f"{str(path)!r}: {exc}") from None
    if audio is None:
        raise SkipRow("no audio stream", str(_field(row, "video_path", "video", "npz_path", "npz")))
    if frames is not None:
        frames = pick_frames(frames, float(src_fps), spec, float(start_s))
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise SkipRow("invalid video", f"frames {frames.shape} {frames.dtype}, expected uint8 [T, H, W, 3]")
    audio = cut_audio(media.resample_audio(audio, rate, sample_rate), sample_rate, spec, float(start_s))
    return frames, audio


# ----------------------------------------------------------------------------------------------------------------------
# Encoding with the pipeline's own pieces
# ----------------------------------------------------------------------------------------------------------------------


class Encoder:
    """The frozen encoders of a checkpoint, through the pipeline's own methods, so preprocessing and normalisation
    are exactly those of inference."""

    def __init__(self, model: str | os.PathLike, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        from mova.pipeline import MOVAPipeline

        self.pipe = MOVAPipeline.from_pretrained(model, device=device, torch_dtype=dtype, encoders_only=True)
        self.sample_rate = self.pipe.audio_vae.sample_rate

    @torch.no_grad()
    def text(self, captions: list[str], max_sequence_length: int) -> list[torch.Tensor]:
        """Each caption's T5 embeddings [n_tokens, D] (float32, CPU), trimmed to its token count: the inference
        functions behind ``MOVAPipeline.encode_prompt``, tokenising once for the embeddings and their lengths."""
        from mova.pipeline import encode_tokens, tokenize_prompts

        pipe = self.pipe
        ids, mask = tokenize_prompts(pipe.tokenizer, captions, max_sequence_length)
        embeds = encode_tokens(pipe.text_encoder, ids.to(pipe.device), mask.to(pipe.device)).to(pipe.dtype)
        embeds = embeds.float().cpu()
        return [embeds[i, :n].clone() for i, n in enumerate(mask.sum(dim=1).tolist())]

    @torch.no_grad()
    def video(self, clips: list[np.ndarray], spec: CacheSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """clips, each uint8 [T, H0, W0, 3] → (latents [B, 16, T', h, w], conditions y [B, 20, T', h, w]), float32
        CPU, in one VAE call each."""
        from mova.pipeline import center_crop_resize

        pipe = self.pipe
        resized = np.stack([np.stack([center_crop_resize(f, spec.height, spec.width) for f in frames])
                            for frames in clips])  # [B, T, H, W, 3]
        pixels = torch.from_numpy(resized).permute(0, 4, 1, 2, 3).float() / 255.0 * 2.0 - 1.0  # [B, 3, T, H, W]
        latent = pipe.encode_video(pixels)  # [B, 16, T', h, w]
        cond = pipe.prepare_conditions([r[0] for r in resized], spec.height, spec.width, spec.num_frames).float()
        return latent.cpu(), cond.cpu()

    @torch.no_grad()
    def white_condition(self, spec: CacheSpec) -> torch.Tensor:
        """The condition y [20, T', h, w] of a pure-white first frame (text-only generation, docs/model.md#overview)."""
        white = np.full((spec.height, spec.width, 3), 255, dtype=np.uint8)
        return self.pipe.prepare_condition(white, spec.height, spec.width, spec.num_frames).float()[0].cpu()

    @torch.no_grad()
    def audio(self, clips: list[np.ndarray]) -> torch.Tensor:
        """float32 [N] clips at the VAE rate (equal lengths) → DAC posterior means [B, C_a, N_a] (float32, CPU)."""
        vae = self.pipe.audio_vae
        device = next(vae.parameters()).device
        wave = torch.from_numpy(np.stack([np.ascontiguousarray(a) for a in clips]))[:, None].to(device)
        return vae.encode(wave).float().cpu()


# ----------------------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------------------


def read_manifest_rows(manifest: str | os.PathLike) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, row or None, parse error or None) for every non-blank line."""
    rows = []
    with open(manifest, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((n, None, exc.msg))
                continue
            rows.append((n, row, None) if isinstance(row, dict) else (n, None, "row is not a JSON object"))
    return rows


def _meta(spec: CacheSpec, encoder: Encoder, model: str | os.PathLike) -> dict[str, Any]:
    pipe = encoder.pipe
    return {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "model": str(model), **dataclasses.asdict(spec),
        "sample_rate": encoder.sample_rate, "hop": pipe.audio_vae.hop,
        "audio_latent_dim": pipe.audio_vae.config.latent_dim, "text_dim": int(pipe.text_encoder.config.d_model),
        "latents_mean": pipe.latents_mean.tolist(), "latents_std": pipe.latents_std.tolist(),
    }


class _ShardWriter:
    def __init__(self, folder: Path, rank: int, shard_size: int, start: int) -> None:
        self.folder, self.rank, self.shard_size, self.k = folder, rank, shard_size, start
        self.tensors: dict[str, torch.Tensor] = {}
        self.rows: list[dict[str, Any]] = []
        (folder / "shards").mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        name = f"shards/r{self.rank:03d}-{self.k:05d}.safetensors"
        self.tensors.update({f"{row['id']}/{k}": v.contiguous() for k, v in tensors.items()})
        self.rows.append({**row, "shard": name})
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.folder / self.rows[0]["shard"]
        with atomic_path(path) as tmp:
            save_file(self.tensors, tmp, metadata={"format": "pt"})
        with open(self.folder / f"index-r{self.rank:03d}.jsonl", "a", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(json.dumps(row) + "\n")
        self.tensors, self.rows, self.k = {}, [], self.k + 1


def build_cache(manifest: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, spec: CacheSpec, *,
                device: str | torch.device | None = None, dtype: torch.dtype | None = None, rank: int = 0,
                world: int = 1, progress: bool = True, barrier: Callable[[], None] | None = None,
                allow_empty: bool = False) -> CacheSummary:
    """Encode the rows ``rank::world`` of ``manifest`` into ``out`` (see the module docstring for the layout).

    Several processes call it together with a ``barrier`` (rank 0 writes ``meta.json`` first). Resumable: rows
    whose id is already in this rank's index are not encoded again (the meta must match). Returns this rank's
    summary; raises ValueError when not one row could be cached (unless ``allow_empty``).
    """
    from tqdm.auto import tqdm

    manifest, out = Path(manifest), Path(out)
    if not manifest.is_file():
        raise ValueError(f"manifest {str(manifest)!r} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(model, device=device, dtype=dtype)
    meta = _meta(spec, encoder, model)
    meta_path = out / META
    if rank == 0 and not meta_path.is_file():
        from mova.pipeline import DEFAULT_NEGATIVE_PROMPT

        null = encoder.text(["", DEFAULT_NEGATIVE_PROMPT], spec.max_sequence_length)
        tensors = {"empty": null[0], "negative": null[1]}
        if not spec.audio_only:
            tensors["white_cond"] = encoder.white_condition(spec)
        save_file(tensors, out / TEXT_NULL, metadata={"format": "pt"})
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
    elif meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = sorted(k for k in meta if k not in ("model", "shard_size", "batch_size") and old.get(k) != meta[k])
        if diff:
            raise ValueError(f"{out} already holds a cache built with different settings ({diff}); "
                             "use another --out folder")
    if barrier is not None:
        barrier()

    index_path = out / f"index-r{rank:03d}.jsonl"
    done = {json.loads(line)["id"] for line in index_path.open()} if index_path.is_file() else set()
    start = len(list((out / "shards").glob(f"r{rank:03d}-*.safetensors"))) if done else 0
    writer = _ShardWriter(out, rank, spec.shard_size, start)
    summary = CacheSummary(cached=len(done))
    skipped_log = open(out / f"skipped-r{rank:03d}.jsonl", "w", encoding="utf-8")  # every non-cached row is retried
    text_dtype = getattr(torch, spec.text_dtype)
    rows = read_manifest_rows(manifest)[rank::world]
    seen: set[str] = set(done)

    def skip(line: int, row_id: Any, exc: SkipRow) -> None:
        summary.skipped += 1
        summary.reasons[exc.kind] = summary.reasons.get(exc.kind, 0) + 1
        logger.warning("manifest line %d (id %s) skipped: %s", line, row_id, exc)
        skipped_log.write(json.dumps({"line": line, "id": row_id, "kind": exc.kind, "reason": str(exc)}) + "\n")

    pending: list[_Prepared] = []

    def encode_pending() -> None:
        for prepared, result in zip(pending, _encode_batch(pending, spec, encoder, text_dtype)):
            if isinstance(result, SkipRow):
                skip(prepared.record["line"], prepared.record["id"], result)
            else:
                writer.add(prepared.record | {"n_text": int(result["text"].shape[0])}, result)
                summary.cached += 1
        pending.clear()

    try:
        for line, row, error in tqdm(rows, desc="caching", disable=not progress or rank != 0):
            if row is None:
                skip(line, None, SkipRow("invalid JSON", error or ""))
                continue
            row_id = row.get("id")
            if row_id in done:
                continue
            try:
                pending.append(_prepare_row(row, line, manifest.parent, spec, encoder.sample_rate, seen))
            except SkipRow as exc:
                skip(line, row_id, exc)
                continue
            except Exception as exc:  # a crash of one row must not end a long caching job
                logger.debug("row %s failed", row_id, exc_info=True)
                skip(line, row_id, SkipRow("error", f"{type(exc).__name__}: {exc}"))
                continue
            seen.add(str(row_id))
            if len(pending) >= spec.batch_size:
                encode_pending()
        encode_pending()
        writer.flush()
    finally:
        skipped_log.close()
    logger.info("latent cache %s (rank %d): %s", out, rank, summary.describe())
    if summary.cached == 0 and not allow_empty:
        raise ValueError(f"no row of {manifest} could be cached ({summary.describe()}); see {skipped_log.name}")
    return summary


@dataclasses.dataclass
class _Prepared:
    """A manifest row that passed its checks, with its media loaded, waiting for its batch to be encoded."""

    record: dict[str, Any]
    caption: str
    frames: np.ndarray | None
    audio: np.ndarray


def _prepare_row(row: dict[str, Any], line: int, root: Path, spec: CacheSpec, sample_rate: int,
                 seen: set[str]) -> _Prepared:
    row_id = row.get("id")
    if row_id is None or row_id == "":
        raise SkipRow("missing field", "id")
    row_id = str(row_id)
    if "/" in row_id:
        raise SkipRow("invalid field", f"id {row_id!r} contains '/'")
    if row_id in seen:
        raise SkipRow("duplicate id", row_id)
    caption = row.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise SkipRow("missing field", "caption")
    if row.get("keep") is False:
        raise SkipRow("filtered out", "keep=false")
    frames, audio = load_row_media(row, root, spec, sample_rate)
    source = _field(row, "video_path", "video", "npz_path", "npz", "audio_path", "audio")
    record = {"id": row_id, "caption": caption, "has_video": frames is not None, "line": line, "source": str(source)}
    return _Prepared(record, caption, frames, audio)


def _encode_batch(batch: list[_Prepared], spec: CacheSpec, encoder: Encoder,
                  text_dtype: torch.dtype) -> list[dict[str, torch.Tensor] | SkipRow]:
    """Each prepared row's tensors ({"audio", "video", "cond", "text"}), or the SkipRow that excludes it. The
    batch is encoded together; if that fails, each row alone (the failing row is skipped with the reason)."""
    if not batch:
        return []
    try:
        audio = encoder.audio([p.audio for p in batch])
        video = cond = None
        with_video = [i for i, p in enumerate(batch) if p.frames is not None]
        if with_video:
            video, cond = encoder.video([batch[i].frames for i in with_video], spec)
        texts = encoder.text([p.caption for p in batch], spec.max_sequence_length)
    except Exception as exc:  # noqa: BLE001 - retried row by row below, where the culprit is named
        if len(batch) == 1:
            return [SkipRow("error", f"{type(exc).__name__}: {exc}")]
        logger.debug("batch of %d failed (%s); encoding its rows one by one", len(batch), exc)
        return [r for p in batch for r in _encode_batch([p], spec, encoder, text_dtype)]
    results: list[dict[str, torch.Tensor] | SkipRow] = []
    slot = {i: k for k, i in enumerate(with_video)}
    for i, p in enumerate(batch):
        tensors = {"audio": audio[i].clone()}
        if i in slot:
            tensors["video"], tensors["cond"] = video[slot[i]].clone(), cond[slot[i]].clone()
        text = texts[i]
        bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
        if bad or not torch.isfinite(text).all():
            results.append(SkipRow("non-finite latents", str(bad or ["text"])))
            continue
        tensors["text"] = text.to(text_dtype)
        results.append(tensors)
    return results
