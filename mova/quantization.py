"""Weight storage in fewer bits, chosen at load (``MOVAPipeline.from_pretrained(quantization=)``).

Formats (``mova.settings.QUANTIZATIONS``), each a :class:`QuantizedLinear` holding ``weight`` in the narrow dtype and
``weight_scale`` (float32, one per output row, ``W ≈ weight · weight_scale``, the row's absolute maximum mapped to
the format's largest value):

* ``fp8``  — e4m3 (3 mantissa bits), 1 byte per weight; also what the ``precision="fp8"`` GEMM reads directly.
* ``int8`` — symmetric integers in [−127, 127], 1 byte per weight, finer steps than e4m3 for well-spread rows.
* ``nf4``  — QLoRA's NormalFloat4: each weight one of 16 values (quantiles of a normal distribution, spread over
  [−1, 1]) times its block's absolute maximum, blocks of ``NF4_BLOCK`` consecutive inputs of a row (fewer when the
  row is shorter or not a multiple); two codes per byte (the first in the high nibble), so ½ byte per weight plus a
  float32 scale per block (``weight`` uint8 [out, in/2], ``weight_scale`` float32 [out, in/block]).

The forward dequantises the weight to the activation dtype and runs an ordinary matmul, so both formats run on any
device (CPU included) and give bf16-path results up to the weight rounding; the bytes stored, copied by the block
streamer and read per matmul halve against bf16 (a quarter, plus the block scales, for ``nf4``). What is quantised: every plain ``nn.Linear`` inside the repeated
blocks of the video experts, the audio DiT and the bridge (attention projections, FFNs), and of the UMT5 text
encoder's blocks except its FFN output ``wo`` (transformers casts the activation to ``wo.weight.dtype`` before that
layer, which an e4m3 weight would turn into an overflow; it stays as transformers keeps it, in float32). The
precision islands (embeddings, time and text MLPs, modulation, norms, heads) are outside the blocks and stay.

Why our own module and not torchao's or bitsandbytes' (both read: torchao ``Float8WeightOnlyConfig``,
bitsandbytes ``Linear8bitLt``/``Linear4bit``): the block streamer (``mova.offload``) moves a block by replacing its
parameters' tensors, which carries a plain (weight, scale) pair but not a tensor subclass or a parameter whose
quantisation state hangs off it (bitsandbytes' ``Params4bit.quant_state``); bitsandbytes' int8 is LLM.int8 (an
outlier-splitting matmul), not weight-only; its 4-bit kernels need its CUDA build; and torchao is not a dependency.
``nf4`` uses the same 16 code values and block size as bitsandbytes' default, so the rounding is the one QLoRA
measured. The scaling is the rowwise one torchao and ``torch._scaled_mm`` use.

A quantised component saves like any other (``save_pretrained``): ``weight`` in its narrow dtype, ``weight_scale``
beside it, and ``"quantization_config": {"quant_method": "mova", "format": ...}`` in its ``config.json``, so the
folder loads again without the bf16 weights (``load_native`` reads the config and builds the same modules). The
text encoder is quantised on load only: transformers reads a ``quantization_config`` in its config as one of its
own quantisers', so a saved folder keeps its full-precision text encoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mova.settings import QUANTIZATIONS

STORAGE = {"fp8": (torch.float8_e4m3fn, 448.0), "int8": (torch.int8, 127.0),  # format → (dtype, largest value)
           "nf4": (torch.uint8, 1.0)}
# NormalFloat4's code values (QLoRA, Dettmers et al. 2023, appendix E; bitsandbytes' table), ascending
NF4_VALUES = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
NF4_BLOCK = 64  # inputs per scale (bitsandbytes' default block size)
QUANT_METHOD = "mova"
TEXT_ENCODER_KEEP = ("wo",)  # linears of the text encoder's blocks left as they are (module docstring)


def check_format(quantization: str | None) -> str | None:
    """``quantization`` itself when it is one of ``QUANTIZATIONS`` or ``None``; ValueError naming it otherwise."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is invalid: expected one of {list(QUANTIZATIONS)} or None")
    return quantization


def storage_shapes(fmt: str, out_features: int, in_features: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The shapes of (``weight``, ``weight_scale``) a linear [out, in] is stored in."""
    if fmt != "nf4":
        return (out_features, in_features), (out_features, 1)
    if in_features % 2:
        raise ValueError(f"quantization='nf4' packs two weights per byte: in_features={in_features} must be even")
    return (out_features, in_features // 2), (out_features, in_features // math.gcd(in_features, NF4_BLOCK))


def _nf4_pairs(device: torch.device) -> torch.Tensor:
    """float32 [256, 2]: the two code values a packed byte holds (high nibble first)."""
    values = torch.tensor(NF4_VALUES, dtype=torch.float32, device=device)
    byte = torch.arange(256, device=device)
    return torch.stack((values[byte >> 4], values[byte & 15]), dim=1)


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] → (weight, float32 scale) in the shapes of :func:`storage_shapes`, with weight · scale ≈ the input
    (for ``nf4``: each block's values rounded to the nearest code value)."""
    dtype, largest = STORAGE[fmt]
    if fmt == "nf4":
        (n, half), (_, blocks) = storage_shapes(fmt, *weight.shape)
        w = weight.float().reshape(n, blocks, -1)
        scale = w.abs().amax(dim=2, keepdim=True).clamp(min=1e-12)
        values = torch.tensor(NF4_VALUES, dtype=torch.float32, device=w.device)
        codes = torch.bucketize(w / scale, (values[1:] + values[:-1]) / 2, out_int32=True).to(torch.uint8)
        codes = codes.reshape(n, half, 2)
        return (codes[..., 0] << 4 | codes[..., 1]).contiguous(), scale.reshape(n, blocks)
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / largest
    q = w / scale
    if dtype == torch.int8:
        q = q.round_().clamp_(-largest, largest)
    return q.to(dtype).contiguous(), scale


class QuantizedLinear(nn.Module):
    """``nn.Linear`` with its weight stored as (``weight`` [out, in] narrow, ``weight_scale`` [out, 1] float32).

    x [..., in] → [..., out] in x's dtype; ``bias`` (if any) keeps the dtype it was loaded in."""

    def __init__(self, in_features: int, out_features: int, bias: bool, fmt: str, bias_dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.format = in_features, out_features, fmt
        weight_shape, scale_shape = storage_shapes(fmt, out_features, in_features)
        self.weight = nn.Parameter(torch.empty(weight_shape, dtype=STORAGE[fmt][0], device=device), requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(scale_shape, dtype=torch.float32, device=device),
                                         requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device),
                                 requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str) -> "QuantizedLinear":
        """The quantised copy of a loaded ``linear`` (same device; its bias shared)."""
        module = cls(linear.in_features, linear.out_features, False, fmt, device="meta")
        q, scale = quantize_weight(linear.weight, fmt)
        module.weight = nn.Parameter(q, requires_grad=False)
        module.weight_scale = nn.Parameter(scale, requires_grad=False)
        module.bias = linear.bias
        return module

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight [out, in] in ``dtype`` (the product taken in float32, rounded once)."""
        if self.format != "nf4":
            return (self.weight.float() * self.weight_scale).to(dtype)
        values = _nf4_pairs(self.weight.device)[self.weight.int()]  # [out, in/2, 2]: each byte's two values
        blocks = values.view(self.out_features, self.weight_scale.shape[1], -1)
        return blocks.mul_(self.weight_scale[..., None]).view(self.out_features, self.in_features).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"format={self.format}"


def targets(model: nn.Module, keep: Iterable[str] = (),
            kinds: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every module of exactly one of the ``kinds`` (default: plain ``nn.Linear``)
    inside the blocks of ``model``: its ``_repeated_blocks`` (our models) or ``_no_split_modules`` (the
    transformers text encoder) classes, except children named in ``keep``."""
    names = set(getattr(model, "_repeated_blocks", None) or getattr(model, "_no_split_modules", None) or ())
    keep = set(keep)
    found = []
    for block in (m for m in model.modules() if type(m).__name__ in names):
        for parent in block.modules():
            for attr, child in parent.named_children():
                if type(child) in kinds and attr not in keep:
                    found.append((parent, attr, child))
    return found


def quantize_(model: nn.Module, fmt: str, keep: Iterable[str] = ()) -> int:
    """Replace ``model``'s block linears (:func:`targets`) by their :class:`QuantizedLinear` in place, one at a time
    (the bf16 weight of each is freed as its copy is made); returns how many."""
    found = targets(model, keep)
    for parent, attr, linear in found:
        setattr(parent, attr, QuantizedLinear.from_linear(linear, fmt))
    mark(model, fmt)
    return len(found)


def prepare_on_meta(model: nn.Module, fmt: str) -> dict[str, QuantizedLinear]:
    """Replace a meta-device ``model``'s block linears by empty :class:`QuantizedLinear` s (to be filled by the
    loader); returns them by module path."""
    paths = {id(m): name for name, m in model.named_modules()}
    made = {}
    for parent, attr, linear in targets(model):
        bias_dtype = linear.bias.dtype if linear.bias is not None else None
        module = QuantizedLinear(linear.in_features, linear.out_features, linear.bias is not None, fmt, bias_dtype,
                                 device="meta")
        setattr(parent, attr, module)
        made[f"{paths[id(parent)]}.{attr}".lstrip(".")] = module
    mark(model, fmt)
    return made


def mark(model: nn.Module, fmt: str) -> None:
    """Record the format in the model's config (written by ``save_pretrained``, read back by the loader)."""
    if hasattr(model, "register_to_config"):  # our models; the text encoder is quantised on load only (see below)
        model.register_to_config(quantization_config={"quant_method": QUANT_METHOD, "format": fmt})


def saved_format(config: dict) -> str | None:
    """The format a saved component's ``config.json`` declares (None for full-precision weights); ValueError for a
    quantization another library wrote."""
    entry = config.get("quantization_config")
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("quant_method") != QUANT_METHOD:
        raise ValueError(f"quantization_config={entry!r} is not one this loader reads (quant_method "
                         f"{QUANT_METHOD!r} with format one of {list(QUANTIZATIONS)})")
    return check_format(entry.get("format"))


def quantized_format(model: nn.Module) -> str | None:
    """The format of ``model``'s quantised linears (None when it has none)."""
    return next((m.format for m in model.modules() if isinstance(m, QuantizedLinear)), None)


__all__ = ["NF4_BLOCK", "NF4_VALUES", "QuantizedLinear", "check_format", "prepare_on_meta", "quantize_", "quantize_weight", "quantized_format",
           "saved_format", "storage_shapes", "targets"]
