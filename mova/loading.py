"""Checkpoint folders in the official MOVA layout: read, verify, load, save.

A folder holds ``model_index.json`` and one subfolder per component (spec §2)::

    video_dit/  video_dit_2/  audio_dit/  dual_tower_bridge/  audio_vae/   our classes (mova.models)
    video_vae/                                                              diffusers AutoencoderKLWan
    text_encoder/  tokenizer/                                               transformers
    scheduler/                                                              mova.scheduler

Our components are built on the ``meta`` device (no memory), their keys and shapes are compared with the
safetensors headers (strict: missing, unexpected and mis-shaped tensors are listed, first 10 of each),
and the tensors are then read one at a time straight into the target device and dtype and assigned to
the module, so no second full copy of the weights ever exists. ``save_pretrained`` writes the same layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from mova.models.audio_dit import AudioDiT
from mova.models.audio_vae import AudioVAE
from mova.models.bridge import DualTowerBridge
from mova.models.video_dit import VideoDiT

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
DEFAULT_MAX_SHARD_BYTES = 10 * 1024**3  # diffusers' default shard size

# component name -> (our class, the class entry written to model_index.json)
NATIVE_COMPONENTS: dict[str, tuple[type[nn.Module], list[str]]] = {
    "video_dit": (VideoDiT, ["mova.diffusion.models.wan_video_dit", "WanModel"]),
    "video_dit_2": (VideoDiT, ["mova.diffusion.models.wan_video_dit", "WanModel"]),
    "audio_dit": (AudioDiT, ["mova.diffusion.models.wan_audio_dit", "WanAudioModel"]),
    "dual_tower_bridge": (DualTowerBridge, ["mova.diffusion.models.interactionv2", "DualTowerConditionalBridge"]),
    "audio_vae": (AudioVAE, ["mova.diffusion.models.dac_vae", "DAC"]),
}
LIBRARY_COMPONENTS: dict[str, list[str]] = {
    "video_vae": ["diffusers", "AutoencoderKLWan"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "scheduler": ["mova.diffusion.schedulers.flow_match_pair", "FlowMatchPairScheduler"],
}
REQUIRED_COMPONENTS = ("video_dit", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae", "text_encoder",
                       "tokenizer", "scheduler")


# --------------------------------------------------------------------------------------------------------
# 1. Folder reading and verification
# --------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def component_names(index: dict[str, Any]) -> list[str]:
    """The components of a model_index: the entries whose value is a [library, class] pair of strings
    (other keys are pipeline settings such as ``boundary_ratio`` or our ``resolutions``)."""
    return [n for n, v in index.items() if not n.startswith("_") and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, str) for x in v)]


def read_model_index(folder: str | os.PathLike) -> dict[str, Any]:
    """``model_index.json`` of a checkpoint folder, checked for the components MOVA needs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder {str(folder)!r} does not exist")
    index = read_json(folder / "model_index.json")
    missing = [c for c in REQUIRED_COMPONENTS if c not in index]
    if missing:
        raise ValueError(f"{folder / 'model_index.json'} lacks component(s) {missing}; "
                         f"a MOVA checkpoint needs {list(REQUIRED_COMPONENTS)} (video_dit_2 optional)")
    for name in [*REQUIRED_COMPONENTS, *(["video_dit_2"] if "video_dit_2" in index else [])]:
        if not (folder / name).is_dir():
            raise ValueError(f"component {name!r} is listed in model_index.json but folder {str(folder / name)!r} "
                             "is missing")
    return index


def weight_files(subfolder: Path) -> list[Path]:
    """The safetensors files of a component: a single file or the shards named in its index."""
    for single, index_name in ((WEIGHTS_NAME, WEIGHTS_INDEX_NAME), TRANSFORMERS_WEIGHTS):
        if (subfolder / single).is_file():
            return [subfolder / single]
        if (subfolder / index_name).is_file():
            weight_map = read_json(subfolder / index_name).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{subfolder / index_name} has no weight_map")
            files = sorted({subfolder / f for f in weight_map.values()})
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise ValueError(f"{subfolder / index_name} names shard(s) that are missing: {absent[:10]}")
            return files
    raise ValueError(f"no safetensors weights in {str(subfolder)!r} (expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}; "
                     "only safetensors are loaded)")


@dataclasses.dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    file: Path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPE_BYTES.get(self.dtype, 4)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def checkpoint_tensors(subfolder: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of every tensor of a component, read from the safetensors headers only."""
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files(subfolder):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                tensors[key] = TensorInfo(tuple(sl.get_shape()), sl.get_dtype(), file)
    return tensors


@dataclasses.dataclass
class KeyReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "key: checkpoint [..] vs model [..]"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {items[:limit]}{more}")
        return "; ".join(parts) if parts else "all keys and shapes match"


def compare_keys(module: nn.Module, tensors: dict[str, TensorInfo]) -> KeyReport:
    """Strict comparison of a module's state dict (keys, shapes) with a checkpoint's tensors. Parameters
    tied to another parameter (same tensor) count as present when any of their names is present."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    aliases: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    tied_to = {n: names for names in aliases.values() if len(names) > 1 for n in names}
    missing = sorted(k for k in expected if k not in tensors and not any(a in tensors for a in tied_to.get(k, [])))
    unexpected = sorted(k for k in tensors if k not in expected)
    mismatched = sorted(f"{k}: checkpoint {list(tensors[k].shape)} vs model {list(expected[k])}"
                        for k in expected if k in tensors and tensors[k].shape != expected[k])
    return KeyReport(missing, unexpected, mismatched)


# --------------------------------------------------------------------------------------------------------
# 2. Our components: meta build, verify, load tensor by tensor
# --------------------------------------------------------------------------------------------------------


def build_on_meta(cls: type[nn.Module], config: Any) -> nn.Module:
    with torch.device("meta"):
        return cls.from_config(config)  # type: ignore[attr-defined]


def native_config(cls: type[nn.Module], subfolder: Path, tensors: dict[str, TensorInfo] | None = None):
    """The component's config from its ``config.json``; for the audio VAE the weight-norm storage form is
    taken from the checkpoint keys (``weight_g``/``weight_v`` or plain ``weight``)."""
    config = cls.config_class.from_dict(read_json(subfolder / "config.json"))  # type: ignore[attr-defined]
    if cls is AudioVAE and tensors is not None:
        has_wn = any(k.endswith(".weight_v") for k in tensors)
        if has_wn != config.use_weight_norm:
            config = config.replace(use_weight_norm=has_wn)
    return config


def load_native(cls: type[nn.Module], subfolder: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> nn.Module:
    """Load one of our components from an official-layout subfolder, strictly.

    Raises:
        ValueError: missing folder/config/weights, bad config fields, or any key/shape difference.
    """
    subfolder = Path(subfolder)
    if not subfolder.is_dir():
        raise ValueError(f"component folder {str(subfolder)!r} does not exist")
    tensors = checkpoint_tensors(subfolder)
    config = native_config(cls, subfolder, tensors)
    module = build_on_meta(cls, config)
    report = compare_keys(module, tensors)
    if not report.ok:
        raise ValueError(f"{subfolder.name}: checkpoint does not match {cls.__name__}: {report.describe()}")
    device = torch.device(device)
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for key, info in tensors.items():
        by_file.setdefault(info.file, []).append(key)
    for file, keys in by_file.items():
        with safe_open(file, framework="pt", device="cpu") as f:
            for key in keys:
                t = f.get_tensor(key)
                target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
                if cls is DualTowerBridge and key == "condition_scale":
                    target = torch.float32  # a float32 scalar in the reference, whatever the model dtype
                state[key] = t.to(device=device, dtype=target)
    module.load_state_dict(state, strict=True, assign=True)
    module.eval()
    logger.info("loaded %s from %s (%d tensors, %s)", cls.__name__, subfolder, len(state), dtype or "stored dtype")
    return module


def save_native(module: nn.Module, subfolder: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                dtype: torch.dtype | None = None) -> None:
    """Write ``config.json`` and the weights (one file, or shards plus an index above ``max_shard_bytes``)."""
    subfolder = Path(subfolder)
    subfolder.mkdir(parents=True, exist_ok=True)
    with open(subfolder / "config.json", "w", encoding="utf-8") as f:
        json.dump(module.config.to_dict(), f, indent=2)  # type: ignore[attr-defined]
    state = {}
    for k, v in module.state_dict().items():
        t = v.detach()
        if dtype is not None and t.is_floating_point() and k != "condition_scale":
            t = t.to(dtype)
        state[k] = t.contiguous().cpu()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    for stale in list(subfolder.glob("diffusion_pytorch_model*.safetensors")) + [subfolder / WEIGHTS_INDEX_NAME]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], subfolder / WEIGHTS_NAME, metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, subfolder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    with open(subfolder / WEIGHTS_INDEX_NAME, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# --------------------------------------------------------------------------------------------------------
# 3. Library components (diffusers VAE, transformers text encoder and tokenizer, our scheduler)
# --------------------------------------------------------------------------------------------------------


def _library_class(name: str, entry: Any):
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise ValueError(f"model_index.json entry for {name!r} must be [library, class], got {entry!r}")
    library, class_name = entry
    if name == "scheduler":
        from mova.scheduler import FlowMatchPairScheduler

        return FlowMatchPairScheduler
    if library not in ("diffusers", "transformers"):
        raise ValueError(f"component {name!r}: library {library!r} is not supported (expected diffusers or transformers)")
    import importlib

    module = importlib.import_module(library)
    if class_name == "T5TokenizerFast" and not hasattr(module, class_name):
        class_name = "T5Tokenizer"
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"component {name!r}: {library} has no class {class_name!r}")
    return cls


def load_library_component(name: str, entry: Any, subfolder: Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype | None = None):
    cls = _library_class(name, entry)
    if name == "scheduler":
        return cls.from_pretrained(subfolder)
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(subfolder, local_files_only=True)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if name == "text_encoder":
        if dtype is not None:
            kwargs["dtype"] = dtype
        model, info = cls.from_pretrained(subfolder, output_loading_info=True, **kwargs)
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    else:
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        try:
            model, info = cls.from_pretrained(subfolder, output_loading_info=True, **kwargs)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ValueError(f"{name}: cannot load {cls.__name__} from {subfolder}: {exc}") from None
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')}: {sorted(map(str, v))[:10]}" for k, v in problems.items())
        raise ValueError(f"{name}: checkpoint does not match {cls.__name__}: {detail}")
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------------
# 4. Whole folders
# --------------------------------------------------------------------------------------------------------


def load_components(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    names: Iterable[str] | None = None) -> dict[str, Any]:
    """Load every component of a checkpoint folder (or only ``names``). Returns {name: object}, plus the
    parsed ``model_index`` under the key ``"model_index"``."""
    folder = Path(folder)
    index = read_model_index(folder)
    wanted = component_names(index)
    if names is not None:
        wanted = [n for n in wanted if n in set(names)]
    out: dict[str, Any] = {"model_index": index}
    for name in wanted:
        if name in NATIVE_COMPONENTS:
            out[name] = load_native(NATIVE_COMPONENTS[name][0], folder / name, device, dtype)
        elif name in LIBRARY_COMPONENTS:
            out[name] = load_library_component(name, index[name], folder / name, device, dtype)
        else:
            raise ValueError(f"model_index.json names an unknown component {name!r}; known: "
                             f"{sorted([*NATIVE_COMPONENTS, *LIBRARY_COMPONENTS])}")
    return out


def save_pretrained(folder: str | os.PathLike, components: dict[str, Any], *, boundary_ratio: float = 0.9,
                    extra_index: dict[str, Any] | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                    dtype: torch.dtype | None = None) -> Path:
    """Write a checkpoint folder in the official layout from loaded components ({name: object})."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": "MOVA", "_diffusers_version": "0.36.0", "_name_or_path": str(folder.name),
        "audio_vae_type": "dac", "boundary_ratio": boundary_ratio,
    }
    index.update(extra_index or {})
    for name, obj in components.items():
        if obj is None or name == "model_index":
            continue
        if name in NATIVE_COMPONENTS:
            save_native(obj, folder / name, max_shard_bytes, dtype)
            index[name] = NATIVE_COMPONENTS[name][1]
        elif name in LIBRARY_COMPONENTS:
            if name in ("video_vae", "text_encoder"):
                obj.save_pretrained(folder / name, safe_serialization=True)
            else:
                obj.save_pretrained(folder / name)
            index[name] = [LIBRARY_COMPONENTS[name][0], type(obj).__name__] if name != "scheduler" \
                else LIBRARY_COMPONENTS[name]
            if name == "tokenizer":
                index[name] = ["transformers", "T5TokenizerFast"] if "T5" in type(obj).__name__ \
                    else ["transformers", type(obj).__name__]
        else:
            raise ValueError(f"unknown component {name!r}")
    with open(folder / "model_index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return folder


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
