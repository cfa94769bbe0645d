"""DistributedBackend: the app on a multi-GPU host under torchrun (sequence and CFG parallelism).

    torchrun --nproc-per-node 4 app.py --model /ckpt/MOVA-720p --sp 4
    torchrun --nproc-per-node 8 app.py --model /ckpt/MOVA-720p --sp 4 --cfg-parallel

Every rank loads the pipeline with ``mova.parallel`` enabled. Rank 0 serves the UI; for each request it
broadcasts the request (with its seed drawn, so every rank draws the same noise) and all ranks generate
together. After each request the ranks exchange a status, so an error on any rank (out of memory, a bad
adapter) reaches the UI as a message naming the rank instead of leaving the others waiting in a collective.
Closing the backend on rank 0 sends the followers a stop message and they leave ``follow()``.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

import torch.distributed as dist

from mova.backends.base import ProgressFn
from mova.backends.local import LocalBackend
from mova.settings import GenerationSettings

logger = logging.getLogger(__name__)

_STOP = ("stop", None)


class DistributedBackend(LocalBackend):
    """Args: ``model``, ``revision``, ``data_dir``, ``loras`` as :class:`LocalBackend`; ``sp`` sequence-parallel degree;
    ``cfg_parallel`` spreads guidance branches over ``WORLD_SIZE / sp`` ranks."""

    name = "distributed"

    def __init__(self, model: str | os.PathLike = "demo", *, revision: str | None = None, sp: int = 1,
                 cfg_parallel: bool = False, dtype: Any = None, data_dir: str | os.PathLike | None = None,
                 loras: Any = None) -> None:
        from mova.parallel import init_parallel

        world = int(os.environ.get("WORLD_SIZE", "1"))
        cfg = world // sp if cfg_parallel else 1
        self.state = init_parallel(sp=sp, cfg=cfg)
        super().__init__(model, revision=revision, device=str(self.state.device), dtype=dtype, offload="none",
                         data_dir=data_dir, loras=loras)
        self.pipeline.enable_parallel(self.state)
        self._closed = False

    @property
    def is_main(self) -> bool:
        return self.state.is_main

    # rank 0 -----------------------------------------------------------------------------------------------

    def _run(self, settings: GenerationSettings, progress: ProgressFn | None):
        if not self.is_main:
            raise RuntimeError("only rank 0 takes requests; the other ranks run follow()")
        if settings.seed is None:  # every rank must draw the same noise
            settings = settings.replace(seed=secrets.randbelow(2**32))
        with self._lock:
            self._broadcast(("generate", settings))
            result, error = self._generate_here(settings, _uncancellable(progress))
            failures = self._statuses(error)
        if failures:
            raise RuntimeError("generation failed on " + "; ".join(f"rank {r}: {e}" for r, e in failures))
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.is_main and dist.is_initialized():
            self._broadcast(_STOP)
        if dist.is_initialized():
            dist.destroy_process_group()
        super().close()

    # every rank -------------------------------------------------------------------------------------------

    def follow(self) -> None:
        """Ranks > 0: generate whatever rank 0 broadcasts until it says stop.

        Ctrl-C in a terminal interrupts every process of the job; the followers ignore it and leave when rank 0,
        which handles it, sends the stop message (SIGTERM, e.g. from torchrun tearing the job down, exits quietly).
        """
        import signal
        import sys

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            command, settings = self._broadcast(None)
            if command == "stop":
                break
            _, error = self._generate_here(settings, None)
            self._statuses(error)
        self._closed = True
        dist.destroy_process_group()

    def _generate_here(self, settings: GenerationSettings, progress: ProgressFn | None):
        try:
            return self.pipeline(settings, progress=progress), None
        except Exception as exc:  # reported to rank 0 by _statuses, never left hanging
            logger.exception("rank %d failed", self.state.rank)
            return None, f"{type(exc).__name__}: {exc}"

    def _broadcast(self, message):
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _statuses(self, error: str | None) -> list[tuple[int, str]]:
        statuses: list[Any] = [None] * self.state.world_size
        dist.all_gather_object(statuses, error)
        return [(rank, err) for rank, err in enumerate(statuses) if err]


def _uncancellable(progress: ProgressFn | None) -> ProgressFn | None:
    """Rank 0's progress without cancellation: the ranks run each step's collectives together, so one rank leaving
    mid-generation would leave the others waiting: a cancelled request runs to its end on every rank."""
    if progress is None:
        return None
    from mova.settings import GenerationCancelled

    def report(stage: str, done: int, total: int) -> None:
        try:
            progress(stage, done, total)
        except GenerationCancelled:
            pass

    return report
