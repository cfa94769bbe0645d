"""Describe and validate a checkpoint folder or a preset without loading any weights.

Parameter counts, dtypes and bytes come from the safetensors headers (every one is read); the validation runs
the loader's checks (model_index.json, links, configs, headers), builds each component on the ``meta`` device
from its ``config.json`` and compares keys and shapes strictly. Each problem is reported on its component's row.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from mova.config import PRESET_NAMES, get_preset
from mova.loading import (
    EXPECTED_CLASSES, LIBRARY_ERRORS, NATIVE_COMPONENTS, CheckpointError, build_on_meta, check_component_entry,
    check_links, checkpoint_tensors, compare_keys, library_class, library_config, listed_components,
    load_library_component, native_config, parameter_count, read_json, read_model_index,
)


@dataclasses.dataclass
class ComponentReport:
    name: str
    cls: str
    parameters: int | None
    dtypes: list[str]
    bytes: int | None
    ok: bool
    detail: str

    def row(self) -> str:
        params = f"{self.parameters:,}" if self.parameters is not None else "-"
        size = "-" if self.bytes is None else (f"{self.bytes / 1e9:.3f} GB" if self.bytes >= 1e8
                                                else f"{self.bytes / 1e6:.2f} MB")
        verdict = "ok" if self.ok else "INVALID"
        return f"{self.name:<18} {self.cls:<28} {params:>16} {','.join(self.dtypes) or '-':<10} {size:>11}  {verdict}"


def _library_meta_module(name: str, subfolder: Path):
    """Build the video VAE or text encoder on meta from its (size-checked) config, for key comparison."""
    config = library_config(name, subfolder)
    cls = library_class(name)
    if name == "video_vae":
        with torch.device("meta"):
            return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    import transformers

    with torch.device("meta"):
        return cls(transformers.UMT5Config.from_dict(config))


def inspect_component(folder: Path, name: str, entry: Any) -> ComponentReport:
    """One component checked as loading checks it, without reading weights: links, configs, every safetensors
    header, keys and shapes (the tokenizer and scheduler are loaded: they are small)."""
    cls_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else str(entry)
    subfolder = folder / name
    try:
        check_component_entry(name, entry, folder / "model_index.json")
        check_links(folder, name)
        if name in ("tokenizer", "scheduler"):
            load_library_component(name, entry, subfolder)
            return ComponentReport(name, cls_name, None, [], None, True, f"{name} loads")
        tensors = checkpoint_tensors(subfolder)
    except (ValueError, OSError) as exc:
        return ComponentReport(name, cls_name, None, [], None, False, str(exc))
    params = sum(t.numel for t in tensors.values())
    nbytes = sum(t.nbytes for t in tensors.values())
    dtypes = sorted({t.dtype for t in tensors.values()})
    try:
        if name in NATIVE_COMPONENTS:
            cls = NATIVE_COMPONENTS[name][0]
            module = build_on_meta(cls, native_config(cls, subfolder, tensors))
        else:
            module = _library_meta_module(name, subfolder)
        report = compare_keys(module, tensors)
        return ComponentReport(name, cls_name, params, dtypes, nbytes, report.ok, report.describe())
    except LIBRARY_ERRORS as exc:  # a config the library cannot build from
        return ComponentReport(name, cls_name, params, dtypes, nbytes, False, str(exc))


def inspect_folder(folder: str | Path) -> list[ComponentReport]:
    """A report per component listed in model_index.json, and one for model_index.json itself when it is refused
    (its components are then still checked where the folder names them)."""
    folder = Path(folder)
    try:
        index = read_model_index(folder)
        reports = []
    except CheckpointError as exc:
        index = _readable_index(folder)
        reports = [ComponentReport("model_index.json", "MOVA", None, [], None, False, str(exc))]
    for name in listed_components(index):
        if name not in EXPECTED_CLASSES:
            reports.append(ComponentReport(name, str(index[name]), None, [], None, False, "unknown component"))
        elif not (folder / name).is_dir():
            reports.append(ComponentReport(name, str(index[name]), None, [], None, False,
                                           f"folder {str(folder / name)!r} is missing"))
        else:
            reports.append(inspect_component(folder, name, index[name]))
    return reports


def _readable_index(folder: Path) -> dict[str, Any]:
    """The refused model_index.json's entries, when it is a JSON object in the folder (else none)."""
    try:
        check_links(folder, "model_index.json")
        return read_json(folder / "model_index.json")
    except ValueError:
        return {}


def inspect_preset(name: str, dtype_bytes: int = 2) -> list[ComponentReport]:
    """Parameter counts of a preset's components, built on meta; bytes at ``dtype_bytes`` per parameter."""
    preset = get_preset(name)
    reports = []
    specs = [("video_dit", preset.video_dit), ("video_dit_2", preset.video_dit), ("audio_dit", preset.audio_dit),
             ("dual_tower_bridge", preset.bridge), ("audio_vae", preset.audio_vae)]
    for comp, config in specs:
        module = build_on_meta(NATIVE_COMPONENTS[comp][0], config)
        n = parameter_count(module)
        reports.append(ComponentReport(comp, NATIVE_COMPONENTS[comp][1][1], n, ["bf16" if dtype_bytes == 2 else "f32"],
                                       n * dtype_bytes, True, f"{len(module.state_dict())} tensors"))
    return reports


def run(target: str, as_json: bool = False) -> tuple[str, bool]:
    """Text (or JSON) report for a folder path or preset name, and whether everything validated."""
    if target in PRESET_NAMES and not Path(target).exists():
        reports = inspect_preset(target)
        title = f"preset {target} (built on meta; bytes at bf16)"
    else:
        reports = inspect_folder(target)
        title = f"checkpoint {target}"
    ok = all(r.ok for r in reports)
    if as_json:
        return json.dumps({"target": target, "valid": ok, "components": [dataclasses.asdict(r) for r in reports]},
                          indent=2), ok
    lines = [title, f"{'component':<18} {'class':<28} {'parameters':>16} {'dtypes':<10} {'bytes':>11}  check"]
    lines += [r.row() for r in reports]
    total = sum(r.parameters or 0 for r in reports)
    lines.append(f"total parameters: {total:,}")
    lines += [f"  {r.name}: {r.detail}" for r in reports if not r.ok]
    lines.append("verdict: valid" if ok else "verdict: INVALID")
    return "\n".join(lines), ok
