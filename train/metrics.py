"""Training metrics: one JSON row per logged step (``metrics.jsonl``), per-micro-batch draws (``batches.jsonl``)
and, when the ``tensorboard`` package is installed, TensorBoard scalars (``tb/``). Only the main process writes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
BATCHES = "batches.jsonl"


def _truncate(path: Path, last_step: int) -> None:
    """Drop rows written after ``last_step`` (by a run that was interrupted after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


class MetricsLogger:
    def __init__(self, folder: str | os.PathLike, *, enabled: bool, tensorboard: bool, batches: bool,
                 resume_step: int | None = None) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.writer = None
        self._metrics = self._batches = None
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate(self.folder / METRICS, resume_step)
            _truncate(self.folder / BATCHES, resume_step)
        mode = "a" if resume_step is not None else "w"
        self._metrics = open(self.folder / METRICS, mode, encoding="utf-8")
        self._batches = open(self.folder / BATCHES, mode, encoding="utf-8") if batches else None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.folder / "tb"), purge_step=resume_step)
            except ImportError:
                logger.info("tensorboard is not installed: metrics go to %s only "
                            "(pip install tensorboard for TensorBoard curves)", self.folder / METRICS)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._metrics.write(json.dumps({"step": step, **values}) + "\n")
        self._metrics.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def log_batch(self, record: dict[str, Any]) -> None:
        if self._batches is not None:
            self._batches.write(json.dumps(record) + "\n")

    def close(self) -> None:
        for fh in (self._metrics, self._batches):
            if fh is not None:
                fh.close()
        if self.writer is not None:
            self.writer.close()
        self._metrics = self._batches = self.writer = None
