"""Speed levers applied from outside to unchanged models: regional compilation and the fp8 fast path.

``compile_repeated_blocks(models)`` compiles every repeated block (the ``_repeated_blocks`` classes of each model:
DiT blocks, bridge conditioners) with diffusers' ``ModelMixin.compile_repeated_blocks``. Static shapes give the
best kernels, so each (block kind, batch size, resolution) gets its own graph: the a2v/v2a conditioners, the two
towers' blocks and each CFG batch size need entries of their own, hence the raised recompile limit.

``fp8(models)`` is the ``precision="fp8"`` context of one generation: inside it, every ``nn.Linear`` of the repeated
blocks (attention projections and FFNs of both towers, the bridge's attention) runs as an e4m3 GEMM
(``torch._scaled_mm`` with rowwise scales: each activation row and each weight row scaled by its amax / 448, fast
accumulation, bf16 out), and the towers' self-attention runs on FlashAttention-3's e4m3 path
(``mova.attention.Fp8Attention`` in each ``SelfAttention``'s seam). The text cross-attention (512 keys) and the
bridge's attention (403 audio tokens on one side) are a few percent of the attention FLOPs and stay bf16. The
precision islands stay as they are: time embeddings, modulation, norms, RoPE tables, the heads and the text/time
MLPs outside the blocks. The weights are quantised per call (their bf16 copy stays the only stored
one; reading 37 GB of weights once per forward costs ~10 ms on an H200 against a ~4 s forward), so the setting is
per request. Compiled, the activation scaling fuses into the op that produces the activation. Weights loaded as
fp8 (``quantization="fp8"``, ``mova.quantization``) are stored in exactly that rowwise e4m3 form and are used as
they are; int8 ones are dequantised and quantised to e4m3 per call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn

from mova.attention import E4M3_MAX, Attention, Fp8Attention, _fa3_available
from mova.models.audio_dit import AudioDiT
from mova.models.layers import SelfAttention
from mova.quantization import QuantizedLinear, targets
from mova.settings import PRECISIONS

logger = logging.getLogger(__name__)


def compile_repeated_blocks(models: Iterable[nn.Module], **compile_kwargs: Any) -> None:
    """``model.compile_repeated_blocks(dynamic=False, **compile_kwargs)`` for each model, in place."""
    import torch._dynamo

    cfg = torch._dynamo.config
    key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, key, max(getattr(cfg, key), 64))
    compile_kwargs.setdefault("dynamic", False)
    for model in models:
        model.compile_repeated_blocks(**compile_kwargs)


# --------------------------------------------------------------------------------------------------------
# fp8
# --------------------------------------------------------------------------------------------------------


def fp8_unavailable(device: torch.device) -> str | None:
    """Why ``precision="fp8"`` cannot run on ``device`` (None when it can)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"it needs a CUDA GPU with fp8 matrix units (compute capability 8.9 or newer); this model is on {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        return f"it needs compute capability 8.9 or newer (Ada, Hopper); {torch.cuda.get_device_name(device)} has " \
               f"{capability[0]}.{capability[1]}"
    if not _fa3_available():
        return "its 8-bit attention needs FlashAttention-3 (pip install fa3-fwd, or a flash-attn build with hopper/)"
    return None


def _rowwise_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] → (e4m3 [M, K], float32 scale [M, 1]) with x ≈ e4m3 · scale."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-8) / E4M3_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn).contiguous(), scale  # cuBLASLt wants row-major


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               weight_scale: torch.Tensor | None = None, fast_accum: bool = True) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` as an e4m3 GEMM with rowwise scales; x [..., K], weight [N, K] → [..., N].
    A weight already stored in e4m3 (``mova.quantization``, scale [N, 1]) is used as it is. ``fast_accum``: Hopper's
    fp8 tensor cores keep their partial sums without promoting them to float32 every few K-tiles (cuBLASLt's
    FAST_ACCUM; what torchao's and fbgemm's fp8 inference GEMMs use), off: promoted (slower, a little closer)."""
    shape = x.shape
    xq, sx = _rowwise_e4m3(x.reshape(-1, shape[-1]))
    wq, sw = (weight, weight_scale) if weight.dtype == torch.float8_e4m3fn else _rowwise_e4m3(weight)
    out = torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw.t(), bias=bias, out_dtype=x.dtype,
                           use_fast_accum=fast_accum)
    return out.reshape(*shape[:-1], weight.shape[0])


class Fp8Linear(nn.Linear):
    """An ``nn.Linear`` (or a ``QuantizedLinear``) whose forward is :func:`fp8_linear`; built around the same
    parameters (same state-dict keys)."""

    @classmethod
    def around(cls, linear: nn.Linear | QuantizedLinear, fast_accum: bool = True) -> "Fp8Linear":
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_features, module.out_features = linear.in_features, linear.out_features
        module.weight, module.bias = linear.weight, linear.bias
        module.stored = linear if isinstance(linear, QuantizedLinear) else None
        module.fast_accum = fast_accum
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, scale = self.weight, None
        if self.stored is not None and weight.dtype == torch.float8_e4m3fn:
            scale = self.stored.weight_scale
        elif self.stored is not None:
            weight = self.stored.dequantized(x.dtype)
        return fp8_linear(x, weight, self.bias, scale, self.fast_accum)


def fp8_targets(models: Iterable[nn.Module]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) of every plain or quantised linear inside the models' repeated blocks
    (``quantization.targets``) whose sizes the fp8 GEMM takes (multiples of 16)."""
    return [(parent, attr, child) for model in models
            for parent, attr, child in targets(model, kinds=(nn.Linear, QuantizedLinear))
            if child.in_features % 16 == 0 and child.out_features % 16 == 0]


@contextlib.contextmanager
def fp8(models: Iterable[nn.Module], device: torch.device, *, linears: bool = True,
        attention: bool = True, fast_accum: bool = True, audio_attention: bool = True) -> Iterator[None]:
    """Run the models' blocks in fp8 (module docstring) inside the ``with``; ValueError naming ``precision`` when the
    machine cannot (never a silent downgrade). ``linears`` / ``attention`` off leave that half in bf16, ``fast_accum``
    off promotes the GEMMs' partial sums (:func:`fp8_linear`), ``audio_attention`` off keeps the audio tower's
    self-attention (403 tokens at full size) in bf16: for measuring what each part costs."""
    problem = fp8_unavailable(device)
    if problem:
        raise ValueError(f"precision='fp8' is unavailable here: {problem}; use precision='bf16'")
    models = list(models)
    swaps = [(parent, attr, old, Fp8Linear.around(old, fast_accum)) for parent, attr, old in fp8_targets(models)] \
        if linears else []
    if attention:  # each self-attention whose seam is the plain Attention (parallel inference may hold another)
        selfs = [m for model in models if audio_attention or not isinstance(model, AudioDiT)
                 for m in model.modules() if isinstance(m, SelfAttention)]
        seams = [m for m in selfs if type(m.attn) is Attention]
        swaps += [(m, "attn", m.attn, Fp8Attention()) for m in seams]
        others = len(selfs) - len(seams)
        if others:
            logger.warning("precision='fp8': %d self-attention(s) run another attention module (parallel inference) "
                           "and keep it in bf16; their linears are fp8", others)
    for parent, attr, _, new in swaps:
        setattr(parent, attr, new)
    try:
        yield
    finally:
        for parent, attr, old, _ in swaps:
            setattr(parent, attr, old)


def precision_context(precision: str, models: Iterable[nn.Module], device: torch.device):
    """The context a generation at ``precision`` runs in (``bf16``: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid: expected one of {list(PRECISIONS)}")
    return fp8(models, device) if precision == "fp8" else contextlib.nullcontext()


__all__ = ["PRECISIONS", "compile_repeated_blocks", "fp8", "fp8_linear", "fp8_unavailable", "precision_context"]
