"""One attention function for every attention in MOVA, with switchable backends.

Modules hold the projection weights; :func:`attention` holds the math. Inputs are laid out
``[B, L, H, D]`` (batch, tokens, heads, head_dim), the layout the DiTs produce after splitting heads.

Backends (``AttentionBackend``):

* ``auto``   — FlashAttention-3 when it is importable (``flash_attn_interface`` of a FlashAttention build, or
  ``fa3_fwd_interface`` of the ``fa3-fwd`` wheel: a prebuilt FA3 forward) and the tensors are CUDA bf16/fp16;
  otherwise PyTorch SDPA letting PyTorch pick among cuDNN, flash, memory-efficient and math, with cuDNN attention
  first in the priority list (on Hopper it measured 577 TFLOP/s vs 362 for the
  flash backend at 43k tokens, ``shared/spec/performance.md`` §2.5).
* ``cudnn``, ``flash``, ``efficient``, ``math`` — SDPA restricted to that one kernel.
* ``fa3``    — FlashAttention-3 (errors when it is not installed).

Select with the ``MOVA_ATTENTION`` environment variable or the :func:`attention_backend` context
manager. The backend chosen for the first call on each device type is logged once.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import logging
import os
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

logger = logging.getLogger(__name__)


class AttentionBackend(str, enum.Enum):
    AUTO = "auto"
    CUDNN = "cudnn"
    FLASH = "flash"
    EFFICIENT = "efficient"
    MATH = "math"
    FA3 = "fa3"


_SDPA_KERNELS = {
    AttentionBackend.CUDNN: [SDPBackend.CUDNN_ATTENTION],
    AttentionBackend.FLASH: [SDPBackend.FLASH_ATTENTION],
    AttentionBackend.EFFICIENT: [SDPBackend.EFFICIENT_ATTENTION],
    AttentionBackend.MATH: [SDPBackend.MATH],
    # auto: cuDNN first, then flash, memory-efficient, math (set_priority keeps this order)
    AttentionBackend.AUTO: [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                            SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
}

_override: AttentionBackend | None = None
_logged: set[str] = set()


_FA3_MODULES = ("flash_attn_interface", "fa3_fwd_interface")


def _find_fa3():
    """The FlashAttention-3 interface module that is installed and imports, or None."""
    for name in _FA3_MODULES:
        if importlib.util.find_spec(name) is not None:
            try:
                return importlib.import_module(name)
            except (ImportError, OSError) as exc:  # e.g. built for another torch
                logger.warning("FlashAttention-3 (%s) is installed but does not import: %s", name, exc)
    return None


_FA3 = _find_fa3()  # once, at import: a lookup inside a compiled block would be traced by Dynamo on every compile


def _fa3_module():
    return _FA3


def _fa3_available() -> bool:
    return _fa3_module() is not None


def current_backend() -> AttentionBackend:
    if _override is not None:
        return _override
    value = os.environ.get("MOVA_ATTENTION", "auto").lower()
    try:
        return AttentionBackend(value)
    except ValueError:
        raise ValueError(
            f"MOVA_ATTENTION={value!r} is invalid: expected one of {[b.value for b in AttentionBackend]}"
        ) from None


@contextlib.contextmanager
def attention_backend(backend: str | AttentionBackend) -> Iterator[None]:
    """Use ``backend`` for every :func:`attention` call inside the ``with`` block."""
    global _override
    previous = _override
    try:
        _override = AttentionBackend(backend)
    except ValueError:
        raise ValueError(
            f"attention backend {backend!r} is invalid: expected one of {[b.value for b in AttentionBackend]}"
        ) from None
    try:
        yield
    finally:
        _override = previous


def _log_once(device_type: str, what: str) -> None:
    key = f"{device_type}:{what}"
    if key not in _logged:
        _logged.add(key)
        logger.info("attention on %s: %s", device_type, what)


def _sdpa_context(kernels: list[SDPBackend]):
    """Restrict SDPA to ``kernels``, honouring their order where this PyTorch supports priorities."""
    try:
        return sdpa_kernel(kernels, set_priority=len(kernels) > 1)
    except TypeError:  # older PyTorch: no set_priority; its own order already tries cuDNN first on Hopper
        return sdpa_kernel(kernels)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend,
          attn_mask: torch.Tensor | None) -> torch.Tensor:
    # [B, L, H, D] -> [B, H, L, D] for SDPA, and back.
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    kernels = _SDPA_KERNELS[backend]
    if q.device.type != "cuda":  # CPU: SDPA picks its own (flash/math) kernel
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    else:
        with _sdpa_context(kernels):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return out.transpose(1, 2)


FA3_HEAD_DIMS = (64, 96, 128, 192, 256)  # the head sizes FlashAttention-3 has kernels for
E4M3_MAX = 448.0


def _fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fp8: bool = False) -> torch.Tensor:
    """FA3 on [B, L, H, D] (``fp8``: on e4m3 copies, below). A head size FA3 lacks is zero-padded to the next one it
    has: the logits and the output's first D channels are unchanged, the softmax scale stays 1/sqrt(D)."""
    D = q.shape[-1]
    pad = next((d for d in FA3_HEAD_DIMS if d >= D), D) - D
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    descales = {}
    if fp8:
        k = k - k.mean(dim=1, keepdim=True)  # smoothed keys: the same softmax, a smaller range to quantise
        (q, sq), (k, sk), (v, sv) = _to_e4m3(q), _to_e4m3(k), _to_e4m3(v)
        descales = dict(q_descale=sq, k_descale=sk, v_descale=sv)
    out = _fa3_module().flash_attn_func(q, k, v, softmax_scale=D ** -0.5, **descales)
    out = out[0] if isinstance(out, tuple) else out
    return out[..., :D] if pad else out


def _to_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L, H, D] → (e4m3 [B, L, H, D], float32 descale [B, H]): each (batch, head) scaled by amax / 448."""
    scale = x.abs().amax(dim=(1, 3)).float().clamp(min=1e-8) / E4M3_MAX  # [B, H]
    return (x.float() / scale[:, None, :, None]).to(torch.float8_e4m3fn), scale


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(D), non-causal.

    Args:
        q: [B, Lq, H, D]
        k, v: [B, Lk, H, D]
        kv_mask: optional bool [B, Lk], True = key may be attended (used to mask padding tokens).
    Returns:
        [B, Lq, H, D] in the dtype of ``q``.
    """
    backend = current_backend()
    device_type = q.device.type
    use_fa3 = (
        kv_mask is None and device_type == "cuda" and q.dtype in (torch.bfloat16, torch.float16)
        and (backend is AttentionBackend.FA3 or (backend is AttentionBackend.AUTO and _fa3_available()))
    )
    if backend is AttentionBackend.FA3 and not use_fa3:
        if not _fa3_available():
            raise ValueError("attention backend 'fa3' needs the flash_attn_interface package (FlashAttention-3)")
        raise ValueError("attention backend 'fa3' needs CUDA bf16/fp16 tensors and no kv_mask")
    if use_fa3:
        _log_once(device_type, "FlashAttention-3")
        return _fa3(q, k, v)
    attn_mask = None
    if kv_mask is not None:
        attn_mask = kv_mask[:, None, None, :].to(device=q.device, dtype=torch.bool)
    _log_once(device_type, f"PyTorch SDPA ({backend.value})")
    return _sdpa(q, k, v, backend, attn_mask)


class Attention(nn.Module):
    """:func:`attention` as a module without weights: the seam where the attention of a projection module can be
    replaced by another module of the same call (``q, k, v`` [B, L, H, D] -> [B, Lq, H, D]), e.g. a sequence-sharded
    one, without touching the model code."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v)


class Fp8Attention(Attention):
    """FlashAttention-3 on e4m3 q, k, v (``precision="fp8"``, swapped in at a seam): keys smoothed by their mean over
    the tokens (exact: each query's logits shift by one constant, which softmax ignores), then q, k, v each scaled
    per (batch, head) by amax/448 into e4m3, the scales handed to the kernel as descales; out in q's dtype."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _log_once(q.device.type, "FlashAttention-3, e4m3")
        return _fa3(q, k, v, fp8=True).to(q.dtype)
