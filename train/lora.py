"""LoRA fine-tuning: adapters (peft) on the denoiser's attention, their export and an optional merged export.

The format is that of :mod:`mova.lora` and the adapters are added with diffusers' ``PeftAdapterMixin.add_adapter``
(peft), so what trains here loads at inference with ``mova.lora.load_lora(pipe, path, scale)``. Default targets are q/k/v/o of DiT self-attention, DiT text
cross-attention and the bridge conditioners' attention (``lora.target_modules`` changes them); the recipes of the
released code (rank 16/α 16 with AdamW, rank 8/α 8 with 8-bit AdamW) are ``train/configs/lora*.yaml``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from mova.lora import LoRASpec, adapter_keys, lora_layers, merged_weights, save_lora
from train.config import LoRAConfig

logger = logging.getLogger(__name__)


def lora_spec(cfg: LoRAConfig, components: list[str], base_model: str = "") -> LoRASpec:
    return LoRASpec(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, target_modules=tuple(cfg.target_modules),
                    components=tuple(components), base_model=base_model)


def apply_lora(components: dict[str, nn.Module], spec: LoRASpec) -> int:
    """Inject adapters into ``spec.components`` and freeze everything but the adapters; returns the number of
    adapted layers. Outputs are unchanged (B = 0) until training moves the adapters."""
    total = 0
    for name, module in components.items():
        module.requires_grad_(False)
        if name in spec.components:
            module.add_adapter(spec.peft_config())
            wrapped = lora_layers([module])
            total += len(wrapped)
            for key, param in module.named_parameters():
                param.requires_grad_(".lora_" in key)
            logger.info("LoRA r=%d α=%g on %d layers of %s", spec.rank, spec.alpha, len(wrapped), name)
    return total


def export_adapter(folder: str | os.PathLike, state: dict[str, torch.Tensor], spec: LoRASpec,
                   dtype: torch.dtype | None = None) -> Path:
    """Write the adapter files from a trainable state dict keyed by denoiser FQNs
    (``video_dit.blocks.0.self_attn.q.lora_A.default.weight``)."""
    return save_lora(folder, adapter_keys(state), spec, dtype)


def merged_component_states(base: str | os.PathLike, state: dict[str, torch.Tensor], spec: LoRASpec
                            ) -> dict[str, dict[str, torch.Tensor]]:
    """Base weights of each adapted component (read from the base checkpoint) with the adapter folded in."""
    from safetensors.torch import load_file

    from mova.loading import weight_files

    adapter = adapter_keys(state)
    out = {}
    for component in spec.components:
        plain: dict[str, torch.Tensor] = {}
        for file in weight_files(Path(base) / component):
            plain.update(load_file(file))  # on the CPU
        out[component] = merged_weights(plain, adapter, spec, component)
    return out
