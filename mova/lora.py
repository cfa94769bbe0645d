"""LoRA adapters for the MOVA denoiser: the file format, and loading through diffusers' ``PeftAdapterMixin``.

An adapter is a folder (or just its weights file) holding

* ``adapter_model.safetensors`` — keys ``{component}.{module path}.lora_A.weight`` / ``.lora_B.weight``
  (e.g. ``video_dit.blocks.0.self_attn.q.lora_A.weight``), the released MOVA naming (docs/model.md#lora-recipes) without
  the peft adapter name;
* ``adapter_config.json`` — ``rank``, ``alpha``, ``dropout``, ``target_modules``, ``components``, ``base_model``.
  Without it, the rank is read from the weights and α = rank (scaling 1).

A LoRA layer computes ``W x + scale·(α/r)·B A x``; ``scale`` (default 1) is the user's strength knob. The model
classes are ``PeftAdapterMixin``s, so each component takes its share of the file with diffusers'
``load_lora_adapter(state, prefix=component)`` and the strength, merge and unload are its ``set_adapters``,
``fuse_lora`` / ``unfuse_lora`` and ``unload_lora``:

    adapter = pipe.load_lora("runs/lora/final", scale=0.8)   # or mova.lora.load_lora(pipe, ...)
    adapter.set_scale(0.5); adapter.merge(); adapter.unmerge(); adapter.unload()

``train/lora.py`` adds adapters with ``add_adapter`` and writes files with :func:`save_lora`, so a trained adapter
loads here bit for bit. ``merge`` adds B·A into the base weights in place, so ``unmerge`` restores them up to float
rounding (W + Δ − Δ); ``set_scale(0)`` without merging is exactly the base model. Not supported with
``offload="sequential"`` (the block streaming hooks would not move the adapter weights).
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

    def peft_config(self, paths: Iterable[str] | None = None):
        """The peft ``LoraConfig``: layers whose module path ends with one of ``target_modules``, or exactly
        ``paths`` (the layers an adapter file has tensors for)."""
        from peft import LoraConfig

        names = [re.escape(t) for t in self.target_modules] if paths is None else None
        pattern = rf"^(?:.*\.)?(?:{'|'.join(names)})$" if names else "^(?:" + "|".join(map(re.escape, paths)) + ")$"
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=pattern,
                          bias="none")


def adapter_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``{component}.{path}.lora_A[.{adapter}].weight`` keys (any peft adapter name) to file naming,
    dropping non-adapter keys."""
    out = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match and match["component"] in COMPONENTS:
            out[f"{match['component']}.{match['path']}.{match['ab']}.weight"] = value
    return out


def lora_layers(modules: Iterable[nn.Module]) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for module in modules for m in module.modules() if isinstance(m, BaseTunerLayer)]


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


def misfits(module: nn.Module, state: Mapping[str, torch.Tensor], component: str, rank: int) -> list[str]:
    """What in ``state`` (file keys) cannot be an adapter of ``module``: tensors for a module path that is not a
    Linear of it, shapes other than A [rank, in] / B [out, rank], an A without its B."""
    prefix = f"{component}."
    problems, paths = [], {}
    for key, value in state.items():
        if key.startswith(prefix):
            path, ab = key[len(prefix):].rsplit(".lora_", 1)
            paths.setdefault(path, {})[ab.split(".")[0]] = tuple(value.shape)
    for path, shapes in sorted(paths.items()):
        try:
            layer = module.get_submodule(path)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            problems.append(f"{prefix}{path}: not a linear layer of the model")
            continue
        want = {"A": (rank, layer.in_features), "B": (layer.out_features, rank)}
        for ab, shape in want.items():
            if shapes.get(ab) != shape:
                problems.append(f"{prefix}{path}.lora_{ab}.weight: {list(shapes[ab]) if ab in shapes else 'missing'}"
                                f" vs expected {list(shape)}")
    return problems


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
    """Handle on an adapter loaded into components (``PeftAdapterMixin``s): strength, merge/unmerge, unload."""

    def __init__(self, components: dict[str, nn.Module], spec: LoRASpec, adapter_name: str, scale: float):
        self.components, self.spec, self.adapter_name = components, spec, adapter_name
        self.scale, self.merged = 1.0, False
        self.set_scale(scale)

    def set_scale(self, scale: float) -> None:
        """Adapter strength: 0 = off, 1 = as trained. Unmerges first if merged."""
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise ValueError(f"scale={scale!r} is invalid: expected a number")
        merged = self.merged
        if merged:
            self.unmerge()
        for module in self.components.values():
            module.set_adapters(self.adapter_name, float(scale))
        self.scale = float(scale)
        if merged:
            self.merge()

    def merge(self) -> None:
        """Fold the adapter, at its scale, into the base weights (no extra matmuls at inference)."""
        if not self.merged:
            for module in self.components.values():
                module.fuse_lora(adapter_names=[self.adapter_name])
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            for module in self.components.values():
                module.unfuse_lora()
            self.merged = False

    def unload(self) -> None:
        """Remove the adapter layers, restoring the original modules (and weights, if merged)."""
        self.unmerge()
        for module in self.components.values():
            module.unload_lora()


@torch.no_grad()
def load_lora(target: Any, path: str | os.PathLike, scale: float = 1.0,
              adapter_name: str = ADAPTER_NAME) -> LoadedLoRA:
    """Load an adapter into a :class:`~mova.pipeline.MOVAPipeline` (or a DualTowerDenoiser / components dict).

    Every tensor of the file must fit its layer (strict: checked before anything is injected, the first offending
    keys listed). Adapter weights are kept in float32 next to base weights of any dtype (peft casts per call).
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
    problems = [p for name, module in used.items() for p in misfits(module, state, name, spec.rank)]
    if problems:
        raise ValueError(f"LoRA {path} does not fit this model: {len(problems)} problem(s): {problems[:5]}")
    for name, module in used.items():
        if lora_layers([module]):
            raise ValueError(f"{name} already carries a LoRA adapter; unload it first")
        paths = sorted({k[len(name) + 1:].rsplit(".lora_", 1)[0] for k in state if k.startswith(f"{name}.")})
        config = spec.peft_config(paths)
        metadata = {f"{name}.{k}": v for k, v in (("r", config.r), ("lora_alpha", config.lora_alpha), ("bias", "none"),
                                                 ("target_modules", config.target_modules), ("lora_dropout", 0.0))}
        device = next(module.parameters()).device
        shard = {k: v.to(device=device, dtype=torch.float32) for k, v in state.items() if k.startswith(f"{name}.")}
        module.load_lora_adapter(shard, prefix=name, adapter_name=adapter_name, metadata=metadata)
        for layer in lora_layers([module]):
            for param in layer.parameters():
                param.requires_grad_(False)
    logger.info("loaded LoRA %s (rank %d, alpha %g) into %s, %d tensors, scale %g", path, spec.rank, spec.alpha,
                list(used), len(state), scale)
    return LoadedLoRA(used, spec, adapter_name, scale)
