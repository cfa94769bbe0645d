"""MOVAPipeline: image + text (IT2VA) or text alone (T2VA) → video with synchronised audio, and the generation
modes of ``mova.modes`` (first–last frame, audio → video, video → audio, extend, retake, long clips).

``__call__`` takes :class:`~mova.settings.GenerationSettings` and runs in numbered stages, each a method
(docs/model.md#generation-order, #text-encoding, #inference-defaults):

1. ``check``             the model's defaults filled in and its limits checked (errors name the field); the mode's
                         media read and checked (``mova.modes.read_inputs``), its windows planned (``modes.Plan``)
2. ``encode_prompt``     UMT5: cleaned prompt and negative prompt → [B, 512, 4096], zero-padded

   then for each window (one, unless a clip is extended or ``num_windows`` > 1):

3. ``prepare_condition`` first frame (a white frame for T2VA) → VAE latent (posterior mode), normalised,
                         behind a 4-channel first-frame mask → y [1, 20, T', H/8, W/8];
   ``prepare_known``     what the window is given (frames, last frame, sound) → known latents (``mova.conditioning``)
4. ``prepare_latents``   seeded noise: video [1, 16, T', H/8, W/8] first, then audio [1, C_a, N_a]
5. ``denoise``           paired (video t, audio t) schedule; per step the expert by the boundary and the
                         guidance branches in one batched forward; Euler update in fp32; known latents held
                         (a modality given whole runs clean at t = 0)
6. ``decode``            Wan VAE → uint8 frames; DAC → waveform trimmed to the video length; joined into the
                         output (``Plan.join``); LUFS normalisation with a true-peak ceiling unless the output
                         carries given sound

It returns a :class:`GenerationResult` of arrays and writes nothing (``mova.outputs.save_clip`` does).
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

from mova import media, modes
from mova.acceleration import fp8_unavailable, precision_context
from mova.cache import StepCache
from mova import validation as check
from mova.conditioning import KnownLatents, audio_latent_known, video_latent_known
from mova.guidance import Guidance, guided_velocity
from mova.loading import (checkpoint_tensors, empty_native, library_config, load_component, load_components,
                          load_native, parameter_count, read_model_index, refill_native)
from mova.media import center_crop_resize
from mova.models import DualTowerDenoiser, VideoDiT
from mova.offload import configure_cuda_allocator
from mova.settings import (
    COMPILE_MODES, MEMORY_PROFILES, OFFLOAD_MODES, WORK_NFE, WORK_STEPS, GenerationCancelled, GenerationSettings,
    ModelInfo,
)
from mova.validation import clean_prompt

__all__ = ["MOVAPipeline", "GenerationResult", "GenerationSettings", "GenerationCancelled", "center_crop_resize"]

logger = logging.getLogger(__name__)

AUTO_COMPILE_PARAMETERS = 1_000_000_000  # compile=auto compiles denoisers this large (MOVA's: 18.4B used per step)

# The inference scripts' default negative prompt (docs/model.md#text-encoding), character for character.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指"
)
MAX_SEQUENCE_LENGTH = 512
ENCODER_COMPONENTS = ("text_encoder", "tokenizer", "video_vae", "audio_vae")
LAZY_COMPONENTS = ("text_encoder", "video_dit", "video_dit_2")  # read from disk when needed under lazy=True


@dataclasses.dataclass
class LazySource:
    """Where the lazily loaded components come from (``from_pretrained(lazy=True)``): {component: subfolder},
    how they load (host or device, dtype, weight format)."""

    folder: Path
    index: dict[str, Any]
    subfolders: dict[str, str]
    load_device: str | torch.device
    quantization: str | None
    loads: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # (component, seconds) per read

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class GenerationResult:
    """A generated clip, as arrays: ``video`` uint8 [T, H, W, 3], ``audio`` float32 [N] at ``sample_rate``; the
    resolved ``settings`` (seed included), ``first_frame`` uint8 [H, W, 3] as conditioned (``None`` for T2VA),
    ``warnings`` for the user (e.g. prompt text the model cannot read)."""

    video: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float
    seed: int
    settings: GenerationSettings
    nfe: int = 0  # denoiser evaluations made (steps × guidance branches × windows, less what the cache skipped)
    reused_steps: list[int] = dataclasses.field(default_factory=list)  # steps that took the last velocity (cache)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    first_frame: np.ndarray | None = None
    model: str = ""

    @property
    def cached_steps(self) -> int:
        return len(self.reused_steps)

    @property
    def duration(self) -> float:
        return self.video.shape[0] / self.fps

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (an .mp4: H.264 + AAC, faststart) with its sidecar JSON (and first frame PNG) beside it,
        through the one clip writer (``mova.outputs.save_clip``, which also returns the figures); returns ``path``."""
        from mova.outputs import save_clip

        path = Path(path)
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"path={str(path)!r} is invalid: expected a file name ending in .mp4")
        return Path(save_clip(self, path.parent, path.stem).video_path)

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
    length set to zero (no mask reaches the DiTs, docs/model.md#text-encoding). Differentiable (the demo recipe trains a text
    encoder through it); callers that only infer wrap it in ``torch.no_grad``."""
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < mask.sum(dim=1, keepdim=True)
    return hidden * keep[..., None].to(hidden.dtype)


class MOVAPipeline:
    """Loaded components plus the generation loop. Build with :meth:`from_pretrained`."""

    model_cpu_offload_seq = ("text_encoder", "video_vae", "video_dit", "video_dit_2", "audio_dit",
                             "dual_tower_bridge", "audio_vae")
    _denoiser_parts = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")

    def __init__(self, components: dict[str, Any], device: torch.device, dtype: torch.dtype, offload: str = "none",
                 name: str = "", lazy: LazySource | None = None) -> None:
        self.components = components
        self.model_index = components.get("model_index", {})
        self.device, self.dtype, self.offload, self.name = device, dtype, offload, name
        self.lazy = lazy
        self.tokenizer = components["tokenizer"]
        self.video_vae = components["video_vae"]
        self.audio_vae = components["audio_vae"]
        self.scheduler = components.get("scheduler")
        self.boundary_ratio = float(self.model_index.get("boundary_ratio", 0.9))
        vae_cfg = self.video_vae.config
        self.vae_scale_spatial = int(vae_cfg.get("scale_factor_spatial", 8))
        self.vae_scale_temporal = int(vae_cfg.get("scale_factor_temporal", 4))
        self.denoiser = None  # an encoders-only pipeline (from_pretrained(encoders_only=True)) has none
        if "video_dit" in components:
            self.denoiser = DualTowerDenoiser(
                components["video_dit"], components["audio_dit"], components["dual_tower_bridge"],
                components.get("video_dit_2"), self.boundary_ratio, self.scheduler.config.num_train_timesteps,
                self.vae_scale_temporal,
            ).eval()
        self.latents_mean = torch.tensor(vae_cfg["latents_mean"], dtype=torch.float32)
        self.latents_std = torch.tensor(vae_cfg["latents_std"], dtype=torch.float32)
        self.patch = tuple(components["video_dit"].config.patch_size) if self.denoiser is not None else (1, 2, 2)
        self.loras: dict[str, Path] = {}  # adapters offered by name (register_lora)
        self._lora, self._lora_name = None, None  # the adapter in the denoiser now
        self.parallel = None
        self.velocity_model = self.denoiser  # what the guidance calls (a parallel wrapper after enable_parallel)
        self.branch_runner = None  # how guidance evaluates its branches (None: batched, or sequential_cfg)
        self._setup_offload()

    # ----------------------------------------------------------------------------------------------------
    # Loading and placement
    # ----------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike = "demo", *, revision: str | None = None,
                        device: str | torch.device | None = None, torch_dtype: torch.dtype | str | None = None,
                        offload: str | None = None, encoders_only: bool = False,
                        high_noise_expert: bool = True, quantization: str | None = None,
                        memory: str | None = None, lazy: bool | None = None) -> "MOVAPipeline":
        """Load a checkpoint folder (official layout), a Hugging Face Hub repo id (``"org/name"``, fetched into the
        HF cache with only the files the pipeline reads; ``mova.hub``) or ``"demo"`` (the shipped demo checkpoint).

        Args:
            revision: a branch, tag or commit of a Hub repo.
            device: default CUDA when available, else CPU.
            torch_dtype: default bfloat16 on CUDA, float32 on CPU (bf16 matmuls are very slow on CPUs); also
                ``"bf16"``, ``"fp16"``, ``"fp32"``. Our models keep their ``_keep_in_fp32_modules`` in float32.
            offload: ``none`` (everything on the device), ``model`` (one component on the device at a time),
                ``sequential`` (DiT blocks streamed from pinned host memory with prefetch; for small GPUs).
            encoders_only: load the text encoder, tokenizer and both VAEs and no denoiser (tens of GB at full size):
                a pipeline whose ``encode_prompt``, ``encode_video`` and ``prepare_conditions`` are the inference code,
                for the training cache; it cannot generate.
            high_noise_expert: ``False`` skips (and does not download) the high-noise expert ``video_dit``: the
                low-noise expert then serves every step — half the expert weights, at some cost in quality in the
                first, high-noise steps.
            quantization: store the block weights of the experts, the audio DiT, the bridge and the text encoder
                as ``fp8`` or ``int8`` (half the bytes of bf16) or ``nf4`` (about a quarter; ``mova.quantization``),
                quantised as they are read;
                a folder saved quantised loads in its own format. Default: as stored.
            lazy: the experts and the text encoder are read from disk when a stage needs them and freed when it is
                done (never both experts in memory at once): host memory holds one of them at a time, at the cost of
                reading them again for every generation.
            memory: a named profile (``mova.settings.MEMORY_PROFILES``) that sets ``quantization``, ``offload`` and
                ``lazy`` (``"24gb"``: MOVA-360p on a 24 GB GPU with 32 GB of host RAM); those arguments must then be
                left unset. On CUDA it also sets the caching allocator (``expandable_segments`` for ``"24gb"``)
                unless ``PYTORCH_CUDA_ALLOC_CONF`` is set; that setting is process-wide.
        """
        from mova.hub import resolve_checkpoint
        from mova.quantization import check_format

        if memory is not None:
            if memory not in MEMORY_PROFILES:
                raise ValueError(f"memory={memory!r} is invalid: expected one of {list(MEMORY_PROFILES)}")
            given = [k for k, v in (("offload", offload), ("quantization", quantization), ("lazy", lazy))
                     if v is not None]
            if given:
                raise ValueError(f"memory={memory!r} sets {', '.join(given)} itself: leave {' and '.join(given)} "
                                 "unset, or choose them without a memory profile")
            offload, quantization, lazy = (MEMORY_PROFILES[memory][k] for k in ("offload", "quantization", "lazy"))
        offload, lazy = offload or "none", bool(lazy)
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload={offload!r} is invalid: expected one of {list(OFFLOAD_MODES)}")
        check_format(quantization)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if memory is not None:
            configure_cuda_allocator(MEMORY_PROFILES[memory]["cuda_alloc"], device)
        if isinstance(torch_dtype, str):
            names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16":
                     torch.float16, "fp32": torch.float32, "float32": torch.float32}
            if torch_dtype not in names:
                raise ValueError(f"torch_dtype={torch_dtype!r} is invalid: expected one of {sorted(names)}")
            torch_dtype = names[torch_dtype]
        dtype = torch_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        name = str(path_or_name)
        folder = resolve_checkpoint(path_or_name, revision=revision, high_noise_expert=high_noise_expert)
        load_device = "cpu" if offload != "none" else device
        names = ENCODER_COMPONENTS if encoders_only else None
        low_noise_only = not high_noise_expert and not encoders_only
        if low_noise_only:
            names = [n for n in read_model_index(folder) if n != "video_dit"]
            if "video_dit_2" not in names:
                raise ValueError(f"high_noise_expert=False needs a checkpoint with two experts; {name} has only "
                                 "video_dit")
        source = None
        if lazy and not encoders_only:
            index = read_model_index(folder)
            wanted = names or list(index)
            subfolders = {n: n for n in LAZY_COMPONENTS if n in wanted}
            if low_noise_only:
                subfolders = {"text_encoder": "text_encoder", "video_dit": "video_dit_2"}
            names = [n for n in (names or index) if n not in set(subfolders.values())]
            source = LazySource(folder, index, subfolders, load_device, quantization)
        components = load_components(folder, device=load_device, dtype=dtype, names=names, quantization=quantization)
        if source is not None:  # checked now, loaded when needed: the experts as empty (meta) modules
            library_config("text_encoder", folder / "text_encoder")
            checkpoint_tensors(folder / "text_encoder")
            components["text_encoder"] = None
            for part, sub in source.subfolders.items():
                if part != "text_encoder":
                    components[part] = empty_native(VideoDiT, folder / sub, quantization)
        if low_noise_only and source is None:
            components["video_dit"] = components.pop("video_dit_2")
        if low_noise_only:
            logger.warning("high_noise_expert=False: the low-noise expert serves every step (the released sampler "
                           "switches experts at boundary_ratio)")
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        return cls(components, device, dtype, offload, name=name, lazy=source)

    def enable_parallel(self, state) -> None:
        """Run the denoiser with sequence and/or CFG parallelism (a ``mova.parallel.ParallelState`` from
        ``init_parallel``; every rank runs the same call with the same seed and gets the same result): the denoiser
        is wrapped (``SequenceParallel``) and the guidance branches get a CFG-parallel runner; the model is unchanged."""
        from mova.parallel import parallelize

        if self.offload != "none":
            raise ValueError("parallel inference needs offload='none' (each GPU holds its copy of the model)")
        self.velocity_model, self.branch_runner = parallelize(self.denoiser, state)
        self.parallel = state

    def compile(self, **compile_kwargs: Any) -> None:
        """Regional ``torch.compile``: every repeated block of the denoiser's models (DiT blocks, bridge
        conditioners) is compiled in place (diffusers' ``compile_repeated_blocks``; static shapes by default).
        Blocks of one class share a compiled graph; the elementwise chains around the matmuls fuse."""
        from mova.acceleration import compile_repeated_blocks

        compile_repeated_blocks(self._denoiser_models(), **compile_kwargs)

    def apply_compile(self, mode: str = "auto") -> bool:
        """:meth:`compile` as the CLI and the app choose it: ``on``, ``off``, or ``auto`` — on for a CUDA device
        without offload or parallel inference and a full-size denoiser, where it pays (360p on an H200: 8.21 s/step
        against 9.19 eager, after ~35 s of compiling for each new request shape;
        ``benchmarks/results/step_time_360p_wave2_h200.json``; the demo model makes a clip in under 2 s).
        Returns whether the blocks were compiled; the choice and its reason are logged."""
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile={mode!r} is invalid: expected one of {list(COMPILE_MODES)}")
        why_not = None
        if mode == "off":
            why_not = "compile=off"
        elif mode == "auto":
            if self.device.type != "cuda":
                why_not = f"compile=auto compiles on CUDA only (this pipeline is on {self.device.type})"
            elif self.offload != "none":
                why_not = f"compile=auto does not compile with offload={self.offload!r}"
            elif self.parallel is not None:
                why_not = "compile=auto does not compile under parallel inference"
            elif sum(map(parameter_count, self._denoiser_models())) < AUTO_COMPILE_PARAMETERS:
                why_not = "compile=auto skips a denoiser this small (compiling would take longer than it saves)"
        if why_not:
            logger.info("denoiser blocks run eager: %s", why_not)
            return False
        self.compile()
        logger.info("denoiser blocks compiled (regional torch.compile): each new request shape compiles during its "
                    "first step (about 35 s at 360p on an H200)")
        return True

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0):
        """Load a LoRA adapter (``mova.lora`` format: ``adapter_model.safetensors`` + ``adapter_config.json``)
        into the denoiser at ``scale``; returns a handle with ``set_scale``, ``merge``, ``unmerge``, ``unload``."""
        from mova.lora import load_lora
        from mova.quantization import quantized_format

        fmt = next((f for f in map(quantized_format, self._denoiser_models()) if f), None)
        if self.lazy is not None or fmt:
            why = f"the block weights are stored as {fmt}" if fmt else "the experts load from disk per generation"
            raise ValueError(f"lora: adapters need the full-precision denoiser resident ({why}); load without "
                             "quantization, lazy and memory to use one")
        return load_lora(self, path, scale)

    def register_lora(self, name: str, path: str | os.PathLike) -> None:
        """Offer an adapter under ``name``: settings with ``lora=name`` run with it (loaded on first use, swapped
        out when another or none is asked for); :meth:`model_info` lists it."""
        path = Path(path).expanduser()
        if not str(name).strip() or not path.exists():
            raise ValueError(f"loras: adapter {name!r} at {str(path)!r} does not exist")
        self.loras[str(name)] = path

    def _use_lora(self, name: str | None, scale: float) -> None:
        """Make adapter ``name`` (or none) the one in the denoiser, at ``scale``."""
        if name == self._lora_name:
            if self._lora is not None and self._lora.scale != scale:
                self._lora.set_scale(scale)
            return
        if self._lora is not None:
            self._lora.unload()
            self._lora, self._lora_name = None, None
        if name is not None:
            if name not in self.loras:
                raise ValueError(f"lora={name!r} is invalid: allowed adapters are {sorted(self.loras)}")
            self._lora = self.load_lora(self.loras[name], scale)
            self._lora_name = name

    def _setup_offload(self) -> None:
        """``sequential``: the denoiser's blocks stream from pinned host memory (mova.offload.BlockStreamer);
        the text encoder and VAEs move to the GPU only while they run, as with ``model``."""
        self.streamer = None
        if self.offload == "sequential" and self.device.type == "cuda":
            from mova.offload import BlockStreamer

            self.streamer = BlockStreamer([m for m in self._denoiser_models() if not _is_empty(m)], self.device)

    def _fp8_unavailable(self) -> str | None:
        """Why ``precision="fp8"`` cannot run with this pipeline (None when it can)."""
        if self.lazy is not None:
            return "the experts load from disk during the generation (lazy loading, memory='24gb'), and the fp8 " \
                   "GEMMs are set up before it starts; load without lazy to use it"
        return fp8_unavailable(self.device)

    @property
    def text_encoder(self) -> torch.nn.Module | None:
        return self.components["text_encoder"]

    def _load_lazy(self, names: tuple[str, ...]) -> None:
        """``lazy``: free the lazily loaded components not in ``names`` (first, so two experts are never held at
        once) and read those in ``names`` from disk. An expert that goes hands its buffers (pinned host copies,
        GPU tensors) to the expert that comes, whose weights are then read into them in place: no allocation, so
        host memory never holds a freed expert's pages beside the next one's."""
        source = self.lazy
        loaded = [p for p in source.subfolders if self._lazy_loaded(p)]
        wanted = [p for p in names if p in source.subfolders and p not in loaded]
        heirs = [p for p in wanted if p != "text_encoder"]
        handed = set()  # experts that took a freed expert's buffers
        for part in (p for p in loaded if p not in names):
            heir = heirs.pop(0) if part != "text_encoder" and heirs and self._can_hand_over(part, heirs[0]) else None
            self._free_lazy(part, heir)
            handed.update([heir] if heir else [])
        for part in wanted:
            t0 = time.perf_counter()
            sub = source.folder / source.subfolders[part]
            if part == "text_encoder":
                self.components[part] = load_component(source.folder, source.index, part, source.load_device,
                                                       self.dtype, source.quantization).requires_grad_(False)
            else:
                if part in handed:
                    refill_native(self.components[part], sub, source.quantization)
                else:
                    load_native(VideoDiT, sub, source.load_device, self.dtype, source.quantization,
                                module=self.components[part]).requires_grad_(False)
                if self.streamer is not None:
                    self.streamer.add(self.components[part])
            source.loads.append((part, round(time.perf_counter() - t0, 2)))
            logger.info("lazy: %s %s in %.1f s", "read into freed buffers:" if part in handed else "loaded", part,
                        source.loads[-1][1])

    def _lazy_loaded(self, part: str) -> bool:
        module = self.components.get(part)
        return module is not None and not _is_empty(module)

    def _can_hand_over(self, old: str, new: str) -> bool:
        """Whether expert ``new`` can take ``old``'s tensors: the same parameter names, shapes and dtypes."""
        a, b = (dict(self.components[p].named_parameters()) for p in (old, new))
        return a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)

    def _free_lazy(self, part: str, heir: str | None = None) -> None:
        """Free a lazily loaded component; an expert's tensors go to expert ``heir`` instead (same layout)."""
        module = self.components[part]
        if part == "text_encoder":
            self.components[part] = None
        else:
            if self.streamer is not None:
                self.streamer.drop(module)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # no copy of the old weights is still in flight
            if heir is not None:  # the parameters themselves move over; the old module is left empty
                receiver = self.components[heir]
                for name, param in list(module.named_parameters()):
                    owner, leaf = name.rpartition(".")[::2]
                    receiver.get_submodule(owner)._parameters[leaf] = param
                    module.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(
                        torch.empty_like(param, device="meta"), requires_grad=False)
            else:
                torch.nn.Module.to(module, "meta")  # the module stays (the denoiser holds it), empty
                # its pinned copies went back to torch's pinned-memory cache: hand them back to the system
                empty_host_cache = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
                if self.streamer is not None and empty_host_cache is not None:
                    empty_host_cache()
        logger.info("lazy: freed %s", part)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _denoiser_models(self) -> list[torch.nn.Module]:
        return [self.components[p] for p in self._denoiser_parts if self.components.get(p) is not None]

    def _on_device(self, *names: str) -> None:
        """With offloading, move the named components to the device and the others to the CPU (the denoiser
        parts under ``sequential`` are left to the block streamer)."""
        if self.lazy is not None:
            self._load_lazy(names)
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

    def default_guidance(self) -> Guidance:
        """Text CFG at the checkpoint's ``default_text_scale`` (model_index.json; our demo checkpoint: 3, chosen on
        tuning prompts), else MOVA's released s_T = 5."""
        return Guidance(text_scale=float(self.model_index.get("default_text_scale", Guidance().text_scale)))

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens the prompt embeddings are zero-padded to: 512 as MOVA trained, or the checkpoint's own
        ``max_sequence_length`` (model_index.json; our demo checkpoint trains and samples with 64)."""
        return int(self.model_index.get("max_sequence_length", MAX_SEQUENCE_LENGTH))

    # ----------------------------------------------------------------------------------------------------
    # 1. Inputs
    # ----------------------------------------------------------------------------------------------------

    def model_info(self) -> ModelInfo:
        """What this checkpoint supports: its defaults, resolution presets and per-request ceilings.

        Presets: ``model_index.json`` ``resolutions`` (``"352x640,640x352"`` or [[h, w], ...]), else by name —
        720p → 720×1280 / 1280×720, 360p (or no declared default size) → 352×640 / 640×352 — else the declared
        default size alone; the default size first. Ceilings: ``max_pixels`` (default: the largest preset),
        ``max_duration_s`` (twice the default clip), ``max_work`` (the largest clip at 100 steps of dual CFG),
        each overridable in ``model_index.json``.
        """
        index = self.model_index
        if "default_height" in index and "default_width" in index:
            default = int(index["default_height"]), int(index["default_width"])
        else:
            default = (720, 1280) if "720" in str(index.get("_name_or_path", "")) else (352, 640)
        presets = _declared_resolutions(index.get("resolutions"))
        if not presets:
            tag = f"{self.name} {index.get('_name_or_path', '')}"
            if "720" in tag:
                presets = [(720, 1280), (1280, 720)]
            elif "360" in tag or "default_height" not in index:
                presets = [(352, 640), (640, 352)]
        presets = [default] + [p for p in presets if p != default]
        frames, fps = int(index.get("default_num_frames", 193)), float(index.get("default_fps", 24.0))
        max_frames = max(int(frames), int(index.get("max_num_frames", frames)))
        # ceilings (validated with the other model_index.json settings when it is read)
        max_pixels = int(index.get("max_pixels", max(h * w for h, w in presets)))
        max_duration = float(index.get("max_duration_s", min(check.MAX_DURATION_S, 2.0 * frames / fps)))
        max_work = float(index.get("max_work", max_pixels * max_frames * WORK_STEPS * WORK_NFE))
        config = getattr(self.scheduler, "config", None)  # no single shift when it is exponential (e^mu)
        shift = None if getattr(config, "exponential_shift", False) else getattr(config, "shift", None)
        source = self.name or str(index.get("_name_or_path", "model"))
        return ModelInfo(
            name=source if source == "demo" else os.path.basename(os.path.normpath(source)) or source,
            resolutions=tuple(presets), default_num_frames=int(frames), max_num_frames=max_frames,
            default_fps=float(fps), default_num_inference_steps=int(index.get("default_num_inference_steps", 50)),
            default_guidance=self.default_guidance(),
            default_negative_prompt=str(index.get("default_negative_prompt", DEFAULT_NEGATIVE_PROMPT)),
            default_shift=None if shift is None else float(shift), frame_multiple=int(self.vae_scale_temporal),
            size_multiple=self.vae_scale_spatial * max(self.patch[1:]), sample_rate=int(self.audio_sample_rate),
            lora_adapters=tuple(self.loras), max_pixels=max_pixels,
            max_duration_s=max_duration, max_work=max_work, device=str(self.device), offload=self.offload,
            unavailable_precisions=tuple((p, why) for p, why in (("fp8", self._fp8_unavailable()),) if why),
        )

    # ----------------------------------------------------------------------------------------------------
    # 2. Text
    # ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], max_sequence_length: int | None = None) -> torch.Tensor:
        """Prompts → [B, max_sequence_length, D]: UMT5 run with the attention mask, rows past each prompt's
        length set to zero (no mask reaches the DiTs, docs/model.md#text-encoding). Default length: ``self.max_sequence_length``."""
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
        float32, on the VAE's device): the space the DiT denoises in (docs/model.md#image-conditioning)."""
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

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray, context: np.ndarray | None = None) -> torch.Tensor:
        """float32 [n] at the VAE's rate → DAC posterior means [1, C_a, ⌈n / hop⌉] (float32, on this pipeline's
        device). ``context``: a whole number of hops of the sound just before, encoded with it so the encoder sees
        real audio at its start; its latents are dropped."""
        self._on_device("audio_vae")
        device = next(self.audio_vae.parameters()).device
        skip = 0 if context is None else context.shape[0] // self.audio_vae.hop
        wave = audio if not skip else np.concatenate([context[-skip * self.audio_vae.hop:], audio])
        with torch.autocast(device.type, dtype=torch.float32, enabled=device.type == "cuda"):
            latent = self.audio_vae.encode(torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None, None]
                                           .to(device)).float()
        return latent[..., skip:].to(self.device)

    @torch.no_grad()
    def prepare_known(self, spec: modes.WindowSpec, height: int, width: int,
                      fps: float) -> tuple[KnownLatents | None, KnownLatents | None]:
        """What a window is given (``mova.modes.WindowSpec``) → its known (video, audio) latents, or None.

        Video: the given frames VAE-encoded; a latent frame is known when all its frames are (the VAE is causal,
        so frames after the known ones do not change them). A last frame is held as the last latent frame of the
        frame repeated (a still ending over the frames that latent holds). Audio: the given samples DAC-encoded
        with their context; a latent is known when its samples and ``AUDIO_MARGIN_LATENTS`` latents' worth on
        either side are. ``spec.fade`` makes the known leading run's weights fall linearly (the latent join).
        """
        n = spec.window.num_frames
        video_shape, audio_shape, _ = self.latent_shapes(height, width, n, fps)
        known_video = known_audio = None
        if spec.frames is not None or spec.last_frame is not None:
            x0 = torch.zeros(video_shape, device=self.device)
            weight = np.zeros(video_shape[2], np.float32)
            if spec.frames is not None:
                x0 = self.encode_video(_pixels(spec.frames)).to(self.device)
                weight[:] = video_latent_known(spec.frames_known, self.vae_scale_temporal)
            if spec.last_frame is not None:
                still = self.encode_video(_pixels(np.repeat(spec.last_frame[None], n, axis=0))).to(self.device)
                x0[:, :, -1:] = still[:, :, -1:]
                weight[-1] = 1.0
            known_video = KnownLatents(x0, torch.from_numpy(_faded(weight) if spec.fade else weight))
        if spec.audio is not None:
            x0 = self.encode_audio(spec.audio, spec.audio_context)[..., :audio_shape[2]]
            weight = audio_latent_known(spec.audio_known, self.audio_vae.hop, audio_shape[2],
                                        modes.AUDIO_MARGIN_LATENTS).astype(np.float32)
            known_audio = KnownLatents(x0, torch.from_numpy(_faded(weight) if spec.fade else weight))
        return known_video, known_audio

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
                sequential_cfg: bool = False, bridge_strength: float = 1.0, *,
                known_video: KnownLatents | None = None, known_audio: KnownLatents | None = None,
                strength: tuple[float, float] = (1.0, 1.0), step_offset: int = 0,
                total_steps: int | None = None, cache: StepCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoise from the noise ``z_video`` / ``z_audio`` (it is also the ε that known latents are noised with).

        ``known_video`` / ``known_audio``: given latents (``mova.conditioning``): a modality given whole is clean (its
        latent is the given one, at t = 0, with the low-noise video expert); one given in part is held at each step's
        σ. ``strength`` (video, audio) < 1: a partial re-noising (SDEdit) — the schedule starts at that strength
        from the known latents noised to its first σ. Progress reports step ``step_offset + i + 1`` of
        ``total_steps`` (the steps of every window). ``cache``: a ``mova.cache.StepCache`` whose steps reuse the last
        evaluated velocity (``settings.cache``)."""
        clean_v = known_video is not None and known_video.clean
        clean_a = known_audio is not None and known_audio.clean
        sv, sa = (1.0 if clean_v else strength[0]), (1.0 if clean_a else strength[1])
        schedule = self.scheduler.make_schedule(steps, video_shift=video_shift, audio_shift=audio_shift,
                                                video_strength=sv, audio_strength=sa)
        noise_video, noise_audio = z_video, z_audio
        if clean_v:
            z_video = known_video.x0.to(z_video)
        elif sv < 1.0:
            z_video = known_video.start(noise_video, float(schedule.sigmas[0, 0]))
        if clean_a:
            z_audio = known_audio.x0.to(z_audio)
        elif sa < 1.0:
            z_audio = known_audio.start(noise_audio, float(schedule.sigmas[0, 1]))
        hold_v = known_video is not None and not clean_v and known_video.any
        hold_a = known_audio is not None and not clean_a and known_audio.any
        single_expert = self.denoiser.video_dit_2 is None
        current = None
        cache = cache or StepCache(0.0, steps)
        for i in range(steps):
            t_video, t_audio = (float(t) for t in schedule.timesteps[i])
            sigma_video, sigma_audio = (float(x) for x in schedule.sigmas[i])
            if clean_v:
                t_video = 0.0
            elif hold_v:
                z_video = known_video.hold(z_video, noise_video, sigma_video)
            if clean_a:
                t_audio = 0.0
            elif hold_a:
                z_audio = known_audio.hold(z_audio, noise_audio, sigma_audio)
            if cache.reuse(i, schedule.sigmas[i]):  # the last evaluated velocity stands in (mova.cache)
                v_video, v_audio = cache.velocity
            else:
                expert = 0 if single_expert else 1 if clean_v else schedule.expert_for_step(i, self.boundary_ratio)
                if expert != current:
                    if current == 0:
                        self._release("video_dit")  # irreversible switch: the high-noise expert is done
                    self._on_device("video_dit" if expert == 0 else "video_dit_2", "audio_dit", "dual_tower_bridge")
                    current = expert
                model_in = torch.cat([z_video, condition], dim=1).to(self.dtype)
                v_video, v_audio = guided_velocity(
                    self.velocity_model, guidance, model_in, z_audio.to(self.dtype), text, negative, t_video, t_audio,
                    fps, expert=expert, sequential=sequential_cfg, runner=self.branch_runner,
                    bridge_strength=bridge_strength,
                )
                cache.store(schedule.sigmas[i], v_video, v_audio)
            if not clean_v:
                z_video = schedule.step(v_video, i, z_video, "video")
            if not clean_a:
                z_audio = schedule.step(v_audio, i, z_audio, "audio")
            if progress is not None:
                progress("denoise", step_offset + i + 1, total_steps or steps)
        if hold_v:  # σ = 0: the given latents themselves
            z_video = known_video.hold(z_video, noise_video, 0.0)
        if hold_a:
            z_audio = known_audio.hold(z_audio, noise_audio, 0.0)
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

    def __call__(self, settings: GenerationSettings | str | None = None, /, *, progress: ProgressFn | None = None,
                 output_type: str = "np", sequential_cfg: bool = False, **kwargs: Any) -> GenerationResult:
        """Generate one clip from ``settings`` (:class:`~mova.settings.GenerationSettings`), or from a prompt and
        keyword arguments that build them (``pipe("rain", image="f.png", num_inference_steps=30)``; ``guidance``
        may be a :class:`~mova.Guidance`). Unset fields take the checkpoint's defaults (its trained size, frames,
        fps, steps, s_T, negative prompt); ``seed=None`` draws one. Writes nothing: the result holds arrays
        (``mova.outputs.save_clip`` writes them).

        Args:
            progress: ``(stage, done, total)`` after each denoising step and stage; raising
                :class:`~mova.settings.GenerationCancelled` from it ends the generation at that step.
            output_type: ``"np"`` (a GenerationResult) or ``"latent"`` (the final latents, no decoding).
            sequential_cfg: run the guidance branches one by one instead of batched (less memory, same result).
        """
        timings: dict[str, float] = {"text": 0.0, "condition": 0.0, "denoise": 0.0, "decode": 0.0}
        t0 = time.perf_counter()
        if self.denoiser is None:
            raise ValueError("this pipeline was loaded with encoders_only=True: it encodes, it cannot generate")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type={output_type!r} is invalid: expected 'np' or 'latent'")
        # 1. Settings: validated, the model's defaults filled in, its limits checked; a seed drawn; the mode's media
        #    read and checked, its windows planned
        info = self.model_info()
        s = info.check(self.settings(settings, **kwargs))
        if s.seed is None:
            s = s.replace(seed=int.from_bytes(os.urandom(4), "little"))
        guidance = s.guidance_config
        inputs = modes.read_inputs(s, self.audio_sample_rate, self.vae_scale_temporal)
        plan = modes.Plan(s, inputs, sample_rate=self.audio_sample_rate, hop=self.audio_vae.hop,
                          temporal=self.vae_scale_temporal)

        why_not_fp8 = self._fp8_unavailable() if s.precision == "fp8" else None
        if why_not_fp8:
            raise ValueError(f"precision='fp8' is unavailable here: {why_not_fp8}; use precision='bf16'")
        self._use_lora(s.lora, s.lora_scale)

        # 2. Text (T2VA: MOVA's pure-white first frame)
        warnings = self.prompt_warnings(s.prompt)
        for warning in warnings:
            logger.warning("%s", warning)
        prompts = [s.prompt] + ([info.negative_prompt(s)] if guidance.needs_negative else [])
        embeds = self.encode_prompt(prompts)
        text, negative = embeds[:1], (embeds[1:] if guidance.needs_negative else None)
        timings["text"] = time.perf_counter() - t0

        # 3–6, window by window: condition and known latents, noise, denoising, decoding and joining
        output = plan.initial()
        total_steps = len(plan.windows) * s.num_inference_steps
        reused: list[int] = []  # steps the cache skipped, over every window (numbered as step_offset does)
        for window in plan.windows:
            t1 = time.perf_counter()
            spec = plan.spec(window, output)
            frame = spec.condition_frame
            if frame is None:
                frame = np.full((s.height, s.width, 3), 255, np.uint8)
            condition = self.prepare_condition(frame, s.height, s.width, window.num_frames)
            known_video, known_audio = self.prepare_known(spec, s.height, s.width, s.fps)
            video_shape, audio_shape, n_samples = self.latent_shapes(s.height, s.width, window.num_frames, s.fps)
            z_video, z_audio = self.prepare_latents(video_shape, audio_shape,
                                                    (s.seed + window.index) % (check.MAX_SEED + 1))
            t2 = time.perf_counter()
            timings["condition"] += t2 - t1
            cache = StepCache(s.cache, s.num_inference_steps)
            with precision_context(s.precision, self._denoiser_models(), self.device):
                z_video, z_audio = self.denoise(
                    z_video, z_audio, condition, text, negative, s.fps, s.num_inference_steps, guidance,
                    s.video_shift, s.audio_shift, progress, sequential_cfg, s.bridge_strength, known_video=known_video,
                    known_audio=known_audio, strength=spec.strength, step_offset=window.index * s.num_inference_steps,
                    total_steps=total_steps, cache=cache)
            reused += [window.index * s.num_inference_steps + i for i in cache.reused]
            t3 = time.perf_counter()
            timings["denoise"] += t3 - t2
            if output_type == "latent" and window is plan.windows[-1]:
                return z_video, z_audio
            output = plan.join(output, spec, self.decode_video(z_video), self.decode_audio(z_audio, n_samples))
            timings["decode"] += time.perf_counter() - t3

        # 6. The output: a modality given whole as given; loudness unless the output carries given sound
        t4 = time.perf_counter()
        output = plan.finish(output)
        audio = output.audio
        if s.loudness_lufs is not None and plan.normalize_loudness:
            audio = media.normalize_loudness(audio, self.audio_sample_rate, s.loudness_lufs, s.true_peak_db)
        timings["decode"] += time.perf_counter() - t4
        timings["total"] = time.perf_counter() - t0
        if progress is not None:
            progress("done", 1, 1)
        return GenerationResult(video=output.frames, audio=audio.astype(np.float32),
                                sample_rate=self.audio_sample_rate, fps=float(s.fps), seed=s.seed,
                                nfe=s.nfe - len(reused) * guidance.nfe, reused_steps=reused, timings=timings,
                                settings=s, warnings=warnings, first_frame=inputs.first_frame, model=info.name)

    @staticmethod
    def settings(settings: GenerationSettings | str | None = None, **kwargs: Any) -> GenerationSettings:
        """``GenerationSettings`` from settings, a prompt, or keyword arguments (a ``Guidance`` object expands into
        ``guidance``, ``text_scale`` and ``bridge_scale``)."""
        guidance = kwargs.get("guidance")
        if isinstance(guidance, Guidance):
            kwargs.update(guidance=guidance.mode, text_scale=guidance.text_scale, bridge_scale=guidance.bridge_scale)
        if isinstance(settings, GenerationSettings):
            return settings.replace(**kwargs) if kwargs else settings
        if settings is not None:
            kwargs["prompt"] = settings
        return GenerationSettings.from_values(kwargs)


def _is_empty(module: torch.nn.Module) -> bool:
    """Whether ``module``'s weights are on the meta device (a lazily loaded expert between loads)."""
    return next(module.parameters()).device.type == "meta"


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] → [1, 3, T, H, W] in [-1, 1] (the VAE's input)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0


def _faded(weight: np.ndarray) -> np.ndarray:
    """Known-latent weights whose leading known run falls linearly from 1 (the latent join of chained windows):
    [1, 1, 0, …] → [1, 0.5, 0, …]."""
    run = int(np.argmin(weight >= 1.0)) if not (weight >= 1.0).all() else weight.shape[0]
    out = weight.copy()
    out[:run] = 1.0 - np.arange(run) / max(run, 1)
    return out


def _declared_resolutions(value: Any) -> list[tuple[int, int]]:
    """``"352x640,640x352"`` or ``[[352, 640], [640, 352]]`` → [(352, 640), (640, 352)]; anything else → []."""
    try:
        if isinstance(value, str):
            return [tuple(int(v) for v in item.lower().split("x")) for item in value.split(",") if item.strip()]
        if isinstance(value, (list, tuple)):
            return [(int(h), int(w)) for h, w in value]
    except (TypeError, ValueError):
        logger.warning("model_index.json resolutions=%r is not understood; using the default size", value)
    return []
