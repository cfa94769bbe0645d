"""Filling the arena pool from a manifest (JSONL or CSV) or from a folder of generation results.

Every clip must lie inside the pool directory: paths are resolved (symlinks and ``..`` included) before
the check, and the store keeps them relative to the pool. Each bad row is rejected with its reason and
the good rows are added in one transaction; ``ImportReport.summary()`` says what happened.

Manifest fields: ``prompt_id``, ``prompt``, ``model``, ``path`` (required); ``first_frame``, ``category``,
``prompt_set``, ``settings`` (a JSON object), ``seed`` (optional). Relative paths are relative to the
pool directory.

A folder of generation results holds ``*.mp4`` files, each with a sidecar ``.json`` of the same name as
the generator writes it: ``{prompt, prompt_id, model, seed, settings}`` (optionally ``category``,
``prompt_set``, ``first_frame``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mova.arena.clips import VIDEO_SUFFIXES
from mova.arena.paths import resolve_in_pool
from mova.arena.service import ArenaService
from mova.arena.store import RESERVED_MODEL_NAMES, ClipRow

MANIFEST_REQUIRED = ("prompt_id", "prompt", "model", "path")
SIDECAR_REQUIRED = ("prompt_id", "prompt", "model")
OPTIONAL_FIELDS = ("first_frame", "category", "prompt_set", "settings", "seed")
MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")


@dataclass
class ImportReport:
    source: str
    pool_dir: str
    added: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (row label, reason)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would add" if self.dry_run else "added"
        lines = [
            f"{self.source}: {verb} {self.added} clips, {self.duplicates} already in the pool, "
            f"{len(self.rejected)} rejected (pool {self.pool_dir})"
        ]
        lines += [f"  rejected {label}: {reason}" for label, reason in self.rejected]
        return "\n".join(lines)


def import_source(
    service: ArenaService, source: str | Path, *, pool_dir: str | Path | None = None, dry_run: bool = False
) -> ImportReport:
    """Import a manifest file or a folder of generation results (chosen by what ``source`` is)."""
    source = Path(source).expanduser()
    if source.is_dir():
        return import_folder(service, source, pool_dir=pool_dir, dry_run=dry_run)
    if source.is_file():
        return import_manifest(service, source, pool_dir=pool_dir, dry_run=dry_run)
    raise ValueError(f"source={str(source)!r} does not exist; give a manifest (.jsonl/.csv) or a folder")


def import_manifest(
    service: ArenaService, manifest: str | Path, *, pool_dir: str | Path | None = None, dry_run: bool = False
) -> ImportReport:
    manifest = Path(manifest).expanduser().resolve()
    pool = _choose_pool(service, pool_dir, default=manifest.parent, dry_run=dry_run)
    report = ImportReport(source=str(manifest), pool_dir=str(pool), dry_run=dry_run)
    checked = [(label, record if isinstance(record, str) else clip_row(record, pool, required=MANIFEST_REQUIRED))
               for label, record in read_manifest(manifest)]  # a str record: an unreadable line
    return _add(service, checked, report)


def import_folder(
    service: ArenaService, folder: str | Path, *, pool_dir: str | Path | None = None, dry_run: bool = False
) -> ImportReport:
    folder = Path(folder).expanduser().resolve()
    pool = _choose_pool(service, pool_dir, default=folder, dry_run=dry_run)
    report = ImportReport(source=str(folder), pool_dir=str(pool), dry_run=dry_run)
    checked: list[tuple[str, ClipRow | str]] = []
    for video in sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        label = str(video.relative_to(folder))
        sidecar = video.with_suffix(".json")
        if not sidecar.is_file():
            checked.append((label, f"missing sidecar {sidecar.name}"))
            continue
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            checked.append((label, f"sidecar {sidecar.name} is not valid JSON ({exc})"))
            continue
        if not isinstance(record, dict):
            checked.append((label, f"sidecar {sidecar.name} is not a JSON object"))
            continue
        if "path" in record:
            checked.append((label, "unknown field 'path' in sidecar (the clip is the file beside it)"))
            continue
        record = {k: v for k, v in record.items() if k not in clip_sidecar_fields()}  # mova.outputs.save_clip's
        checked.append((label, clip_row({**record, "path": str(video)}, pool, required=SIDECAR_REQUIRED)))
    return _add(service, checked, report)


def clip_sidecar_fields() -> set[str]:
    """What a sidecar written by ``mova.outputs.save_clip`` holds besides the arena's fields (file names, figures,
    timings, the checkpoint): read past on import, so any generated clip can join a pool."""
    import dataclasses

    from mova.outputs import Clip

    return {f.name for f in dataclasses.fields(Clip)} - {"seed", "settings", "model"} | {
        "av_offset_ms", "duration_s", "source"}


def read_manifest(path: Path) -> list[tuple[str, dict[str, Any] | str]]:
    """``(row label, record or the reason it cannot be read)`` for each row of a JSONL or CSV manifest."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ValueError(f"manifest={str(path)!r}: suffix {suffix!r} is not allowed; use {', '.join(MANIFEST_SUFFIXES)}")
    out: list[tuple[str, dict[str, Any] | str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle, restkey="__extra__")
            for record in reader:
                label = f"line {reader.line_num}"
                if "__extra__" in record:
                    out.append((label, "more values than header columns"))
                    continue
                out.append((label, {k: v for k, v in record.items() if v not in (None, "")}))
        else:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    out.append((f"line {number}", f"not valid JSON ({exc.msg})"))
                    continue
                if not isinstance(record, dict):
                    out.append((f"line {number}", "not a JSON object"))
                    continue
                out.append((f"line {number}", {k: v for k, v in record.items() if v not in (None, "")}))
    return out


def clip_row(record: dict[str, Any], pool: Path, *, required: tuple[str, ...]) -> ClipRow | str:
    """Validate one record; returns the row to add or the reason it is rejected."""
    allowed = set(required) | set(OPTIONAL_FIELDS) | {"path"}
    unknown = sorted(set(record) - allowed)
    if unknown:
        return f"unknown field {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})"
    missing = [name for name in (*required, "path") if str(record.get(name, "")).strip() == ""]
    if missing:
        return f"missing field {', '.join(map(repr, missing))}"
    model = str(record["model"]).strip()
    if model in RESERVED_MODEL_NAMES:
        return f"model name {model!r} is reserved"

    # 1. the clip: inside the pool, present, a video
    try:
        clip = resolve_in_pool(pool, str(record["path"]))
    except ValueError as exc:
        return str(exc)
    if not clip.is_file():
        return f"missing file {record['path']!r}"
    if clip.suffix.lower() not in VIDEO_SUFFIXES:
        return f"path {record['path']!r} is not a video file ({', '.join(VIDEO_SUFFIXES)})"

    # 2. the first frame (optional): inside the pool, present
    first_frame = None
    if record.get("first_frame"):
        try:
            frame = resolve_in_pool(pool, str(record["first_frame"]))
        except ValueError as exc:
            return f"first_frame: {exc}"
        if not frame.is_file():
            return f"missing file {record['first_frame']!r} (first_frame)"
        first_frame = frame.relative_to(pool).as_posix()

    # 3. settings: a JSON object (CSV carries it as a JSON string), seed folded in
    settings: Any = record.get("settings", {})
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except json.JSONDecodeError:
            return "settings is not valid JSON"
    if not isinstance(settings, dict):
        return "settings is not a JSON object"
    if "seed" in record:
        try:
            settings = {**settings, "seed": int(record["seed"])}
        except (TypeError, ValueError):
            return f"seed {record['seed']!r} is not an integer"

    return ClipRow(
        prompt_id=str(record["prompt_id"]).strip(),
        prompt=str(record["prompt"]).strip(),
        model=model,
        path=clip.relative_to(pool).as_posix(),
        first_frame=first_frame,
        category=str(record.get("category", "")).strip(),
        prompt_set=str(record.get("prompt_set", "")).strip(),
        settings=settings,
    )


def _choose_pool(service: ArenaService, pool_dir: str | Path | None, *, default: Path, dry_run: bool) -> Path:
    """``--pool`` if given, else the arena's recorded pool, else the manifest's folder / the folder."""
    chosen = Path(pool_dir).expanduser().resolve() if pool_dir else (service.pool_dir or default.resolve())
    if not chosen.is_dir():
        raise ValueError(f"pool={str(chosen)!r} is not a directory")
    if dry_run:
        current = service.pool_dir
        if current is not None and current != chosen:
            raise ValueError(f"pool={str(chosen)!r}: this arena's pool directory is {str(current)!r}")
        return chosen
    return service.set_pool_dir(chosen)


def _add(service: ArenaService, checked: list[tuple[str, ClipRow | str]], report: ImportReport) -> ImportReport:
    """Rows refused by their checks (a reason, in order) go to ``report.rejected``; the rest to the store."""
    report.rejected += [(label, row) for label, row in checked if isinstance(row, str)]
    rows = [(label, row) for label, row in checked if not isinstance(row, str)]
    if report.dry_run:
        report.added = len(rows)
        return report
    outcomes = service.store.add_clips([row for _, row in rows])
    for (label, _), outcome in zip(rows, outcomes):
        if outcome == "added":
            report.added += 1
        elif outcome == "duplicate":
            report.duplicates += 1
        else:
            report.rejected.append((label, outcome))
    return report
