"""Parallelism applied to an unchanged model, torchtitan style: activation checkpointing → compile → FSDP2.

The blocks come from the models' capabilities, not from names written here: every module whose class is listed
in some submodule's ``_repeated_blocks`` (``DiTBlock`` of both video experts and the audio tower,
``ConditionerBlock`` of the bridge) is checkpointed, compiled and sharded one by one; the root (embeddings, heads,
everything else) is sharded last, so its parameters are gathered once per forward.

    model = parallelize(model, mesh=init_device_mesh("cuda", (world,)), cfg=cfg.parallel, param_dtype=torch.bfloat16)

Under FSDP2 every rank must run the same sub-modules in the same order each micro-step: the trainer routes a whole
micro-batch (on every rank) to one video expert (see ``DiffusionConfig.expert_routing``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from train.config import ParallelConfig

logger = logging.getLogger(__name__)


def init_processes(cpu: bool = False) -> tuple[torch.device, int, int]:
    """This process's device, rank and the world size, from the variables ``torchrun`` (and ``accelerate launch``)
    set; with several processes, joins their process group (NCCL on GPUs, gloo on CPUs)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available() and not cpu
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device, rank, world


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def ensure_process_group(device: torch.device) -> bool:
    """FSDP2 needs a process group even on one process (e.g. single-GPU CPU offload); True if one was created.
    A world of one needs no rendezvous: an in-memory store."""
    if dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    return True


def repeated_blocks(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, block) for every repeated block, outermost first (no nesting expected); the block
    classes are those that ``model`` and its submodules declare in ``_repeated_blocks``."""
    names = set().union(*(getattr(module, "_repeated_blocks", ()) for module in model.modules()))
    found = []
    for parent in model.modules():
        if hasattr(parent, "_checkpoint_wrapped_module"):
            continue  # the wrapper itself was found as its parent's child
        for attr, child in parent.named_children():
            inner = getattr(child, "_checkpoint_wrapped_module", child)
            if type(inner).__name__ in names:
                found.append((parent, attr, child))
    yield from found


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wrap each repeated block in a non-reentrant checkpoint wrapper (recomputed in backward)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    count = 0
    for parent, attr, block in repeated_blocks(model):
        if hasattr(block, "_checkpoint_wrapped_module"):
            continue
        parent._modules[attr] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        count += 1
    return count


def apply_compile(model: nn.Module, **compile_kwargs) -> int:
    """Regional compilation: ``torch.compile`` each repeated block in place (blocks of a class share a graph)."""
    blocks = [block for _, _, block in repeated_blocks(model)]
    for block in blocks:
        block.compile(**compile_kwargs)
    return len(blocks)


def apply_fsdp(model: nn.Module, mesh, *, param_dtype: torch.dtype | None = None,
               reduce_dtype: torch.dtype | None = torch.float32, cpu_offload: bool = False) -> int:
    """FSDP2: ``fully_shard`` each repeated block, then the root.

    With ``cpu_offload`` the sharded parameters live in (pinned, on CUDA) host memory and only *frozen* parameters
    are managed by FSDP: trainable ones are passed as ``ignored_params``, stay on the compute device unsharded,
    and their gradients are all-reduced by the trainer (:func:`all_reduce_grads`). This is the low-memory LoRA
    path: frozen base weights stream to the GPU one block at a time, adapters and their optimizer stay local.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    # The models return attention/unpatchify outputs that are views; every consumer uses them out of place
    # (residual adds, the loss), which is what FSDP2's per-step warning about in-place ops on views asks for.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    # cast_forward_inputs=False: the models cast activations to their weight dtype themselves, and timesteps and
    # RoPE tables must reach them in fp32 (a bf16 timestep 950.3 would become 952)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload else OffloadPolicy()
    ignored = {p for p in model.parameters() if p.requires_grad} if cpu_offload else None
    if cpu_offload and param_dtype is not None:
        # frozen weights are stored (on the host) in the compute dtype: half the host memory, no per-step cast
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(param_dtype)
    blocks = list(repeated_blocks(model))
    for _, _, block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, offload_policy=offload, reshard_after_forward=True,
                    ignored_params=ignored)
    fully_shard(model, mesh=mesh, mp_policy=mp, offload_policy=offload, ignored_params=ignored)
    return len(blocks)


def parallelize(model: nn.Module, *, mesh=None, cfg: ParallelConfig, param_dtype: torch.dtype | None = None,
                fsdp: bool = False) -> nn.Module:
    """Apply, in order: activation checkpointing → compile → FSDP2 (when ``fsdp``; needs ``mesh``).

    The model keeps its class and its ``state_dict`` keys (checkpoint wrappers strip their prefix; the
    ``torch.distributed.checkpoint.state_dict`` helpers give plain FQNs under FSDP).
    """
    if cfg.activation_checkpointing:
        logger.info("activation checkpointing on %d blocks", apply_activation_checkpointing(model))
    if cfg.compile:
        logger.info("compiled %d blocks", apply_compile(model))
    if fsdp:
        if mesh is None:
            raise ValueError("parallel.strategy=fsdp needs a device mesh")
        n = apply_fsdp(model, mesh, param_dtype=param_dtype, cpu_offload=cfg.cpu_offload)
        logger.info("FSDP2 over %d ranks: %d blocks + root sharded%s, param dtype %s", mesh.size(), n,
                    " (frozen weights offloaded to CPU)" if cfg.cpu_offload else "", param_dtype or "as stored")
    return model


def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Average the gradients of replicated (non-FSDP) parameters over all ranks (missing grads count as 0)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
