"""Block-level weight streaming for GPUs smaller than the model (the pipeline's ``offload="sequential"``).

Every repeated block (``_repeated_blocks`` of each model: DiT blocks, bridge conditioners) keeps its weights
in pinned host memory; just before a block runs, its weights are on the GPU, and while it runs the next
block's weights are copied on a side CUDA stream, so copies overlap compute. After a block has run its GPU
copies are dropped. Everything else of the model (embeddings, heads: a few hundred MB) stays on the GPU.
The order of blocks is recorded during the first forward and used for prefetching afterwards.

Why not diffusers' group offloading (``apply_group_offloading`` / ``enable_group_offload``), measured on one H200
(360p, text CFG, eager, cuDNN; ``benchmarks/results/step_time_360p_{stream,groupoffload}_h200.json``): its
``block_level`` kind onloads a model's non-block weights and records the prefetch order in that model's own
``forward``, which the dual-tower denoiser never calls (it runs the towers' embeddings, blocks and heads itself), so
it cannot run here; ``leaf_level`` with ``use_stream=True`` ran at 10.93 s/step at 5.9 GB (this streamer then
10.87 s at 8.2 GB; since the tokens are freed as the first layer replaces them and the eager fixes, 10.09 s at
6.55 GB: ``step_time_360p_stream_wave2_h200.json``), but without the recorded order every leaf copies on the side stream that the compute stream never
waits for (its pre-forward hook synchronises only prefetched groups), a race we will not ship; without a stream the
official layer-wise group offload takes 22.8 s/step (H100). This streamer prefetches block i+1 on a side stream,
makes the compute stream wait on an event, and frees block i after it ran.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def configure_cuda_allocator(conf: str | None, device: torch.device) -> bool:
    """Apply ``conf`` (``PYTORCH_CUDA_ALLOC_CONF`` syntax, e.g. ``"expandable_segments:True"``) to the CUDA caching
    allocator of this process, unless the user set ``PYTORCH_CUDA_ALLOC_CONF`` (theirs wins) or ``device`` is not
    CUDA. Segments allocated before the call keep their kind. Returns whether it applied ``conf``."""
    if not conf or device.type != "cuda" or "PYTORCH_CUDA_ALLOC_CONF" in os.environ:
        return False
    torch._C._accelerator_setAllocatorSettings(conf)  # no public setter in torch 2.11-2.13
    logger.info("CUDA caching allocator: %s", conf)
    return True


class BlockStreamer:
    """Installs the hooks on every repeated block of ``models``; ``remove()`` takes them off again."""

    def __init__(self, models: list[nn.Module], device: torch.device, prefetch: bool = True):
        self.device = device
        self.stream = torch.cuda.Stream(device) if (prefetch and device.type == "cuda") else None
        self.blocks: dict[int, nn.Module] = {}
        self.host: dict[int, list[tuple[nn.Parameter, torch.Tensor]]] = {}
        self.ready: dict[int, torch.cuda.Event | None] = {}
        self.order: list[int] = []
        self.position: dict[int, int] = {}
        self.handles: dict[int, list] = {}
        for model in models:
            self.add(model)

    def add(self, model: nn.Module) -> None:
        """Stream ``model``'s blocks (its other weights move to the GPU)."""
        names = set(getattr(model, "_repeated_blocks", ()))
        blocks = [m for m in model.modules() if type(m).__name__ in names]
        block_params = {id(p) for b in blocks for p in b.parameters()}
        for p in model.parameters():  # the rest stays resident on the GPU
            if id(p) not in block_params:
                p.data = p.data.to(self.device)
        for block in blocks:
            self._register(block)

    def drop(self, model: nn.Module) -> None:
        """Stop streaming ``model`` (a lazily loaded expert about to be freed): its hooks come off, its pinned copies
        are no longer held here, and the block order is recorded afresh on the next forward."""
        for block in model.modules():
            key = id(block)
            if key in self.blocks:
                for handle in self.handles.pop(key):
                    handle.remove()
                del self.blocks[key], self.host[key], self.ready[key]
        self.order.clear()
        self.position.clear()

    def _register(self, block: nn.Module) -> None:
        key = id(block)
        pinned = []
        for p in block.parameters():
            host = p.data.to("cpu")
            if self.device.type == "cuda" and not host.is_pinned():  # an expert handed pinned buffers keeps them
                host = host.pin_memory()
            p.data = host
            pinned.append((p, host))
        self.blocks[key] = block
        self.host[key] = pinned
        self.ready[key] = None
        self.handles[key] = [block.register_forward_pre_hook(self._before), block.register_forward_hook(self._after)]

    def _load(self, block: nn.Module) -> None:
        key = id(block)
        if self.ready[key] is not None:
            return
        if self.stream is None:
            for p, host in self.host[key]:
                p.data = host.to(self.device)
            self.ready[key] = True  # type: ignore[assignment]
            return
        with torch.cuda.stream(self.stream):
            for p, host in self.host[key]:
                p.data = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.ready[key] = event

    def _before(self, block: nn.Module, args) -> None:
        key = id(block)
        if key not in self.position:  # first pass: record the execution order
            self.position[key] = len(self.order)
            self.order.append(key)
        self._load(block)
        event = self.ready[key]
        if isinstance(event, torch.cuda.Event):
            torch.cuda.current_stream(self.device).wait_event(event)
            for p, _ in self.host[key]:
                p.data.record_stream(torch.cuda.current_stream(self.device))  # keep the memory until used
        nxt = self.position[key] + 1
        if self.stream is not None and nxt < len(self.order):
            self._load(self.blocks[self.order[nxt]])

    def _after(self, block: nn.Module, args, output) -> None:
        key = id(block)
        for p, host in self.host[key]:
            p.data = host
        self.ready[key] = None

    def remove(self) -> None:
        for handles in self.handles.values():
            for handle in handles:
                handle.remove()
        self.handles.clear()
