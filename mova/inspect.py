"""Describe and validate a checkpoint folder or a preset without loading any weights.

Parameter counts, dtypes and bytes come from the safetensors headers; the validation builds each
component on the ``meta`` device from its ``config.json`` and compares keys and shapes strictly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from mova.config import PRESET_NAMES, get_preset
from mova.loading import (
    LIBRARY_COMPONENTS, NATIVE_COMPONENTS, build_on_meta, checkpoint_tensors, compare_keys, component_names,
    native_config,
    parameter_count, read_json, read_model_index,
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
    """Build a diffusers/transformers component on meta from its config, for key comparison."""
    if name == "video_vae":
        from diffusers import AutoencoderKLWan

        config = {k: v for k, v in read_json(subfolder / "config.json").items() if not k.startswith("_")}
        with torch.device("meta"):
            return AutoencoderKLWan.from_config(config)
    if name == "text_encoder":
        import transformers

        config = transformers.AutoConfig.from_pretrained(subfolder, local_files_only=True)
        cls_name = (config.architectures or ["UMT5EncoderModel"])[0]
        cls = getattr(transformers, cls_name, None) or transformers.UMT5EncoderModel
        with torch.device("meta"):
            return cls(config)
    return None


def inspect_component(folder: Path, name: str, entry: Any) -> ComponentReport:
    cls_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else str(entry)
    subfolder = folder / name
    if name in ("tokenizer", "scheduler"):
        try:
            if name == "scheduler":
                from mova.scheduler import FlowMatchPairScheduler

                FlowMatchPairScheduler.from_pretrained(subfolder)
                detail = "scheduler_config.json valid"
            else:
                files = sorted(p.name for p in subfolder.iterdir())
                if not files:
                    raise ValueError("empty tokenizer folder")
                detail = f"files: {files}"
            return ComponentReport(name, cls_name, None, [], None, True, detail)
        except (ValueError, OSError) as exc:
            return ComponentReport(name, cls_name, None, [], None, False, str(exc))
    try:
        tensors = checkpoint_tensors(subfolder)
    except ValueError as exc:
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
        if module is None:
            return ComponentReport(name, cls_name, params, dtypes, nbytes, True, "not checked (unknown class)")
        report = compare_keys(module, tensors)
        return ComponentReport(name, cls_name, params, dtypes, nbytes, report.ok, report.describe())
    except (ValueError, OSError, TypeError) as exc:
        return ComponentReport(name, cls_name, params, dtypes, nbytes, False, str(exc))


def inspect_folder(folder: str | Path) -> list[ComponentReport]:
    folder = Path(folder)
    index = read_model_index(folder)
    names = component_names(index)
    unknown = [n for n in names if n not in NATIVE_COMPONENTS and n not in LIBRARY_COMPONENTS]
    reports = [inspect_component(folder, n, index[n]) for n in names if n not in unknown]
    reports += [ComponentReport(n, str(index[n]), None, [], None, False, "unknown component") for n in unknown]
    return reports


def inspect_preset(name: str, dtype_bytes: int = 2) -> list[ComponentReport]:
    """Parameter counts of a preset's components, built on meta; bytes at ``dtype_bytes`` per parameter."""
    preset = get_preset(name)
    reports = []
    specs = [("video_dit", preset.video_dit), ("video_dit_2", preset.video_dit), ("audio_dit", preset.audio_dit),
             ("dual_tower_bridge", preset.bridge), ("audio_vae", preset.audio_vae)]
    for comp, config in specs:
        cls = NATIVE_COMPONENTS[comp][0]
        module = build_on_meta(cls, config)
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
