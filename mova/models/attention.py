"""One attention function for every attention in MOVA, with switchable backends.

Modules hold the projection weights; :func:`attention` holds the math. Inputs are laid out
``[B, L, H, D]`` (batch, tokens, heads, head_dim), the layout the DiTs produce after splitting heads.

Backends (``AttentionBackend``):

* ``auto``   — FlashAttention-3 when ``flash_attn_interface`` is importable and the tensors are CUDA
  bf16/fp16; otherwise PyTorch SDPA letting PyTorch pick among cuDNN, flash, memory-efficient and math,
  with cuDNN attention first in the priority list (on Hopper it measured 577 TFLOP/s vs 362 for the
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


def _fa3_available() -> bool:
    return importlib.util.find_spec("flash_attn_interface") is not None


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


def _fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    import flash_attn_interface  # type: ignore[import-not-found]

    out = flash_attn_interface.flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out


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
