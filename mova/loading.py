"""Checkpoint folders in the official MOVA layout: read, verify, load, save.

A folder holds ``model_index.json`` and one subfolder per component (docs/model.md#checkpoint-layout)::

    video_dit/  video_dit_2/  audio_dit/  dual_tower_bridge/  audio_vae/   our classes (mova.models)
    video_vae/                                                              diffusers AutoencoderKLWan
    text_encoder/  tokenizer/                                               transformers
    scheduler/                                                              mova.scheduler

Before anything is loaded the folder is checked as a whole (``load_components``): ``model_index.json`` names
the expected class for each component and sane pipeline settings, no symbolic link leads outside the folder,
every config is valid and within the size ceilings of ``mova.config``, and every safetensors header reads.
Only safetensors are ever read, for every component. Each refusal is a ``CheckpointError`` (a ValueError)
that starts with the file it is about.

Our components are diffusers ``ModelMixin``s (``VideoDiT.from_pretrained(folder, subfolder="video_dit")`` works as
for any diffusers model). The pipeline loads them through the checks above: built on the ``meta`` device (no memory),
keys and shapes compared with the safetensors headers (strict: missing, unexpected and mis-shaped tensors are listed,
first 10 of each), then each tensor read on its own straight into the target device and dtype by diffusers'
``load_model_dict_into_meta`` (which honours ``_keep_in_fp32_modules``), so no second copy of the weights and no
whole shard is ever held in host memory. ``save_pretrained`` writes the same layout (``ModelMixin.save_pretrained``
for our components).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open

from mova import validation
from mova.config import LIBRARY_LIMITS, CheckpointError, check_library_config, log_unused_keys, naming_file
from mova.models.audio_dit import AudioDiT
from mova.models.audio_vae import AudioVAE
from mova.models.bridge import DualTowerBridge
from mova.models.video_dit import VideoDiT
from mova.quantization import (TEXT_ENCODER_KEEP, QuantizedLinear, prepare_on_meta, quantize_, quantize_weight,
                               saved_format)

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
DEFAULT_MAX_SHARD_BYTES = 10 * 1024**3  # diffusers' default shard size
# quantize_folder's shards: a reader maps one shard at a time (safetensors memory-maps it, and the pages it has read
# count in the process's resident memory until the shard is closed), so small shards keep that share small
QUANTIZED_SHARD_BYTES = 2 * 1024**3

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
# What a model_index.json entry may name per component: (library or None for any, allowed class names). Our
# components and the scheduler are ours whatever module the entry names (the official code's, never imported);
# the library ones are exactly the classes this pipeline drives, so no other attribute of diffusers/transformers
# is ever looked up.
EXPECTED_CLASSES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    **{name: (None, (entry[1],)) for name, (_, entry) in NATIVE_COMPONENTS.items()},
    "video_vae": ("diffusers", ("AutoencoderKLWan",)),
    "text_encoder": ("transformers", ("UMT5EncoderModel",)),
    "tokenizer": ("transformers", ("T5TokenizerFast", "T5Tokenizer")),
    "scheduler": (None, ("FlowMatchPairScheduler",)),
}
MAX_TEXT_TOKENS = 4096  # ceiling of model_index.json max_sequence_length [MOVA 512, the demo 64]
MAX_SIDE = 4096  # ceiling of default_height / default_width, as for a request's height and width
# What diffusers, transformers and tokenizers raise on a folder they cannot load (turned into a CheckpointError)
LIBRARY_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError, IndexError, AttributeError, SafetensorError)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # weight formats that run code when read


# --------------------------------------------------------------------------------------------------------
# 1. Folder reading and verification
# --------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; CheckpointError naming the file when it is missing or not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(path, f"is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "must hold a JSON object")
    return data


def component_names(index: dict[str, Any]) -> list[str]:
    """The components of a model_index: the entries whose value is a [library, class] pair of strings
    (other keys are pipeline settings such as ``boundary_ratio`` or our ``resolutions``)."""
    return [n for n, v in index.items() if not n.startswith("_") and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, str) for x in v)]


def listed_components(index: dict[str, Any]) -> list[str]:
    """Every component a model_index names: the MOVA ones present (whatever their entry holds) and any other entry
    that looks like one."""
    return list(dict.fromkeys([*(n for n in (*REQUIRED_COMPONENTS, "video_dit_2") if n in index),
                               *component_names(index)]))


def read_model_index(folder: str | os.PathLike) -> dict[str, Any]:
    """``model_index.json`` of a checkpoint folder, checked once for everything the pipeline later reads from it:
    the components MOVA needs, each naming the class expected for it, and the values of the pipeline settings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder {str(folder)!r} does not exist")
    path = folder / "model_index.json"
    check_links(folder, path.name)
    index = read_json(path)
    missing = [c for c in REQUIRED_COMPONENTS if c not in index]
    if missing:
        raise CheckpointError(path, f"lacks component(s) {missing}; a MOVA checkpoint needs "
                                    f"{list(REQUIRED_COMPONENTS)} (video_dit_2 optional)")
    for name in listed_components(index):
        check_component_entry(name, index[name], path)
        if not (folder / name).is_dir():
            raise CheckpointError(folder / name, f"is missing: component {name!r} is listed in model_index.json")
    check_index_settings(index, path)
    return index


def check_component_entry(name: str, entry: Any, path: Path) -> None:
    """A model_index.json component entry must name the class the pipeline expects for that component."""
    if name not in EXPECTED_CLASSES:
        raise CheckpointError(path, f"names an unknown component {name!r}; known: {sorted(EXPECTED_CLASSES)}")
    library, classes = EXPECTED_CLASSES[name]
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)) \
            or entry[1] not in classes or (library is not None and entry[0] != library):
        allowed = " or ".join(repr([library or "<module>", c]) for c in classes)
        raise CheckpointError(path, f"{name}={entry!r} is invalid: expected {allowed} (the class MOVA Studio "
                                    "loads for this component)")


def check_index_settings(index: dict[str, Any], path: Path) -> None:
    """The pipeline settings of a model_index.json (defaults for a generation, the expert boundary), each with the
    limits a request obeys (``mova.validation``); CheckpointError naming the key, the value and what is allowed."""
    v = validation
    checks = {
        "boundary_ratio": lambda k, x: v.real(k, x, 0.0, 1.0),
        "default_height": lambda k, x: v.integral(k, x, 1, MAX_SIDE),
        "default_width": lambda k, x: v.integral(k, x, 1, MAX_SIDE),
        "default_num_frames": lambda k, x: v.integral(k, x, 1, v.MAX_FRAMES),
        "max_num_frames": lambda k, x: v.integral(k, x, 1, v.MAX_FRAMES),
        "default_fps": lambda k, x: v.real(k, x, v.MIN_FPS, v.MAX_FPS),
        "default_num_inference_steps": lambda k, x: v.integral(k, x, 1, v.MAX_STEPS),
        "default_text_scale": lambda k, x: v.real(k, x, 0.0, v.MAX_GUIDANCE_SCALE),
        "max_sequence_length": lambda k, x: v.integral(k, x, 1, MAX_TEXT_TOKENS),
        "default_negative_prompt": _string,
        # the cost ceilings of one request (MOVAPipeline.model_info), for an operator to raise or lower
        "max_pixels": lambda k, x: v.integral(k, x, 1, v.MAX_PIXELS_PER_FRAME),
        "max_duration_s": lambda k, x: v.real(k, x, 0.0, v.MAX_DURATION_S, low_open=True),
        "max_work": lambda k, x: v.real(k, x, 0.0, 1e18, low_open=True),
    }
    with naming_file(path):
        values = {key: check(key, index[key]) for key, check in checks.items() if key in index}
        if "default_height" in values and "default_width" in values \
                and values["default_height"] * values["default_width"] > v.MAX_PIXELS_PER_FRAME:
            raise ValueError(f"default_height×default_width={values['default_height']}×{values['default_width']} "
                             f"is invalid: expected at most {v.MAX_PIXELS_PER_FRAME} pixels per frame")
        if "default_num_frames" in values or "default_fps" in values:
            # with MOVAPipeline.model_info's defaults (193 frames, 24 fps) for the one not given
            v.clip_duration(values.get("default_num_frames", 193), values.get("default_fps", 24.0))


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key}={value!r} is invalid: expected a string")
    return value


def check_links(folder: str | os.PathLike, name: str) -> None:
    """Refuse symbolic links under ``folder/name`` that lead outside the checkpoint folder (a checkpoint could
    otherwise make us read any file of the machine). A Hugging Face cache snapshot, whose files link into the
    repository's ``blobs/`` next to ``snapshots/``, is allowed those links."""
    root = Path(folder).resolve()
    roots = [root]
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        roots.append((root.parent.parent / "blobs").resolve())
    pending, seen = [Path(folder) / name], set()
    while pending:
        path = pending.pop()
        if path.is_symlink():
            target = path.resolve()
            if not any(target == r or target.is_relative_to(r) for r in roots):
                raise CheckpointError(path, f"is a symbolic link to {os.readlink(path)!r}, which leads outside the "
                                            f"checkpoint folder; copy the file into {str(root)!r} instead")
        if path.is_dir() and path.resolve() not in seen:  # a linked folder inside is followed, once
            seen.add(path.resolve())
            pending.extend(path.iterdir())


def weight_files(subfolder: Path) -> list[Path]:
    """The safetensors files of a component: a single file or the shards named in its index (plain file names
    next to the index). Pickle-format weights (``.bin``, ``.pt`` ...) are never read: a folder holding only those
    is refused, naming them."""
    for single, index_name in ((WEIGHTS_NAME, WEIGHTS_INDEX_NAME), TRANSFORMERS_WEIGHTS):
        if (subfolder / single).is_file():
            return [subfolder / single]
        if (subfolder / index_name).is_file():
            index_path = subfolder / index_name
            weight_map = read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(index_path, "has no weight_map")
            names = {n if isinstance(n, str) else repr(n) for n in weight_map.values()}
            outside = sorted(repr(n) for n in names if Path(n).name != n or n in ("", ".", ".."))
            if outside:
                raise CheckpointError(index_path, f"names shard(s) {', '.join(outside[:10])} that are not file names "
                                                  "in its folder (shards sit next to the index)")
            files = sorted(subfolder / n for n in names)
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(index_path, f"names shard(s) that are missing: {absent[:10]}")
            return files
    pickles = sorted(p.name for p in subfolder.iterdir() if p.suffix in PICKLE_SUFFIXES) if subfolder.is_dir() else []
    found = f"; {pickles} are pickle files, which are never loaded (convert them with safetensors)" if pickles else ""
    raise CheckpointError(subfolder, f"no safetensors weights (expected {WEIGHTS_NAME}, {TRANSFORMERS_WEIGHTS[0]} or "
                                     f"a sharded one's .index.json; only safetensors are loaded){found}")


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
    """Names, shapes and dtypes of every tensor of a component, read from the safetensors headers only.
    CheckpointError names the file that is not a readable safetensors file (truncated, garbage)."""
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files(subfolder):
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    tensors[key] = TensorInfo(tuple(sl.get_shape()), sl.get_dtype(), file)
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None
    return tensors


def _unreadable(file: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(file, f"is not a readable safetensors file (truncated or corrupt?): {exc}")


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


def compare_keys(module: nn.Module, tensors: dict[str, TensorInfo], ignore: Iterable[str] = (),
                 shapes: dict[str, tuple[int, ...]] | None = None) -> KeyReport:
    """Strict comparison of a module's state dict (keys, shapes) with a checkpoint's tensors. Parameters
    tied to another parameter (same tensor) count as present when any of their names is present; keys in
    ``ignore`` (made by the loader itself: the scales of quantise-on-load) are not looked for; ``shapes`` are the
    checkpoint shapes of keys the module stores in another (a quantise-on-load weight packed two per byte)."""
    ignore = set(ignore)
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items() if k not in ignore}
    expected.update((k, tuple(v)) for k, v in (shapes or {}).items() if k in expected)
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


def build_on_meta(cls: type[nn.Module], config: dict[str, Any]) -> nn.Module:
    """``cls.from_config(config)`` with every parameter on the meta device (no memory)."""
    with torch.device("meta"):
        return cls.from_config(config)  # type: ignore[attr-defined]


def native_config(cls: type, subfolder: Path, tensors: dict[str, TensorInfo] | None = None) -> dict:
    """The component's config (``config.json``; the scheduler's ``scheduler_config.json``), checked: its
    ``_class_name`` and every value (``mova.models.checks``). For the audio VAE the weight-norm storage form is taken
    from the checkpoint keys (``weight_g``/``weight_v`` or plain ``weight``)."""
    path = subfolder / cls.config_name  # type: ignore[attr-defined]
    config = read_json(path)
    with naming_file(path):
        name = config.get("_class_name")
        if name is not None and name not in cls.class_names():  # type: ignore[attr-defined]
            raise ValueError(f"_class_name is {name!r}, expected {' or '.join(map(repr, cls.class_names()))}")
        cls.check_config(config)  # type: ignore[attr-defined]
    # keys the class does not take (a later release's fields): named once with the file, then dropped, as diffusers does
    known = cls.config_defaults()  # type: ignore[attr-defined]
    unused = sorted(k for k in config if not k.startswith("_") and k not in known and k != "quantization_config")
    log_unused_keys(cls.__name__, unused, path, quiet=getattr(cls, "_quiet_config_keys", ()))
    config = {k: v for k, v in config.items() if k not in unused and k != "quantization_config"}  # load_native's
    if cls is AudioVAE and tensors is not None:
        config["use_weight_norm"] = any(k.endswith(".weight_v") for k in tensors)
    return config


class _Tensors(Mapping):
    """The named tensors of one open safetensors file, each read only when asked for (a lazy state dict)."""

    def __init__(self, handle: Any, keys: list[str]):
        self.handle, self.keys_ = handle, keys

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.handle.get_tensor(key)

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def load_weights(module: nn.Module, tensors: dict[str, TensorInfo], device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, quantized: dict[str, QuantizedLinear] | None = None,
                 quantize: str | None = None) -> None:
    """Fill a meta-device module with the checkpoint's tensors on ``device``: diffusers' ``load_model_dict_into_meta``
    casts each to ``dtype`` (the module's ``_keep_in_fp32_modules`` stay float32) and places it, one tensor at a
    time, as they are read. (``ModelMixin.from_pretrained`` reads a whole shard — up to 10 GB — before placing any of
    it; read this way, host memory holds one tensor.) The weights of ``quantized`` modules (by path, from
    ``quantization.prepare_on_meta``) are placed as stored — or, with ``quantize``, quantised to that format on
    ``device`` as each is read."""
    from diffusers.models.model_loading_utils import load_model_dict_into_meta

    quantized = quantized or {}
    keep = fp32_modules(module, dtype)
    for file, keys in _by_file(tensors).items():
        narrow = {k for k in keys if k.rsplit(".", 1)[0] in quantized and not k.endswith(".bias")}
        plain = [k for k in keys if k not in narrow]
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                load_model_dict_into_meta(module, _Tensors(f, plain), dtype=dtype, keep_in_fp32_modules=keep,
                                          device_map={"": torch.device(device)})
                for key in narrow:
                    path, name = key.rsplit(".", 1)
                    tensor = f.get_tensor(key).to(device)
                    if quantize:
                        weight, scale = quantize_weight(tensor, quantize)
                        quantized[path].weight = nn.Parameter(weight, requires_grad=False)
                        quantized[path].weight_scale = nn.Parameter(scale, requires_grad=False)
                    else:
                        setattr(quantized[path], name, nn.Parameter(tensor, requires_grad=False))
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None


def _by_file(tensors: dict[str, TensorInfo]) -> dict[Path, list[str]]:
    """The tensor names grouped by the safetensors file holding them (each file is opened once)."""
    by_file: dict[Path, list[str]] = {}
    for key, info in tensors.items():
        by_file.setdefault(info.file, []).append(key)
    return by_file


def _native_files(cls: type[nn.Module], subfolder: Path, quantization: str | None) -> tuple[dict, str | None]:
    """The checked tensor headers of a component folder and the format its weights are stored in (None: full
    precision); ValueError when the folder is missing or stored in a format other than ``quantization``."""
    if not subfolder.is_dir():
        raise ValueError(f"component folder {str(subfolder)!r} does not exist")
    check_links(subfolder.parent, subfolder.name)
    tensors = checkpoint_tensors(subfolder)
    config_path = subfolder / cls.config_name  # type: ignore[attr-defined]
    with naming_file(config_path):
        stored = saved_format(read_json(config_path))
        if stored and quantization and stored != quantization:
            raise ValueError(f"the weights are stored as {stored}; quantization={quantization!r} asks for another "
                             f"format (load it with quantization={stored!r} or from the full-precision folder)")
    return tensors, stored


def empty_native(cls: type[nn.Module], subfolder: str | os.PathLike, quantization: str | None = None) -> nn.Module:
    """The component of ``subfolder`` built on the meta device (config checked, no weights), its block linears
    already :class:`~mova.quantization.QuantizedLinear` when stored or asked quantised: what :func:`load_native`
    fills (a lazily loaded expert is kept so between loads)."""
    subfolder = Path(subfolder)
    return _empty(cls, subfolder, *_native_files(cls, subfolder, quantization), quantization)


def _empty(cls: type[nn.Module], subfolder: Path, tensors: dict[str, TensorInfo], stored: str | None,
           quantization: str | None) -> nn.Module:
    module = build_on_meta(cls, native_config(cls, subfolder, tensors))
    if stored or quantization:
        prepare_on_meta(module, stored or quantization)
    return module


def _check_keys(module: nn.Module, subfolder: Path, tensors: dict[str, TensorInfo],
                stored: str | None) -> dict[str, QuantizedLinear]:
    """Strict key/shape check of ``module`` against the folder's tensors (the scales are the loader's own when
    it quantises on load); returns the module's quantised linears by path."""
    quantized = {n: m for n, m in module.named_modules() if isinstance(m, QuantizedLinear)}
    if stored:
        report = compare_keys(module, tensors)
    else:  # the folder holds the full-precision weights the loader quantises
        report = compare_keys(module, tensors, ignore={f"{n}.weight_scale" for n in quantized},
                              shapes={f"{n}.weight": (m.out_features, m.in_features) for n, m in quantized.items()})
    if not report.ok:
        raise CheckpointError(subfolder, f"checkpoint does not match {type(module).__name__}: {report.describe()}")
    return quantized


def load_native(cls: type[nn.Module], subfolder: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, quantization: str | None = None,
                module: nn.Module | None = None) -> nn.Module:
    """Load one of our components from an official-layout subfolder, strictly (``dtype=None``: float32).
    ``quantization`` (``mova.quantization``) stores the block linears in that format, quantised as they are read;
    a folder saved quantised (its ``config.json`` says so) loads in its own format. ``module``: fill this
    meta-device module (built by an earlier call, then emptied) instead of building one.

    Raises:
        ValueError: missing folder/config/weights, bad config fields, any key/shape difference, or a quantised
        folder asked to load in another format.
    """
    subfolder = Path(subfolder)
    tensors, stored = _native_files(cls, subfolder, quantization)
    module = module if module is not None else _empty(cls, subfolder, tensors, stored, quantization)
    quantized = _check_keys(module, subfolder, tensors, stored)
    fmt = stored or quantization
    load_weights(module, tensors, device, dtype, quantized, quantize=None if stored else fmt)
    module.eval()
    logger.info("loaded %s from %s (%d tensors, %s%s)", cls.__name__, subfolder, len(tensors), dtype or "float32",
                f", {fmt} block weights" if fmt else "")
    return module


@torch.no_grad()
def refill_native(module: nn.Module, subfolder: str | os.PathLike, quantization: str | None = None) -> nn.Module:
    """Overwrite a loaded component's tensors in place with those of ``subfolder`` — another checkpoint of the same
    class, config and format (the keys and shapes are checked strictly) — one tensor at a time, each cast to the
    dtype and device of the tensor it replaces (a lazily loaded expert takes over the other expert's host and GPU
    buffers: no allocation). ``quantization`` as for :func:`load_native`."""
    subfolder = Path(subfolder)
    tensors, stored = _native_files(type(module), subfolder, quantization)
    quantized = _check_keys(module, subfolder, tensors, stored)
    targets = module.state_dict(keep_vars=True)
    fmt = None if stored else quantization
    for file, keys in _by_file(tensors).items():
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for key in keys:
                    path, name = key.rsplit(".", 1)
                    tensor = f.get_tensor(key)
                    if fmt and path in quantized and name == "weight":
                        weight, scale = quantize_weight(tensor.to(targets[key].device), fmt)
                        targets[key].copy_(weight)
                        targets[f"{path}.weight_scale"].copy_(scale)
                    else:
                        targets[key].copy_(tensor)
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None
    logger.info("refilled %s from %s (%d tensors)", type(module).__name__, subfolder, len(tensors))
    return module


def fp32_modules(module: nn.Module, dtype: torch.dtype | None) -> list[str]:
    """The module's ``_keep_in_fp32_modules`` when ``dtype`` is narrower than float32 (else none: a float64 model
    stays float64 throughout)."""
    narrow = dtype is not None and dtype.is_floating_point and torch.finfo(dtype).bits < 32
    return list(getattr(module, "_keep_in_fp32_modules", None) or []) if narrow else []


def cast_(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module.to(dtype)`` in place, keeping its ``_keep_in_fp32_modules`` in float32 (``fp32_modules``). (Plain
    ``nn.Module.to``: diffusers' override warns about exactly the modules this keeps in float32.)"""
    nn.Module.to(module, dtype)
    keep = fp32_modules(module, dtype)
    for name, param in module.named_parameters():
        if any(k in name.split(".") for k in keep):
            param.data = param.data.float()
    return module


def save_native(module: nn.Module, subfolder: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                dtype: torch.dtype | None = None) -> None:
    """``ModelMixin.save_pretrained``: ``config.json`` and the weights (one file, or shards plus an index above
    ``max_shard_bytes``); ``dtype`` casts the module in place first (``cast_``)."""
    if dtype is not None:
        cast_(module, dtype)
    module.save_pretrained(subfolder, safe_serialization=True, max_shard_size=max_shard_bytes)


# --------------------------------------------------------------------------------------------------------
# 3. Library components (diffusers VAE, transformers text encoder and tokenizer, our scheduler)
# --------------------------------------------------------------------------------------------------------


# (module, class) this pipeline loads for each library component, imported on first use
LIBRARY_CLASSES = {"scheduler": ("mova.scheduler", "FlowMatchPairScheduler"),
                   "video_vae": ("diffusers", "AutoencoderKLWan"), "text_encoder": ("transformers", "UMT5EncoderModel"),
                   "tokenizer": ("transformers", "AutoTokenizer")}


def library_class(name: str):
    """The class this pipeline loads for a library component (``LIBRARY_CLASSES``; no other is ever looked up)."""
    if name not in LIBRARY_CLASSES:
        raise ValueError(f"{name!r} is not a library component; known: {sorted(LIBRARY_COMPONENTS)}")
    module, attr = LIBRARY_CLASSES[name]
    return getattr(importlib.import_module(module), attr)


def library_config(name: str, subfolder: Path) -> dict[str, Any]:
    """``config.json`` of the video VAE or the text encoder, with its sizes checked (``LIBRARY_LIMITS``) before
    diffusers or transformers build anything from it."""
    path = subfolder / "config.json"
    config = read_json(path)
    with naming_file(path):
        check_library_config(name, config)
    return config


def load_library_component(name: str, entry: Any, subfolder: Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype | None = None):
    """Load the scheduler, tokenizer, video VAE or text encoder. The weights of the last two are read from
    safetensors only: their headers are checked first (every file named when unreadable) and the library is told
    ``use_safetensors=True``. Any failure is a CheckpointError naming the folder."""
    check_component_entry(name, entry, subfolder.parent / "model_index.json")
    check_links(subfolder.parent, subfolder.name)
    cls = library_class(name)
    if name == "scheduler":
        return cls.from_config(native_config(cls, subfolder))
    if name == "tokenizer":
        try:
            return cls.from_pretrained(subfolder, local_files_only=True)
        except Exception as exc:  # the tokenizers library raises a bare Exception for a malformed tokenizer.json
            raise CheckpointError(subfolder, f"cannot load the tokenizer: {exc}") from exc
    library_config(name, subfolder)
    checkpoint_tensors(subfolder)
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype" if name == "text_encoder" else "torch_dtype"] = dtype
    try:
        model, info = cls.from_pretrained(subfolder, output_loading_info=True, **kwargs)
    except LIBRARY_ERRORS as exc:
        raise CheckpointError(subfolder, f"cannot load {cls.__name__}: {exc}") from exc
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')}: {sorted(map(str, v))[:10]}" for k, v in problems.items())
        raise CheckpointError(subfolder, f"checkpoint does not match {cls.__name__}: {detail}")
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------------
# 4. Whole folders
# --------------------------------------------------------------------------------------------------------


QUANTIZED_COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "text_encoder")


def load_components(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    names: Iterable[str] | None = None, quantization: str | None = None) -> dict[str, Any]:
    """Load every component of a checkpoint folder (or only ``names``). Returns {name: object}, plus the
    parsed ``model_index`` under the key ``"model_index"``. ``quantization``: the weight format of the
    ``QUANTIZED_COMPONENTS`` (``mova.quantization``)."""
    folder = Path(folder)
    index = read_model_index(folder)
    wanted = component_names(index)
    if names is not None:
        wanted = [n for n in wanted if n in set(names)]
    out: dict[str, Any] = {"model_index": index}
    for name in wanted:  # refuse a broken folder before loading anything: every link, config and header
        check_links(folder, name)
        if name in NATIVE_COMPONENTS:
            native_config(NATIVE_COMPONENTS[name][0], folder / name, checkpoint_tensors(folder / name))
        elif name in LIBRARY_LIMITS:
            library_config(name, folder / name)
            checkpoint_tensors(folder / name)
        elif name == "scheduler":
            native_config(library_class(name), folder / name)
    for name in wanted:
        out[name] = load_component(folder, index, name, device, dtype, quantization)
    return out


def load_component(folder: Path, index: dict[str, Any], name: str, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None, quantization: str | None = None) -> Any:
    """One component of a checked folder (``load_components``), its weights in ``quantization`` where it applies."""
    fmt = quantization if name in QUANTIZED_COMPONENTS else None
    if name in NATIVE_COMPONENTS:
        return load_native(NATIVE_COMPONENTS[name][0], folder / name, device, dtype, fmt)
    module = load_library_component(name, index[name], folder / name, device, dtype)  # no other names get here
    return quantize_component(name, module, fmt)


def quantize_component(name: str, module: nn.Module, quantization: str | None) -> nn.Module:
    """``module`` (the component ``name``, built or loaded in full precision) with its block weights stored as
    ``quantization`` in place where ``name`` is one of ``QUANTIZED_COMPONENTS`` (the text encoder's ``wo`` kept)."""
    if quantization and name in QUANTIZED_COMPONENTS:
        quantize_(module, quantization, keep=TEXT_ENCODER_KEEP)
    return module


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
            weights = {"safe_serialization": True, "max_shard_size": max_shard_bytes} \
                if name in ("video_vae", "text_encoder") else {}
            obj.save_pretrained(folder / name, **weights)
            cls_name = "T5TokenizerFast" if name == "tokenizer" and "T5" in type(obj).__name__ else type(obj).__name__
            index[name] = LIBRARY_COMPONENTS[name] if name == "scheduler" else [LIBRARY_COMPONENTS[name][0], cls_name]
        else:
            raise ValueError(f"unknown component {name!r}")
    with open(folder / "model_index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return folder


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def quantize_folder(folder: str | os.PathLike, out: str | os.PathLike, fmt: str) -> Path:
    """Write ``folder`` to ``out`` with the block weights of our ``QUANTIZED_COMPONENTS`` stored as ``fmt``
    (``mova.quantization``; loads directly, without quantising again), one component at a time (host memory holds
    one quantised component); their other tensors keep the dtype they are stored in. The other components are
    linked (or copied) unchanged; the text encoder among them: it is quantised on load only."""
    import shutil

    folder, out = Path(folder), Path(out)
    index = read_model_index(folder)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {str(out)!r} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    for name in component_names(index):
        if name in NATIVE_COMPONENTS and name in QUANTIZED_COMPONENTS:
            stored = {info.dtype for info in checkpoint_tensors(folder / name).values()}
            dtype = torch.bfloat16 if "BF16" in stored else torch.float16 if "F16" in stored else None  # as stored
            module = load_native(NATIVE_COMPONENTS[name][0], folder / name, "cpu", dtype, fmt)
            save_native(module, out / name, QUANTIZED_SHARD_BYTES)
            del module
        else:
            shutil.copytree(folder / name, out / name, copy_function=_link_or_copy)
        logger.info("quantize: %s done", name)
    shutil.copy2(folder / "model_index.json", out / "model_index.json")
    return out


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (no second copy of the weights on disk), else a copy."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
