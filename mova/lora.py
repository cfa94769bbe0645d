"""LoRA adapters for the MOVA denoiser: file format, injection (peft), scale, merge/unmerge, unload.

An adapter is a folder (or just its weights file) holding

* ``adapter_model.safetensors`` — keys ``{component}.{module path}.lora_A.weight`` / ``.lora_B.weight``
  (e.g. ``video_dit.blocks.0.self_attn.q.lora_A.weight``), the released MOVA naming (docs/model.md#lora-recipes) without
  the peft adapter name;
* ``adapter_config.json`` — ``rank``, ``alpha``, ``dropout``, ``target_modules``, ``components``, ``base_model``.
  Without it, the rank is read from the weights and α = rank (scaling 1).

A LoRA layer computes ``W x + scale·(α/r)·B A x``; ``scale`` (default 1) is the user's strength knob. Loading:

    from mova.lora import load_lora
    adapter = load_lora(pipe, "runs/lora/final", scale=0.8)   # pipe: MOVAPipeline (or a components dict)
    adapter.set_scale(0.5); adapter.merge(); adapter.unmerge(); adapter.unload()

``train/lora.py`` injects adapters with the same :func:`inject_lora` and writes files with :func:`save_lora`, so a
trained adapter loads here bit for bit. ``merge`` adds B·A into the base weights in place (peft), so ``unmerge``
restores them up to float rounding (W + Δ − Δ); ``set_scale(0)`` without merging is exactly the base model.
Not supported with ``offload="sequential"`` (the block offloading hooks would not move the adapter weights).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_NAME = "default"
COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
DEFAULT_TARGET_MODULES = tuple(f"{attn}.{p}" for attn in ("self_attn", "cross_attn", "inner") for p in "qkvo")
_KEY = re.compile(r"^(?P<component>[a-z_0-9]+)\.(?P<path>.+)\.(?P<ab>lora_[AB])(?:\.[^.]+)?\.weight$")


@dataclasses.dataclass(kw_only=True)
class LoRASpec:
    """What an adapter file describes. ``target_modules``: module-path suffixes that carry an adapter."""

    rank: int
    alpha: float
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    components: tuple[str, ...] = COMPONENTS
    base_model: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank={self.rank!r} is invalid: expected a positive integer")
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a positive number")
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad:
            raise ValueError(f"components={list(self.components)!r} is invalid: expected names from {list(COMPONENTS)}")
        self.target_modules = tuple(self.target_modules)
        self.components = tuple(self.components)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(target_modules=list(self.target_modules), components=list(self.components), format="mova-lora")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoRASpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


# ----------------------------------------------------------------------------------------------------------------------
# Injection (peft) and the layers it creates
# ----------------------------------------------------------------------------------------------------------------------


def target_regex(target_modules: Iterable[str]) -> str:
    """peft ``target_modules`` regex matching module paths that equal or end with ``.<suffix>``."""
    alternatives = "|".join(re.escape(t) for t in target_modules)
    return rf"^(?:.*\.)?(?:{alternatives})$"


def inject_lora(module: nn.Module, spec: LoRASpec, adapter_name: str = ADAPTER_NAME,
                paths: Iterable[str] | None = None) -> list[str]:
    """Wrap every matching ``nn.Linear`` of ``module`` (one component) in a peft LoRA layer, in place.

    Matching: module paths ending with one of ``spec.target_modules``, or exactly ``paths`` when given (loading
    a file wraps exactly the layers it has tensors for). B starts at zero, so the module's outputs are
    unchanged until the adapter is trained or loaded. Returns the wrapped paths; ValueError when none match.
    """
    from peft import LoraConfig, inject_adapter_in_model

    pattern = target_regex(spec.target_modules) if paths is None else \
        "^(?:" + "|".join(re.escape(p) for p in paths) + ")$"
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=pattern, bias="none")
    try:
        inject_adapter_in_model(config, module, adapter_name=adapter_name)
    except ValueError as exc:
        raise ValueError(f"no module of {type(module).__name__} matches lora target_modules "
                         f"{list(spec.target_modules)} ({exc})") from None
    return [name for name, m in module.named_modules() if _is_lora_layer(m)]


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def lora_layers(modules: Iterable[nn.Module]) -> list[nn.Module]:
    return [m for module in modules for m in module.modules() if _is_lora_layer(m)]


def lora_state_dict(components: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Adapter tensors of injected components in file naming (``{component}.{path}.lora_A.weight``)."""
    return adapter_keys({f"{name}.{k}": v for name, module in components.items()
                         for k, v in module.state_dict().items() if ".lora_" in k})


def adapter_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``{component}.{path}.lora_A[.{adapter}].weight`` keys (any peft adapter name) to file naming,
    dropping non-adapter keys."""
    out = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match and match["component"] in COMPONENTS:
            out[f"{match['component']}.{match['path']}.{match['ab']}.weight"] = value
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------------


def save_lora(folder: str | os.PathLike, state: Mapping[str, torch.Tensor], spec: LoRASpec,
              dtype: torch.dtype | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in adapter_keys(state).items():
        t = v.detach().cpu()
        tensors[k] = (t.to(dtype) if dtype is not None else t).contiguous()
    if not tensors:
        raise ValueError("no LoRA tensors to save (keys must look like '<component>.<path>.lora_A.weight')")
    save_file(tensors, folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    return folder


def read_lora(path: str | os.PathLike) -> tuple[LoRASpec, dict[str, torch.Tensor]]:
    """(spec, tensors) of an adapter folder or weights file (safetensors only)."""
    path = Path(path)
    weights = path / ADAPTER_WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise ValueError(f"LoRA adapter not found: {str(weights)!r} (expected a folder with {ADAPTER_WEIGHTS} "
                         "or a .safetensors file)")
    with safe_open(weights, framework="pt", device="cpu") as f:
        state = adapter_keys({k: f.get_tensor(k) for k in f.keys()})
    if not state:
        raise ValueError(f"{weights} holds no LoRA tensors (keys '<component>.<path>.lora_A.weight')")
    config_file = weights.parent / ADAPTER_CONFIG
    components = tuple(sorted({k.split(".", 1)[0] for k in state}, key=COMPONENTS.index))
    if config_file.is_file():
        spec = LoRASpec.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
    else:  # a bare weights file: rank from the shapes, alpha = rank
        rank = next(v.shape[0] for k, v in state.items() if k.endswith("lora_A.weight"))
        spec = LoRASpec(rank=int(rank), alpha=float(rank))
    return dataclasses.replace(spec, components=components), state


def adapter_paths(state: Mapping[str, torch.Tensor], component: str) -> list[str]:
    """Module paths (inside ``component``) that an adapter state has tensors for."""
    prefix = f"{component}."
    return sorted({k[len(prefix):].rsplit(".lora_", 1)[0] for k in state if k.startswith(prefix)})


# ----------------------------------------------------------------------------------------------------------------------
# Loading into a pipeline
# ----------------------------------------------------------------------------------------------------------------------


def _components_of(target: Any) -> dict[str, nn.Module]:
    components = getattr(target, "components", target)
    if isinstance(target, nn.Module) and not isinstance(target, Mapping):  # a DualTowerDenoiser
        components = {"video_dit": target.video_dit, "video_dit_2": target.video_dit_2,
                      "audio_dit": target.audio_dit, "dual_tower_bridge": target.bridge}
    if not isinstance(components, Mapping):
        raise ValueError(f"cannot load LoRA into {type(target).__name__}: expected a MOVAPipeline, a "
                         "DualTowerDenoiser or a dict of components")
    return {k: v for k, v in components.items() if k in COMPONENTS and isinstance(v, nn.Module)}


class LoadedLoRA:
    """Handle on adapters loaded into components: strength, merge/unmerge, unload."""

    def __init__(self, components: dict[str, nn.Module], spec: LoRASpec, adapter_name: str, scale: float):
        self.components, self.spec, self.adapter_name = components, spec, adapter_name
        self.scale = 1.0
        self.set_scale(scale)

    @property
    def layers(self) -> list[nn.Module]:
        return lora_layers(self.components.values())

    def set_scale(self, scale: float) -> None:
        """Adapter strength: 0 = off, 1 = as trained. Unmerges first if merged."""
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise ValueError(f"scale={scale!r} is invalid: expected a number")
        merged = self.merged
        if merged:
            self.unmerge()
        for layer in self.layers:
            layer.set_scale(self.adapter_name, float(scale))
        self.scale = float(scale)
        if merged:
            self.merge()

    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self.layers)

    def merge(self) -> None:
        """Fold the adapters into the base weights (no extra matmuls at inference)."""
        for layer in self.layers:
            if not layer.merged:
                layer.merge(adapter_names=[self.adapter_name])

    def unmerge(self) -> None:
        for layer in self.layers:
            if layer.merged:
                layer.unmerge()

    def unload(self) -> None:
        """Remove the adapter layers, restoring the original modules (and weights, if merged)."""
        self.unmerge()
        for module in self.components.values():
            unload_lora(module)


def unload_lora(module: nn.Module) -> None:
    """Replace every peft LoRA layer under ``module`` by its base layer (and drop peft's bookkeeping attribute)."""
    for name, child in list(module.named_modules()):
        if not _is_lora_layer(child) or not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, child.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config


@torch.no_grad()
def load_lora(target: Any, path: str | os.PathLike, scale: float = 1.0,
              adapter_name: str = ADAPTER_NAME) -> LoadedLoRA:
    """Load an adapter into a :class:`~mova.pipeline.MOVAPipeline` (or a DualTowerDenoiser / components dict).

    Every tensor of the file must find its layer (strict): a mismatch lists the first offending keys.
    Adapter weights are kept in float32 next to base weights of any dtype (peft casts per call).
    """
    if getattr(target, "offload", "none") == "sequential":
        raise ValueError("load_lora with offload='sequential' is not supported (the block offloading hooks do not "
                         "know the adapter weights): load the pipeline with offload='none' or 'model'")
    spec, state = read_lora(path)
    components = _components_of(target)
    absent = [c for c in spec.components if c not in components]
    if absent:
        raise ValueError(f"LoRA {path} has adapters for {absent}, which this model does not have "
                         f"(it has {sorted(components)})")
    used = {c: components[c] for c in spec.components}
    for name, module in used.items():
        if lora_layers([module]):
            raise ValueError(f"{name} already carries a LoRA adapter; unload it first")
        inject_lora(module, spec, adapter_name, paths=adapter_paths(state, name))
    expected: dict[str, torch.Tensor] = {}
    for name, module in used.items():
        for key, param in module.named_parameters():
            if f".lora_A.{adapter_name}." in key or f".lora_B.{adapter_name}." in key:
                expected[f"{name}.{key.replace(f'.{adapter_name}.', '.')}"] = param
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mismatched:
        for module in used.values():
            unload_lora(module)
        raise ValueError(f"LoRA {path} does not fit this model: {len(missing)} missing {missing[:5]}, "
                         f"{len(unexpected)} unexpected {unexpected[:5]}, {len(mismatched)} shape mismatches "
                         f"{mismatched[:5]}")
    for key, param in expected.items():
        param.copy_(state[key].to(device=param.device, dtype=param.dtype))
        param.requires_grad_(False)
    logger.info("loaded LoRA %s (rank %d, alpha %g) into %s, %d tensors, scale %g", path, spec.rank, spec.alpha,
                list(used), len(state), scale)
    return LoadedLoRA(used, spec, adapter_name, scale)


@torch.no_grad()
def merged_weights(base: Mapping[str, torch.Tensor], adapter: Mapping[str, torch.Tensor], spec: LoRASpec,
                   component: str, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A component's state dict with the adapter folded in: ``W + scale·(α/r)·B A`` for every adapted Linear
    (computed in float32, returned in each base tensor's dtype). ``base``: the component's plain state dict."""
    out = dict(base)
    factor = scale * spec.alpha / spec.rank
    prefix = f"{component}."
    for key, a in adapter.items():
        if not (key.startswith(prefix) and key.endswith(".lora_A.weight")):
            continue
        path = key[len(prefix):-len(".lora_A.weight")]
        b = adapter[f"{component}.{path}.lora_B.weight"]
        w = base[f"{path}.weight"]
        out[f"{path}.weight"] = (w.float() + factor * (b.float() @ a.float())).to(w.dtype)
    return out
