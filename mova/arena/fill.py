"""Filling the pool with the local pipeline: every prompt × every model spec, then an import.

``--model NAME=SOURCE[:key=value,...]``: ``SOURCE`` is a checkpoint folder or ``demo``; keys are the generation
settings (every field of ``mova.settings.GenerationSettings`` but the prompt and first frame: ``height``,
``num_frames``, ``guidance``, ``text_scale``, ``seed``…) and loading (``device``, ``dtype``, ``offload``). Two specs
may share a checkpoint and differ in settings: the arena compares whatever the names stand for.

Each prompt gets one seed (``--seed`` + its index) shared by every model, so models are compared on the
same noise. Results are written by the one clip writer (``mova.outputs.save_clip``) as
``<pool>/<model>/<prompt_id>_seed<seed>.mp4`` with its sidecar, plus the arena's ``prompt``, ``prompt_id``,
``model`` (the spec's name) and ``category``, which ``import_folder`` reads; existing results are kept (so an
interrupted run resumes) unless ``overwrite``.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mova.arena.pool import ImportReport, import_folder, read_manifest
from mova.arena.service import ArenaService
from mova.outputs import save_clip
from mova.settings import GenerationSettings

logger = logging.getLogger(__name__)

LOAD_KEYS: dict[str, type] = {"device": str, "dtype": str, "offload": str}
PROMPT_FIELDS = ("prompt_id", "prompt", "first_frame", "category", "prompt_set")

PipelineFactory = Callable[..., Any]  # (source, device=, dtype=, offload=) -> pipe


def spec_keys() -> dict[str, type]:
    """Keys a model spec may set: the generation settings (not the prompt or a media input such as the first frame:
    those belong to a prompt) and loading."""
    from mova.settings import setting_fields

    keys = {name: spec.kind for name, _, spec in setting_fields() if name != "prompt" and spec.media is None}
    return {**keys, **LOAD_KEYS}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # checkpoint folder or "demo"
    settings: dict[str, Any] = field(default_factory=dict)

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(generation settings, load kwargs)."""
        generation = {k: v for k, v in self.settings.items() if k not in LOAD_KEYS}
        return generation, {k: v for k, v in self.settings.items() if k in LOAD_KEYS}


@dataclass(frozen=True)
class PromptItem:
    prompt_id: str
    prompt: str
    first_frame: Path | None = None
    category: str = ""
    prompt_set: str = ""


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=SOURCE[:key=value,...]`` → ``ModelSpec``; raises ValueError naming what is wrong."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--model {text!r} is not allowed; use NAME=DIR_OR_demo[:key=value,...]")
    source, settings_text = rest, ""
    head, colon, tail = rest.rpartition(":")
    if colon and "=" in tail:
        source, settings_text = head, tail
    keys = spec_keys()
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in settings_text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in keys:
            raise ValueError(f"--model {text!r}: setting {item!r} is not allowed; keys: {', '.join(keys)}")
        try:
            settings[key] = keys[key](value)
        except ValueError as exc:
            raise ValueError(f"--model {text!r}: {key}={value!r} is not a {keys[key].__name__}") from exc
    spec = ModelSpec(name=name.strip(), source=source.strip(), settings=settings)
    try:  # every value checked now, not after the first model has loaded
        GenerationSettings(prompt="check", **spec.split()[0])
    except ValueError as exc:
        raise ValueError(f"--model {text!r}: {exc}") from None
    return spec


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Prompts from JSONL/CSV (``prompt_id``, ``prompt``, optional ``first_frame``, ``category``,
    ``prompt_set``; relative frames are relative to the file) or plain text (one prompt per line)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"prompts={str(path)!r} does not exist")
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [PromptItem(prompt_id=f"p{i:04d}", prompt=line) for i, line in enumerate(filter(None, lines), 1)]
    items = []
    for label, record in read_manifest(path):
        if isinstance(record, str):
            raise ValueError(f"prompts {path.name} {label}: {record}")
        unknown = sorted(set(record) - set(PROMPT_FIELDS))
        if unknown or not record.get("prompt_id") or not record.get("prompt"):
            raise ValueError(
                f"prompts {path.name} {label}: needs prompt_id and prompt"
                + (f"; unknown field {', '.join(map(repr, unknown))}" if unknown else "")
            )
        frame = record.get("first_frame")
        items.append(PromptItem(prompt_id=str(record["prompt_id"]), prompt=str(record["prompt"]),
                                first_frame=(path.parent / frame).resolve() if frame else None,
                                category=str(record.get("category", "")), prompt_set=str(record.get("prompt_set", ""))))
    return items


def _default_pipeline_factory(source: str, **load: Any) -> Any:
    from mova import MOVAPipeline  # torch is imported here, not when the arena is imported

    return MOVAPipeline.from_pretrained(source, **load)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def generate_pool(
    service: ArenaService,
    prompts: list[PromptItem],
    models: list[ModelSpec],
    *,
    pool_dir: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    pipeline_factory: PipelineFactory = _default_pipeline_factory,
) -> list[ImportReport]:
    """Generate every prompt with every model into the pool, then import the results."""
    if not prompts or not models:
        raise ValueError("generate needs at least one prompt and one --model")
    names = [m.name for m in models]
    if len(set(names)) != len(names) or len({_slug(n) for n in names}) != len(names):
        raise ValueError(f"--model names must be distinct (also as folder names): {names}")
    pool = Path(pool_dir).expanduser().resolve() if pool_dir else (service.pool_dir or service.default_pool_dir())
    pool.mkdir(parents=True, exist_ok=True)
    pool = service.set_pool_dir(pool)

    # 1. first frames go into the pool, so the prompts' frames are served from inside it
    frames: dict[str, str] = {}
    for item in prompts:
        if item.first_frame is not None:
            if not item.first_frame.is_file():
                raise ValueError(f"first_frame={str(item.first_frame)!r} of prompt {item.prompt_id!r} does not exist")
            target = pool / "first_frames" / f"{_slug(item.prompt_id)}{item.first_frame.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.first_frame, target)
            frames[item.prompt_id] = target.relative_to(pool).as_posix()

    # 2. one model at a time, so only one pipeline is in memory
    reports = []
    for spec in models:
        generation, load = spec.split()
        folder = pool / _slug(spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        pipe = None
        for index, item in enumerate(prompts):
            clip_seed = generation.get("seed", seed + index)
            stem = f"{_slug(item.prompt_id)}_seed{clip_seed}"
            out = folder / f"{stem}.mp4"
            if out.exists() and out.with_suffix(".json").exists() and not overwrite:
                logger.info("keeping %s", out.relative_to(pool))
                continue
            if pipe is None:
                logger.info("loading %s from %s", spec.name, spec.source)
                pipe = pipeline_factory(spec.source, **load)
            settings = GenerationSettings(**{**generation, "seed": clip_seed}, prompt=item.prompt,
                                          image=None if item.first_frame is None else str(item.first_frame))
            logger.info("generating %s / %s (seed %d)", spec.name, item.prompt_id, clip_seed)
            extra = {"prompt": item.prompt, "prompt_id": item.prompt_id, "model": spec.name, "source": spec.source}
            extra.update({k: v for k, v in (("category", item.category), ("prompt_set", item.prompt_set),
                                            ("first_frame", frames.get(item.prompt_id))) if v})
            save_clip(pipe(settings), folder, stem, extra=extra)
        del pipe
        reports.append(import_folder(service, folder, pool_dir=pool))
    return reports
