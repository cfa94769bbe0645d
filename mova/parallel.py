"""Multi-GPU inference on PyTorch's own stack (torchrun, NCCL/gloo, DeviceMesh): sequence parallelism
(Ulysses all-to-all) and CFG parallelism, applied to an unchanged model.

Mesh ``(cfg, sp)``: the ``cfg`` dimension splits the guidance branches of a step across ranks; the ``sp``
dimension splits the tokens of both towers. Under sequence parallelism (docs/model.md#sequence-parallel-inference, with two fixes):

* video and audio tokens (and their RoPE tables, DiT and bridge) are computed for the full sequence, padded
  at the end to a multiple of the degree and cut into equal shards;
* self-attention of both towers and the bridge's cross-attention use Ulysses: an all-to-all turns the
  sequence shards into head shards, attention runs over the full sequence, and a second all-to-all turns it
  back. Where the head count does not divide by the degree (the audio tower's 12 heads on 8 GPUs) the keys
  and values are all-gathered instead and each rank attends with its local queries;
* padding tokens are masked out of attention (the official code lets them attend);
* text cross-attention stays local (local queries against the full 512-token context);
* after the last block the shards are all-gathered and the padding dropped; the heads run on every rank.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os

import torch
import torch.distributed as dist
import torch.nn as nn

from mova.models.attention import attention

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ParallelState:
    """Process groups of one rank. ``valid_len`` holds the true token counts of the current forward."""

    rank: int
    world_size: int
    device: torch.device
    sp_size: int = 1
    sp_rank: int = 0
    sp_group: dist.ProcessGroup | None = None
    cfg_size: int = 1
    cfg_rank: int = 0
    cfg_group: dist.ProcessGroup | None = None
    valid_len: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(sp: int = 1, cfg: int = 1, device: torch.device | None = None,
                  timeout_s: float = 600.0) -> ParallelState:
    """Initialise the default process group from torchrun's environment and build the (cfg, sp) mesh."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if sp < 1 or cfg < 1 or sp * cfg != world:
        raise ValueError(f"sp={sp} × cfg={cfg} must equal the number of processes WORLD_SIZE={world}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (cfg, sp), mesh_dim_names=("cfg", "sp"))
    state = ParallelState(rank=dist.get_rank(), world_size=world, device=device, sp_size=sp,
                          sp_rank=mesh["sp"].get_local_rank(), sp_group=mesh["sp"].get_group(), cfg_size=cfg,
                          cfg_rank=mesh["cfg"].get_local_rank(), cfg_group=mesh["cfg"].get_group())
    if state.is_main:
        logger.info("parallel inference: %d processes = cfg %d × sequence %d on %s", world, cfg, sp, device.type)
    return state


# --------------------------------------------------------------------------------------------------------
# Collectives over the sequence group
# --------------------------------------------------------------------------------------------------------


def _all_to_all(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """``all_to_all_single`` along dim 0 (chunk p goes to rank p); gloo has none, so it is built from an
    all-gather there (correct, slower; the CPU path exists for tests)."""
    if dist.get_backend(group) != "gloo":
        dist.all_to_all_single(out, inp, group=group)
        return
    size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    gathered = [torch.empty_like(inp) for _ in range(size)]
    dist.all_gather(gathered, inp.contiguous(), group=group)
    for p in range(size):
        out[p].copy_(gathered[p][rank])


def seq_to_heads(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """[B, L/P, H, D] (sequence shard, all heads) -> [B, L, H/P, D] (full sequence, a head shard)."""
    P = state.sp_size
    B, L_loc, H, D = x.shape
    send = x.reshape(B, L_loc, P, H // P, D).permute(2, 0, 1, 3, 4).contiguous()  # [P, B, L/P, H/P, D]
    recv = torch.empty_like(send)
    _all_to_all(recv, send, state.sp_group)  # recv[p] = rank p's tokens of my head shard
    return recv.permute(1, 0, 2, 3, 4).reshape(B, P * L_loc, H // P, D)


def heads_to_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """[B, L, H/P, D] -> [B, L/P, H, D] (inverse of :func:`seq_to_heads`)."""
    P = state.sp_size
    B, L, Hp, D = x.shape
    send = x.reshape(B, P, L // P, Hp, D).permute(1, 0, 2, 3, 4).contiguous()  # [P, B, L/P, H/P, D]
    recv = torch.empty_like(send)
    _all_to_all(recv, send, state.sp_group)  # recv[p] = my tokens of rank p's head shard
    return recv.permute(1, 2, 0, 3, 4).reshape(B, L // P, P * Hp, D)


def gather_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """[B, L/P, ...] -> [B, L, ...] (shards concatenated in rank order)."""
    parts = [torch.empty_like(x) for _ in range(state.sp_size)]
    dist.all_gather(parts, x.contiguous(), group=state.sp_group)
    return torch.cat(parts, dim=1)


def shard_seq(x: torch.Tensor, state: ParallelState, dim: int = 1) -> torch.Tensor:
    """Pad ``x`` at the end of ``dim`` to a multiple of the degree and keep this rank's shard."""
    P = state.sp_size
    n = x.shape[dim]
    pad = (-n) % P
    if pad:
        shape = list(x.shape)
        shape[dim] = pad
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    return x.chunk(P, dim=dim)[state.sp_rank]


# --------------------------------------------------------------------------------------------------------
# Sequence-parallel attention
# --------------------------------------------------------------------------------------------------------


def sequence_parallel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, state: ParallelState,
                                kv_stream: str, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of sequence-sharded q [B, Lq/P, H, D] over sequence-sharded k, v [B, Lk/P, H, D] of the
    ``kv_stream`` ("video" or "audio"), padding keys masked. Returns [B, Lq/P, H, D]."""
    P = state.sp_size
    full_kv = k.shape[1] * P
    valid = state.valid_len[kv_stream]
    mask = None
    if valid < full_kv:
        mask = (torch.arange(full_kv, device=k.device) < valid)[None, :].expand(k.shape[0], full_kv)
    if q.shape[2] % P == 0:
        out = attention(seq_to_heads(q, state), seq_to_heads(k, state), seq_to_heads(v, state), kv_mask=mask)
        return heads_to_seq(out, state)
    return attention(q, gather_seq(k, state), gather_seq(v, state), kv_mask=mask)


def parallelize_denoiser(denoiser: nn.Module, state: ParallelState) -> None:
    """Give every sequence-sharded attention of the denoiser its parallel attention function, and attach the
    state so that ``DualTowerDenoiser.forward`` shards and gathers the token streams."""
    from mova.models.bridge import DualTowerBridge
    from mova.models.layers import SelfAttention

    denoiser.parallel = state
    if state.sp_size == 1:  # CFG parallelism only: the model runs unchanged on each rank
        return
    for stream, models in (("video", denoiser.experts), ("audio", [denoiser.audio_dit])):
        for model in models:
            for module in model.modules():
                if isinstance(module, SelfAttention):
                    module.attn_fn = functools.partial(sequence_parallel_attention, state=state, kv_stream=stream)
    bridge: DualTowerBridge = denoiser.bridge
    for block in bridge.audio_to_video_conditioners.values():  # video queries, audio keys
        block.inner.attn_fn = functools.partial(sequence_parallel_attention, state=state, kv_stream="audio")
    for block in bridge.video_to_audio_conditioners.values():  # audio queries, video keys
        block.inner.attn_fn = functools.partial(sequence_parallel_attention, state=state, kv_stream="video")


def gather_branches(outputs: list[torch.Tensor], num_branches: int, state: ParallelState) -> list[torch.Tensor]:
    """CFG parallelism: rank r evaluated branches r, r + cfg, ...; return all ``num_branches`` outputs in order
    on every rank (padded all-gather over the cfg group)."""
    cfg = state.cfg_size
    per_rank = -(-num_branches // cfg)
    template = outputs[0]
    stack = torch.zeros((per_rank, *template.shape), dtype=template.dtype, device=template.device)
    for i, out in enumerate(outputs):
        stack[i] = out
    parts = [torch.empty_like(stack) for _ in range(cfg)]
    dist.all_gather(parts, stack, group=state.cfg_group)
    return [parts[i % cfg][i // cfg] for i in range(num_branches)]
