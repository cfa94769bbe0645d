"""Checkpoints: resumable trainer state with keep-latest-k, and exports in the official checkpoint layout.

A resumable checkpoint ``OUT/checkpoints/step-0001000/`` has named parts:

    state/          model (trainable parameters only) + optimizer, written with torch.distributed.checkpoint
                    (sharded under FSDP, one copy of replicated tensors under DDP/single)
    trainer/rank-00000.pt    per rank: step, micro-step, data position, LR scheduler, RNG states
    COMPLETE        written last; a folder without it (a run killed while saving) is ignored and purged

An export is what inference loads: an official-layout folder (``MOVAPipeline.from_pretrained`` reads it directly)
where trained components are written from the run's weights and every other component (VAEs, text encoder,
tokenizer, scheduler, frozen towers) is hard-linked (or copied) from the base checkpoint; with LoRA it is the
adapter folder (``adapter_model.safetensors`` + ``adapter_config.json``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from train.parallel import barrier

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
# DualTowerDenoiser attribute -> checkpoint component name, where they differ
ATTRIBUTE_TO_COMPONENT = {"bridge": "dual_tower_bridge"}


def component_of(fqn: str) -> str:
    """Checkpoint component of a parameter FQN of the training root (``bridge.x`` → ``dual_tower_bridge``)."""
    head = fqn.split(".", 1)[0]
    return ATTRIBUTE_TO_COMPONENT.get(head, head)


def component_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename root FQNs to component-prefixed keys (``bridge.`` → ``dual_tower_bridge.``)."""
    return {f"{component_of(key)}.{key.partition('.')[2]}": value for key, value in state.items()}


def _state_dict_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False, **kwargs)


class Checkpointer:
    """Saves and restores resumable checkpoints under ``folder``; keeps the latest ``keep_latest``."""

    def __init__(self, folder: str | os.PathLike, keep_latest: int, rank: int = 0, is_main: bool = True) -> None:
        self.folder = Path(folder)
        self.keep_latest, self.rank, self.is_main = keep_latest, rank, is_main

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step:07d}"

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("step-*") if (p / COMPLETE).is_file())

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             trainer_state: dict[str, Any]) -> Path:
        """Collective: every rank calls it."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        path = self.path(step)
        if self.is_main and path.exists():
            shutil.rmtree(path)  # a stale, incomplete save of the same step
        barrier()
        state = {"model": get_model_state_dict(model, options=_state_dict_options()),
                 "optim": get_optimizer_state_dict(model, optimizer, options=_state_dict_options())}
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=str(path / "state"), no_dist=not _distributed())
        (path / "trainer").mkdir(parents=True, exist_ok=True)
        torch.save(trainer_state, path / "trainer" / f"rank-{self.rank:05d}.pt")
        barrier()
        if self.is_main:
            (path / COMPLETE).write_text(f"{step}\n")
            logger.info("saved checkpoint %s", path)
            self.purge()
        barrier()
        return path

    def load(self, path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model + optimizer in place; return this rank's trainer state."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                             set_model_state_dict, set_optimizer_state_dict)

        path = Path(path)
        if not (path / COMPLETE).is_file():
            raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE} marker)")
        rank_file = path / "trainer" / f"rank-{self.rank:05d}.pt"
        if not rank_file.is_file():
            n = len(list((path / "trainer").glob("rank-*.pt")))
            raise ValueError(f"checkpoint {path} was written by {n} ranks and has no state for rank {self.rank}; "
                             "resume with the same number of processes")
        state = {"model": get_model_state_dict(model, options=_state_dict_options()),
                 "optim": get_optimizer_state_dict(model, optimizer, options=_state_dict_options())}
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(path / "state"), no_dist=not _distributed())
        set_model_state_dict(model, state["model"], options=_state_dict_options())
        set_optimizer_state_dict(model, optimizer, state["optim"], options=_state_dict_options())
        logger.info("resumed from %s", path)
        return torch.load(rank_file, map_location="cpu", weights_only=True)

    def purge(self) -> None:
        """Delete all but the latest ``keep_latest`` complete checkpoints and any incomplete older ones."""
        done = self.complete()
        keep = set(done[-self.keep_latest:])
        newest = done[-1].name if done else ""
        for path in sorted(self.folder.glob("step-*")):
            if path in keep or (path not in done and path.name > newest):  # kept, or newer and still being written
                continue
            try:
                shutil.rmtree(path)
                logger.info("deleted old checkpoint %s (keep_latest=%d)", path, self.keep_latest)
            except OSError as exc:
                logger.warning("could not delete old checkpoint %s: %s", path, exc)


@contextlib.contextmanager
def _quiet_single_process():
    """torch.distributed.checkpoint warns on every single-process save/load that it is single-process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        yield


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


# ----------------------------------------------------------------------------------------------------------------------
# Exports
# ----------------------------------------------------------------------------------------------------------------------


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters as full CPU tensors keyed by plain FQNs (collective; rank 0 gets the full tensors
    under FSDP, other ranks may get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_dict_options(full_state_dict=True, cpu_offload=True))


def split_components(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"video_dit.blocks.0.x": t, "bridge.y": u}`` →
    ``{"video_dit": {"blocks.0.x": t}, "dual_tower_bridge": {"y": u}}``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in component_keys(state).items():
        component, _, rest = key.partition(".")
        out.setdefault(component, {})[rest] = value
    return out


def link_or_copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder, hard-linking files where the filesystem allows (no second copy of a 10 GB encoder)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def stored_dtype(subfolder: Path) -> torch.dtype:
    """The dtype a component's floating weights are stored in (first floating tensor of its safetensors)."""
    from mova.loading import checkpoint_tensors

    names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    for info in checkpoint_tensors(subfolder).values():
        if info.dtype in names:
            return names[info.dtype]
    return torch.float32


def export_pipeline(folder: str | os.PathLike, base: str | os.PathLike, states: dict[str, dict[str, torch.Tensor]],
                    dtype: str = "auto", extra_index: dict[str, Any] | None = None) -> Path:
    """Write an official-layout checkpoint folder: components in ``states`` from those tensors (their config from
    the base folder, keys checked strictly), all others linked from ``base``. Written to a temporary sibling and
    renamed, so a folder that exists is complete.

    Args:
        states: {component: plain state dict} for the components the run changed.
        dtype: ``auto`` (each component's stored dtype in ``base``), ``bf16`` or ``fp32``.
    """
    from mova.loading import (NATIVE_COMPONENTS, build_on_meta, component_names, load_library_component,
                              native_config, read_json, read_model_index, save_native)

    folder, base = Path(folder), Path(base)
    index = read_model_index(base)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in component_names(index):
        if name in states:
            target = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype) or stored_dtype(base / name)
            if name in NATIVE_COMPONENTS:
                cls = NATIVE_COMPONENTS[name][0]
                module = build_on_meta(cls, native_config(cls, base / name))
                module.load_state_dict(states[name], strict=True, assign=True)
                save_native(module, tmp / name, dtype=target)
            else:  # a trained transformers text encoder: the base's model with the new weights, its own writer
                module = load_library_component(name, index[name], base / name)
                module.load_state_dict(states[name], strict=True)
                module.to(target).save_pretrained(tmp / name, safe_serialization=True)
        else:
            link_or_copy_tree(base / name, tmp / name)
    index = dict(read_json(base / "model_index.json"))
    index.update(extra_index or {})
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    logger.info("exported %s (trained: %s; linked from %s: the rest)", folder, sorted(states), base)
    return folder
