"""MOVAPipeline: image + text (IT2VA) or text alone (T2VA) → video with synchronised audio.

``__call__`` runs in numbered stages, each a method (spec §9.1, §10–§16):

1. ``check_inputs``      validate and repair sizes (errors name the field and the allowed values)
2. ``encode_prompt``     UMT5: cleaned prompt and negative prompt → [B, 512, 4096], zero-padded
3. ``prepare_condition`` first frame (a white frame for T2VA) → VAE latent (posterior mode), normalised,
                         behind a 4-channel first-frame mask → y [1, 20, T', H/8, W/8]
4. ``prepare_latents``   seeded noise: video [1, 16, T', H/8, W/8] first, then audio [1, C_a, N_a]
5. ``denoise``           paired (video t, audio t) schedule; per step the expert by the boundary and the
                         guidance branches in one batched forward; Euler update in fp32
6. ``decode``            Wan VAE → uint8 frames; DAC → waveform trimmed to the video length; LUFS
                         normalisation with a true-peak ceiling
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mova import media
from mova import validation as check
from mova.guidance import Guidance, guided_velocity
from mova.loading import load_components
from mova.models import DualTowerDenoiser
from mova.validation import clean_prompt

logger = logging.getLogger(__name__)

# The inference scripts' default negative prompt (spec §10), character for character.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指"
)
MAX_SEQUENCE_LENGTH = 512
OFFLOAD_MODES = ("none", "model", "sequential")
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class GenerationResult:
    """A generated clip: ``video`` uint8 [T, H, W, 3], ``audio`` float32 [N] at ``sample_rate``."""

    video: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float
    seed: int
    nfe: int = 0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)  # for the user, e.g. prompt text the model cannot read

    @property
    def duration(self) -> float:
        return self.video.shape[0] / self.fps

    def save(self, path: str | os.PathLike) -> Path:
        """Write an mp4 (H.264 yuv420p + AAC, faststart) that browsers play."""
        return media.write_mp4(path, self.video, self.fps, self.audio, self.sample_rate)

    def save_wav(self, path: str | os.PathLike) -> Path:
        return media.write_wav(path, self.audio, self.sample_rate)


def tokenize_prompts(tokenizer, prompts: list[str], max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts → (input ids, attention mask), each int64 [B, max_sequence_length]: cleaned, padded and truncated
    the way every MOVA text encoding is (inference, the latent cache, training with a trained text encoder)."""
    tok = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=max_sequence_length,
                    truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    return tok.input_ids, tok.attention_mask


def encode_tokens(text_encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(ids, mask) [B, L] → text embeddings [B, L, D]: the UMT5 encoder run with the mask, rows past each prompt's
    length set to zero (no mask reaches the DiTs, spec §10). Differentiable (the demo recipe trains a text
    encoder through it); callers that only infer wrap it in ``torch.no_grad``."""
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < mask.sum(dim=1, keepdim=True)
    return hidden * keep[..., None].to(hidden.dtype)


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (bicubic) to width×height (spec §11)."""
    from PIL import Image

    h_img, w_img = image.shape[:2]
    if h_img / w_img < height / width:  # too wide: keep the full height
        keep = int((h_img / height) * width)
        left = (w_img - keep) // 2
        image = image[:, left:left + keep]
    else:  # too tall: keep the full width
        keep = int((w_img / width) * height)
        top = (h_img - keep) // 2
        image = image[top:top + keep]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


class MOVAPipeline:
    """Loaded components plus the generation loop. Build with :meth:`from_pretrained`."""

    model_cpu_offload_seq = ("text_encoder", "video_vae", "video_dit", "video_dit_2", "audio_dit",
                             "dual_tower_bridge", "audio_vae")
    _denoiser_parts = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")

    def __init__(self, components: dict[str, Any], device: torch.device, dtype: torch.dtype, offload: str = "none",
                 name: str = "") -> None:
        self.components = components
        self.model_index = components.get("model_index", {})
        self.device, self.dtype, self.offload, self.name = device, dtype, offload, name
        self.text_encoder = components["text_encoder"]
        self.tokenizer = components["tokenizer"]
        self.video_vae = components["video_vae"]
        self.audio_vae = components["audio_vae"]
        self.scheduler = components["scheduler"]
        self.boundary_ratio = float(self.model_index.get("boundary_ratio", 0.9))
        self.denoiser = DualTowerDenoiser(
            components["video_dit"], components["audio_dit"], components["dual_tower_bridge"],
            components.get("video_dit_2"), self.boundary_ratio, self.scheduler.config.num_train_timesteps,
        ).eval()
        vae_cfg = self.video_vae.config
        self.vae_scale_spatial = int(vae_cfg.get("scale_factor_spatial", 8))
        self.vae_scale_temporal = int(vae_cfg.get("scale_factor_temporal", 4))
        self.latents_mean = torch.tensor(vae_cfg["latents_mean"], dtype=torch.float32)
        self.latents_std = torch.tensor(vae_cfg["latents_std"], dtype=torch.float32)
        self.patch = tuple(components["video_dit"].config.patch_size)
        self.interrupt = False
        self.parallel = None
        self._setup_offload()

    # ----------------------------------------------------------------------------------------------------
    # Loading and placement
    # ----------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike = "demo", device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, offload: str = "none") -> "MOVAPipeline":
        """Load a checkpoint folder (official layout) or ``"demo"`` (the shipped demo checkpoint).

        Args:
            device: default CUDA when available, else CPU.
            dtype: default bfloat16 on CUDA, float32 on CPU (bf16 matmuls are very slow on CPUs).
            offload: ``none`` (everything on the device), ``model`` (one component on the device at a time),
                ``sequential`` (DiT blocks streamed from pinned host memory with prefetch; for small GPUs).
        """
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload={offload!r} is invalid: expected one of {list(OFFLOAD_MODES)}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(dtype, str):
            dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16":
                     torch.float16, "fp32": torch.float32, "float32": torch.float32}.get(dtype)
            if dtype is None:
                raise ValueError("dtype must be one of bf16, fp16, fp32")
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        name = str(path_or_name)
        folder = DEMO_DIR if name == "demo" else Path(path_or_name)
        if name == "demo" and not (folder / "model_index.json").is_file():
            raise ValueError(f"the demo checkpoint is not present at {folder}; pass a checkpoint folder instead")
        load_device = "cpu" if offload != "none" else device
        components = load_components(folder, device=load_device, dtype=dtype)
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        return cls(components, device, dtype, offload, name=name)

    def enable_parallel(self, state) -> None:
        """Run the denoiser with sequence and/or CFG parallelism (a ``mova.parallel.ParallelState`` from
        ``init_parallel``; every rank runs the same call with the same seed and gets the same result)."""
        from mova.parallel import parallelize_denoiser

        if self.offload != "none":
            raise ValueError("parallel inference needs offload='none' (each GPU holds its copy of the model)")
        parallelize_denoiser(self.denoiser, state)
        self.parallel = state

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0):
        """Load a LoRA adapter (``mova.lora`` format: ``adapter_model.safetensors`` + ``adapter_config.json``)
        into the denoiser at ``scale``; returns a handle with ``set_scale``, ``merge``, ``unmerge``, ``unload``."""
        from mova.lora import load_lora

        return load_lora(self, path, scale)

    def _setup_offload(self) -> None:
        """``sequential``: the denoiser's blocks stream from pinned host memory (mova.offload.BlockStreamer);
        the text encoder and VAEs move to the GPU only while they run, as with ``model``."""
        self.streamer = None
        if self.offload == "sequential" and self.device.type == "cuda":
            from mova.offload import BlockStreamer

            parts = [self.components[p] for p in self._denoiser_parts if self.components.get(p) is not None]
            self.streamer = BlockStreamer(parts, self.device)

    def _on_device(self, *names: str) -> None:
        """With offloading, move the named components to the device and the others to the CPU (the denoiser
        parts under ``sequential`` are left to the block streamer)."""
        if self.offload == "none" or self.device.type == "cpu":
            return
        for part in self.model_cpu_offload_seq:
            if self.offload == "sequential" and part in self._denoiser_parts:
                continue
            module = self.components.get(part)
            if isinstance(module, torch.nn.Module):
                module.to(self.device if part in names else "cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _release(self, name: str) -> None:
        """Drop a component for the rest of this call when offloading (the high-noise expert after the boundary)."""
        module = self.components.get(name)
        if self.offload == "model" and isinstance(module, torch.nn.Module) and self.device.type == "cuda":
            module.to("cpu")
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------------------------------------------
    # Defaults
    # ----------------------------------------------------------------------------------------------------

    @property
    def audio_sample_rate(self) -> int:
        return self.audio_vae.sample_rate

    def default_size(self) -> tuple[int, int]:
        index = self.model_index
        if "default_height" in index and "default_width" in index:
            return int(index["default_height"]), int(index["default_width"])
        return (720, 1280) if "720" in str(index.get("_name_or_path", "")) else (352, 640)

    def default_num_frames_fps(self) -> tuple[int, float]:
        return int(self.model_index.get("default_num_frames", 193)), float(self.model_index.get("default_fps", 24.0))

    def default_guidance(self) -> Guidance:
        """Text CFG at the checkpoint's ``default_text_scale`` (model_index.json; our demo checkpoint: 3, chosen on
        tuning prompts), else MOVA's released s_T = 5."""
        return Guidance(text_scale=float(self.model_index.get("default_text_scale", Guidance().text_scale)))

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens the prompt embeddings are zero-padded to: 512 as MOVA trained, or the checkpoint's own
        ``max_sequence_length`` (model_index.json; our demo checkpoint trains and samples with 64)."""
        return int(self.model_index.get("max_sequence_length", MAX_SEQUENCE_LENGTH))

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_spatial * max(self.patch[1:])

    # ----------------------------------------------------------------------------------------------------
    # 1. Inputs
    # ----------------------------------------------------------------------------------------------------

    def check_inputs(self, prompt: Any, height: int, width: int, num_frames: int, fps: float, steps: int,
                     guidance: Guidance, seed: int | None, loudness_lufs: float | None,
                     bridge_strength: float = 1.0) -> None:
        """Refuse what this model cannot or should not run (``ValueError`` naming the field and what is allowed),
        with the limits of :mod:`mova.validation` that the app's requests obey too."""
        check.prompt("prompt", prompt)
        m = self.size_multiple
        for field, value in (("height", height), ("width", width)):
            check.integral(field, value, m, check.MAX_PIXELS_PER_FRAME // m, f" (a multiple of {m})")
            if value % m:
                raise ValueError(f"{field}={value!r} is invalid: expected a positive multiple of {m}")
        if height * width > check.MAX_PIXELS_PER_FRAME:
            raise ValueError(f"height×width={height}×{width} is too large: at most {check.MAX_PIXELS_PER_FRAME} "
                             "pixels per frame (720×1280 is MOVA's largest trained size)")
        st = self.vae_scale_temporal
        check.integral("num_frames", num_frames, 1, check.MAX_FRAMES, f" of the form {st}k+1 (e.g. 97, 121, 193)")
        if (num_frames - 1) % st:
            raise ValueError(f"num_frames={num_frames!r} is invalid: expected {st}k+1 (e.g. 97, 121, 193)")
        check.real("fps", fps, check.MIN_FPS, check.MAX_FPS)
        check.clip_duration(num_frames, fps)
        check.integral("num_inference_steps", steps, 1, check.MAX_STEPS)
        if not isinstance(guidance, Guidance):
            raise ValueError(f"guidance must be a mova.Guidance, got {type(guidance).__name__}")
        if seed is not None:
            check.integral("seed", seed, 0, check.MAX_SEED, " or None for random")
        if loudness_lufs is not None:
            check.real("loudness_lufs", loudness_lufs, *check.LOUDNESS_RANGE)
        check.real("bridge_strength", bridge_strength, 0.0, 1e3)

    # ----------------------------------------------------------------------------------------------------
    # 2. Text
    # ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], max_sequence_length: int | None = None) -> torch.Tensor:
        """Prompts → [B, max_sequence_length, D]: UMT5 run with the attention mask, rows past each prompt's
        length set to zero (no mask reaches the DiTs, spec §10). Default length: ``self.max_sequence_length``."""
        max_sequence_length = self.max_sequence_length if max_sequence_length is None else max_sequence_length
        self._on_device("text_encoder")
        ids, mask = tokenize_prompts(self.tokenizer, prompts, max_sequence_length)
        device = next(self.text_encoder.parameters()).device
        return encode_tokens(self.text_encoder, ids.to(device), mask.to(device)).to(self.device, self.dtype)

    def prompt_warnings(self, prompt: str) -> list[str]:
        """What the tokenizer cannot represent in ``prompt`` (characters that become ``<unk>``), as sentences for
        the user: such text reaches the model as one unknown token, so prompts differing only there give the same
        clip."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None:
            return []
        text = clean_prompt(prompt)
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            spans = [text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
        except (NotImplementedError, TypeError, ValueError):  # a tokenizer without offsets: count only
            spans = ["?"] * self.tokenizer(text, add_special_tokens=False)["input_ids"].count(unk)
        unknown = check.visible_text("".join(dict.fromkeys(spans)))
        if not unknown:
            return []
        known = check.visible_text(text)
        for span in spans:
            known = known.replace(check.visible_text(span), "", 1)
        shown = unknown if len(unknown) <= 24 else unknown[:24] + "…"
        if not known:
            return [f"the model's tokenizer cannot represent this prompt (every character became <unk>: {shown!r}); "
                    "the clip does not follow it — write the prompt in a language the model knows"]
        return [f"the model's tokenizer cannot represent part of the prompt ({shown!r} became <unk>); the model "
                "ignores those words"]

    # ----------------------------------------------------------------------------------------------------
    # 3. First-frame condition
    # ----------------------------------------------------------------------------------------------------

    def _vae_device(self) -> torch.device:
        return next(self.video_vae.parameters()).device

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, T, H, W] in [-1, 1] → normalised video latents [B, 16, T', H/8, W/8] (posterior mode,
        float32, on the VAE's device): the space the DiT denoises in (spec §11)."""
        self._on_device("video_vae")
        vae_dtype = next(self.video_vae.parameters()).dtype
        latent = self.video_vae.encode(pixels.to(self._vae_device(), vae_dtype)).latent_dist.mode().float()
        return (latent - self.latents_mean.view(1, -1, 1, 1, 1).to(latent.device)) * \
            (1.0 / self.latents_std).view(1, -1, 1, 1, 1).to(latent.device)

    @torch.no_grad()
    def prepare_condition(self, image: np.ndarray, height: int, width: int, num_frames: int) -> torch.Tensor:
        """image uint8 [H0, W0, 3] → y [1, 20, T', H/8, W/8] = [mask(4) ‖ normalised first-frame latent(16)]."""
        return self.prepare_conditions([image], height, width, num_frames)

    @torch.no_grad()
    def prepare_conditions(self, images: list[np.ndarray], height: int, width: int, num_frames: int) -> torch.Tensor:
        """First frames → their conditions y [B, 20, T', H/8, W/8] in one VAE call (the latent cache encodes
        clips in batches with it)."""
        clip = torch.zeros(len(images), 3, num_frames, height, width)
        for i, image in enumerate(images):
            frame = center_crop_resize(image, height, width)
            clip[i, :, 0] = torch.from_numpy(np.array(frame)).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0  # [-1, 1]
        latent = self.encode_video(clip)
        t_lat = latent.shape[2]
        mask = torch.zeros(len(images), self.vae_scale_temporal, t_lat, *latent.shape[3:], device=latent.device)
        mask[:, :, 0] = 1.0  # latent frame 0 covers the given first frame (its 4 mask channels all ones)
        return torch.cat([mask, latent], dim=1).to(self.device)

    # ----------------------------------------------------------------------------------------------------
    # 4. Noise
    # ----------------------------------------------------------------------------------------------------

    def latent_shapes(self, height: int, width: int, num_frames: int, fps: float) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        t_lat = (num_frames - 1) // self.vae_scale_temporal + 1
        video = (1, int(self.video_vae.config.z_dim), t_lat, height // self.vae_scale_spatial,
                 width // self.vae_scale_spatial)
        n_samples = int(self.audio_sample_rate * num_frames / fps)
        audio = (1, self.audio_vae.config.latent_dim, self.audio_vae.num_latent_frames(n_samples))
        return video, audio, n_samples

    def prepare_latents(self, video_shape, audio_shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Video noise first, then audio noise, from one seeded generator (float32)."""
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        generator = torch.Generator(gen_device).manual_seed(seed)
        video = torch.randn(video_shape, generator=generator, device=gen_device, dtype=torch.float32)
        audio = torch.randn(audio_shape, generator=generator, device=gen_device, dtype=torch.float32)
        return video.to(self.device), audio.to(self.device)

    # ----------------------------------------------------------------------------------------------------
    # 5. Denoising
    # ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def denoise(self, z_video, z_audio, condition, text, negative, fps: float, steps: int, guidance: Guidance,
                video_shift: float | None, audio_shift: float | None, progress: ProgressFn | None,
                sequential_cfg: bool = False, bridge_strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        schedule = self.scheduler.make_schedule(steps, video_shift=video_shift, audio_shift=audio_shift)
        single_expert = self.denoiser.video_dit_2 is None
        current = None
        for i in range(steps):
            if self.interrupt:
                raise InterruptedError("generation interrupted")
            expert = 0 if single_expert else schedule.expert_for_step(i, self.boundary_ratio)
            if expert != current:
                if current == 0:
                    self._release("video_dit")  # irreversible switch: the high-noise expert is done
                self._on_device("video_dit" if expert == 0 else "video_dit_2", "audio_dit", "dual_tower_bridge")
                current = expert
            t_video, t_audio = (float(t) for t in schedule.timesteps[i])
            model_in = torch.cat([z_video, condition], dim=1).to(self.dtype)
            v_video, v_audio = guided_velocity(
                self.denoiser, guidance, model_in, z_audio.to(self.dtype), text, negative, t_video, t_audio, fps,
                expert=expert, sequential=sequential_cfg, parallel=self.parallel, bridge_strength=bridge_strength,
            )
            z_video = schedule.step(v_video, i, z_video, "video")
            z_audio = schedule.step(v_audio, i, z_audio, "audio")
            if progress is not None:
                progress("denoise", i + 1, steps)
        return z_video, z_audio

    # ----------------------------------------------------------------------------------------------------
    # 6. Decoding
    # ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode_video(self, z_video: torch.Tensor) -> np.ndarray:
        """[1, 16, T', h, w] → uint8 [T, H, W, 3]."""
        self._on_device("video_vae")
        device = self._vae_device()
        z = z_video.float().to(device) * self.latents_std.view(1, -1, 1, 1, 1).to(device) + \
            self.latents_mean.view(1, -1, 1, 1, 1).to(device)
        vae_dtype = next(self.video_vae.parameters()).dtype
        frames = self.video_vae.decode(z.to(vae_dtype)).sample.float()  # [1, 3, T, H, W] in [-1, 1]
        frames = ((frames[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(1, 2, 3, 0).cpu().numpy()

    @torch.no_grad()
    def decode_audio(self, z_audio: torch.Tensor, num_samples: int) -> np.ndarray:
        """[1, C_a, N_a] → float32 [num_samples] (the DAC runs in float32; trimmed to the video length)."""
        self._on_device("audio_vae")
        device = next(self.audio_vae.parameters()).device
        with torch.autocast(device.type, dtype=torch.float32, enabled=device.type == "cuda"):
            wave = self.audio_vae.decode(z_audio.to(device))
        return wave[0, 0, :num_samples].float().cpu().numpy()

    # ----------------------------------------------------------------------------------------------------
    # Generation
    # ----------------------------------------------------------------------------------------------------

    def __call__(
        self,
        prompt: str,
        image: Any = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        num_inference_steps: int | None = None,
        guidance: Guidance | None = None,
        seed: int | None = None,
        video_shift: float | None = None,
        audio_shift: float | None = None,
        loudness_lufs: float | None = -16.0,
        true_peak_db: float = -1.0,
        progress: ProgressFn | None = None,
        output_type: str = "np",
        sequential_cfg: bool = False,
        bridge_strength: float = 1.0,
    ) -> GenerationResult | tuple[torch.Tensor, torch.Tensor]:
        """Generate one clip.

        Args:
            prompt: what is seen and heard. image: first frame (path, PIL image or uint8 array); ``None`` → T2VA
                with a white first frame. negative_prompt: ``None`` → the checkpoint's ``default_negative_prompt``
                (model_index.json; our demo checkpoint: ``""``, what its text dropout trained), else the Wan one.
            height, width: multiples of 16 (default: the model's trained size). num_frames: 4k+1. fps: > 0.
            num_inference_steps: default from model_index.json (``default_num_inference_steps``), else 50.
            guidance: CFG mode and scales (default: :meth:`default_guidance`, text CFG with s_T = 5 unless the
                checkpoint declares its own ``default_text_scale``). seed: ``None`` → random; the used seed is
                returned. video_shift, audio_shift: per-modality σ shift (default: the scheduler config's).
            loudness_lufs: integrated loudness target of the audio, ``None`` to leave it as decoded.
            output_type: ``"np"`` (a GenerationResult) or ``"latent"`` (the final latents, no decoding).
            bridge_strength: the denoiser's ``bridge_scale`` for every bridge-on branch: 1.0 as trained, 0.0 runs the
                two towers independently (the bridge ablation), values between weaken it.
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.interrupt = False
        guidance = guidance if guidance is not None else self.default_guidance()
        dh, dw = self.default_size()
        dn, dfps = self.default_num_frames_fps()
        height = dh if height is None else height
        width = dw if width is None else width
        num_frames = dn if num_frames is None else num_frames
        fps = dfps if fps is None else fps
        if num_inference_steps is None:
            num_inference_steps = int(self.model_index.get("default_num_inference_steps", 50))
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type={output_type!r} is invalid: expected 'np' or 'latent'")

        # 1. Inputs
        self.check_inputs(prompt, height, width, num_frames, fps, num_inference_steps, guidance, seed, loudness_lufs,
                          bridge_strength)
        if image is None:
            first_frame = np.full((height, width, 3), 255, dtype=np.uint8)  # T2VA: a pure-white first frame
        else:
            first_frame = media.load_image(image)
        video_shape, audio_shape, n_samples = self.latent_shapes(height, width, num_frames, fps)

        # 2. Text
        if negative_prompt is None:
            negative_prompt = str(self.model_index.get("default_negative_prompt", DEFAULT_NEGATIVE_PROMPT))
        warnings = self.prompt_warnings(prompt)
        for warning in warnings:
            logger.warning("%s", warning)
        prompts = [prompt] + ([negative_prompt] if guidance.needs_negative else [])
        embeds = self.encode_prompt(prompts)
        text, negative = embeds[:1], (embeds[1:] if guidance.needs_negative else None)
        timings["text"] = time.perf_counter() - t0

        # 3. Condition; 4. noise
        t1 = time.perf_counter()
        condition = self.prepare_condition(first_frame, height, width, num_frames)
        z_video, z_audio = self.prepare_latents(video_shape, audio_shape, seed)
        timings["condition"] = time.perf_counter() - t1

        # 5. Denoise
        t2 = time.perf_counter()
        z_video, z_audio = self.denoise(z_video, z_audio, condition, text, negative, fps, num_inference_steps,
                                        guidance, video_shift, audio_shift, progress, sequential_cfg,
                                        float(bridge_strength))
        timings["denoise"] = time.perf_counter() - t2
        if output_type == "latent":
            return z_video, z_audio

        # 6. Decode
        t3 = time.perf_counter()
        video = self.decode_video(z_video)
        audio = self.decode_audio(z_audio, n_samples)
        if loudness_lufs is not None:
            audio = media.normalize_loudness(audio, self.audio_sample_rate, loudness_lufs, true_peak_db)
        timings["decode"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        if progress is not None:
            progress("done", 1, 1)
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, height=height, width=width,
                        num_frames=num_frames, fps=fps, num_inference_steps=num_inference_steps,
                        guidance=dataclasses.asdict(guidance), seed=seed, video_shift=video_shift,
                        audio_shift=audio_shift, loudness_lufs=loudness_lufs, image=image is not None,
                        bridge_strength=float(bridge_strength), model=self.name)
        return GenerationResult(video=video, audio=audio.astype(np.float32), sample_rate=self.audio_sample_rate,
                                fps=float(fps), seed=seed, nfe=guidance.nfe * num_inference_steps, timings=timings,
                                settings=settings, warnings=warnings)
