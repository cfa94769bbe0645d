"""Multi-GPU inference on PyTorch's own stack (torchrun, NCCL/gloo, DeviceMesh), applied from outside to an unchanged
denoiser: sequence parallelism (Ulysses all-to-all) and CFG parallelism.

Mesh ``(cfg, sp)``: the ``cfg`` dimension splits the guidance branches of a step across ranks
(:func:`cfg_parallel_runner`, a branch runner handed to ``mova.guidance.guided_velocity``); the ``sp`` dimension
splits the tokens of both towers (:class:`SequenceParallel`, a wrapper module around the denoiser, in the manner of
diffusers' ``_cp_plan`` / torchtitan's ``parallelize``). Under sequence parallelism (docs/model.md#sequence-parallel-inference,
with two fixes):

* the wrapper runs the denoiser's own stages — ``embed`` (tokens and RoPE tables of the full sequences) → split →
  ``run_layers`` → gather → ``unembed`` — padding each stream at the end to a multiple of the degree and cutting it
  into equal shards (the fields ``Streams.SEQUENCE_FIELDS`` names);
* the attention modules the denoiser lists in ``_attention_seams`` (self-attention of both towers, the bridge's
  cross-attention) are replaced by :class:`UlyssesAttention`: an all-to-all turns the sequence shards into head shards,
  attention runs over the full sequence, and a second all-to-all turns it back. Where the head count does not divide
  by the degree (the audio tower's 12 heads on 8 GPUs) the keys and values are all-gathered instead and each rank
  attends with its local queries;
* padding tokens are masked out of attention (the official code lets them attend);
* text cross-attention stays local (local queries against the full 512-token context);
* after the last layer the shards are all-gathered and the padding dropped; the heads run on every rank.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from mova.attention import attention

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ParallelState:
    """Process groups of one rank."""

    rank: int
    world_size: int
    device: torch.device
    sp_size: int = 1
    sp_rank: int = 0
    sp_group: dist.ProcessGroup | None = None
    cfg_size: int = 1
    cfg_rank: int = 0
    cfg_group: dist.ProcessGroup | None = None

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
# Sequence parallelism: a wrapper module and the attention it swaps in
# --------------------------------------------------------------------------------------------------------


class UlyssesAttention(nn.Module):
    """Attention of sequence-sharded q [B, Lq/P, H, D] over sequence-sharded k, v [B, Lk/P, H, D] of the stream
    ``kv_stream``, its padding keys masked; returns [B, Lq/P, H, D]. ``lengths`` is the wrapper's record of each
    stream's true token count in the current forward."""

    def __init__(self, state: ParallelState, lengths: dict[str, int], kv_stream: str):
        super().__init__()
        self.state, self.lengths, self.kv_stream = state, lengths, kv_stream

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        state, P = self.state, self.state.sp_size
        full_kv = k.shape[1] * P
        valid = self.lengths[self.kv_stream]
        mask = None
        if valid < full_kv:
            mask = (torch.arange(full_kv, device=k.device) < valid)[None, :].expand(k.shape[0], full_kv)
        if q.shape[2] % P == 0:
            out = attention(seq_to_heads(q, state), seq_to_heads(k, state), seq_to_heads(v, state), kv_mask=mask)
            return heads_to_seq(out, state)
        return attention(q, gather_seq(k, state), gather_seq(v, state), kv_mask=mask)


class SequenceParallel(nn.Module):
    """The forward of ``denoiser`` (a ``DualTowerDenoiser``) with both token streams split over the sequence group
    of ``state``: same call, same result as the denoiser alone (up to the order of floating-point sums). Replaces
    the attention modules named in ``denoiser._attention_seams`` by :class:`UlyssesAttention`."""

    def __init__(self, denoiser: nn.Module, state: ParallelState):
        super().__init__()
        if state.sp_size < 2:
            raise ValueError(f"sequence parallelism needs sp_size >= 2, got {state.sp_size}")
        self.denoiser, self.state = denoiser, state
        self.lengths: dict[str, int] = {}  # true token counts of the current forward, read by the attention modules
        swapped = 0
        for name, _ in list(denoiser.named_modules()):
            for pattern, (_, kv_stream) in denoiser._attention_seams.items():
                if fnmatch.fnmatchcase(name, pattern):
                    denoiser.set_submodule(name, UlyssesAttention(state, self.lengths, kv_stream))
                    swapped += 1
        if not swapped:
            raise ValueError(f"{type(denoiser).__name__} has no attention module matching _attention_seams")

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.denoiser.embed(*args, **kwargs)
        self.lengths.update(video=s.video.shape[1], audio=s.audio.shape[1])
        split = {}
        for fields in s.SEQUENCE_FIELDS.values():
            for field in fields:
                value = getattr(s, field)
                if isinstance(value, tuple):  # RoPE tables, [L, ...]
                    split[field] = tuple(shard_seq(t, self.state, dim=0) for t in value)
                elif value is not None:
                    split[field] = shard_seq(value, self.state)
        s = self.denoiser.run_layers(dataclasses.replace(s, **split))
        s = dataclasses.replace(s, video=gather_seq(s.video, self.state)[:, :self.lengths["video"]],
                                audio=gather_seq(s.audio, self.state)[:, :self.lengths["audio"]])
        return self.denoiser.unembed(s)


# --------------------------------------------------------------------------------------------------------
# CFG parallelism: a branch runner for guidance
# --------------------------------------------------------------------------------------------------------


def gather_branches(outputs: list[torch.Tensor], num_branches: int, state: ParallelState) -> list[torch.Tensor]:
    """Rank r evaluated branches r, r + cfg, ...; return all ``num_branches`` outputs in order on every rank (padded
    all-gather over the cfg group)."""
    cfg = state.cfg_size
    per_rank = -(-num_branches // cfg)
    template = outputs[0]
    stack = torch.zeros((per_rank, *template.shape), dtype=template.dtype, device=template.device)
    for i, out in enumerate(outputs):
        stack[i] = out
    parts = [torch.empty_like(stack) for _ in range(cfg)]
    dist.all_gather(parts, stack, group=state.cfg_group)
    return [parts[i % cfg][i // cfg] for i in range(num_branches)]


def cfg_parallel_runner(state: ParallelState, sequential: bool = False) -> Callable:
    """A branch runner for ``guided_velocity(runner=...)``: this rank evaluates branches ``cfg_rank::cfg_size`` (in
    one batched call, or one call each with ``sequential``) and the outputs of all branches are all-gathered."""
    cfg = state.cfg_size

    def run(evaluate: Callable, branches: Sequence) -> list[tuple[torch.Tensor, torch.Tensor]]:
        mine = tuple(branches[state.cfg_rank::cfg])
        if not mine:
            raise ValueError(f"CFG parallel degree {cfg} exceeds the {len(branches)} branches of this guidance mode")
        if sequential:
            outs = [evaluate((b,)) for b in mine]
        else:
            video, audio = evaluate(mine)
            outs = list(zip(video.chunk(len(mine)), audio.chunk(len(mine))))
        videos = gather_branches([o[0] for o in outs], len(branches), state)
        audios = gather_branches([o[1] for o in outs], len(branches), state)
        return list(zip(videos, audios))

    return run


def parallelize(denoiser: nn.Module, state: ParallelState, sequential: bool = False) -> tuple[nn.Module, Callable | None]:
    """What a caller of ``guided_velocity`` runs under ``state``: the velocity model (the denoiser wrapped in
    :class:`SequenceParallel` when sp > 1, else the denoiser) and the branch runner (:func:`cfg_parallel_runner` when
    cfg > 1, else ``None``: the default)."""
    model = SequenceParallel(denoiser, state) if state.sp_size > 1 else denoiser
    return model, (cfg_parallel_runner(state, sequential) if state.cfg_size > 1 else None)
