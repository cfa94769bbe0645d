"""Checkpoint folders as other code writes them, and broken or hostile ones.

* Tolerance: configs written the way diffusers' ``save_pretrained`` writes them for the official classes
  (``_class_name``, ``_diffusers_version``, the scheduler's ``num_inference_steps``, a field of a later release) load
  and generate; unused keys are logged once, errors on known keys name the key and the file.
* Refusal: truncated or garbage safetensors, pickle-only weights, links and shard names leaving the folder, absurd
  sizes, classes the pipeline does not drive and bad pipeline settings are refused before anything is loaded, with
  a ValueError naming the file; ``inspect`` reports the same on the component's row (exit 1, no traceback) and the
  app says it cannot start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mova import MOVAPipeline
from mova.checkpoint_report import run as inspect_run
from mova.config import CheckpointError
from mova.loading import load_components
from mova.scheduler import FlowMatchPairScheduler

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_CLASSES = {"video_dit": "WanModel", "video_dit_2": "WanModel", "audio_dit": "WanAudioModel",
                    "dual_tower_bridge": "DualTowerConditionalBridge", "audio_vae": "DAC",
                    "video_vae": "AutoencoderKLWan"}
FUTURE = "attention_sink_tokens"  # a field some later release might add
SMALL = dict(height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=2, seed=3, loudness_lufs=None)


@pytest.fixture()
def ckpt(tiny_checkpoint, tmp_path):
    """A private copy of the session's tiny checkpoint that a test may change."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def diffusers_save_config(folder: Path, class_name: str, config_name: str, values: dict) -> dict:
    """Write ``values`` exactly as diffusers' ``save_pretrained`` writes the config of a ``ConfigMixin`` class called
    ``class_name`` whose ``__init__`` registered them (``@register_to_config``); returns what was written."""
    from diffusers.configuration_utils import ConfigMixin

    obj = type(class_name, (ConfigMixin,), {"config_name": config_name})()
    obj.register_to_config(**values)
    obj.save_config(folder)
    return read(folder / config_name)


def save_like_diffusers(folder: Path) -> None:
    """Rewrite every component's config of a checkpoint as the official code's save_pretrained would: diffusers
    metadata, the official scheduler's registered ``num_inference_steps``, and one unknown future field each."""
    for name, class_name in OFFICIAL_CLASSES.items():
        fields = {k: v for k, v in read(folder / name / "config.json").items() if not k.startswith("_")}
        written = diffusers_save_config(folder / name, class_name, "config.json",
                                        {**fields, FUTURE: 4, "_name_or_path": f"checkpoints/MOVA-360p/{name}"})
        assert written["_class_name"] == class_name and "_diffusers_version" in written and written[FUTURE] == 4
    sched = {k: v for k, v in read(folder / "scheduler" / "scheduler_config.json").items() if not k.startswith("_")}
    official = {"num_train_timesteps": 1000, "shift": 5.0, "sigma_max": 1.0, "sigma_min": 0.003 / 1.002,
                "inverse_timesteps": False, "extra_one_step": True, "reverse_sigmas": False,
                "exponential_shift": False, "shift_terminal": None, "num_inference_steps": 100}
    written = diffusers_save_config(folder / "scheduler", "FlowMatchPairScheduler", "scheduler_config.json",
                                    {**official, **sched, FUTURE: 4})
    assert written["num_inference_steps"] == 100 and written["_class_name"] == "FlowMatchPairScheduler"
    for path in (folder / "text_encoder" / "config.json", folder / "tokenizer" / "tokenizer_config.json",
                 folder / "model_index.json"):
        write(path, {**read(path), FUTURE: 4})


# ----------------------------------------------------------------------------------------------------------------
# 1. Tolerance
# ----------------------------------------------------------------------------------------------------------------


def test_checkpoint_saved_like_diffusers_loads_and_generates(ckpt, tiny_checkpoint, caplog):
    save_like_diffusers(ckpt)
    with caplog.at_level(logging.INFO, logger="mova"):
        pipe = MOVAPipeline.from_pretrained(ckpt, device="cpu", torch_dtype="fp32")
    # each of our configs says once (the loader reads it twice) that the future field is ignored, naming the file
    for name in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae"):
        said = [r for r in caplog.records if str(ckpt / name / "config.json") in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING and FUTURE in said[0].getMessage(), name
    said = [r.getMessage() for r in caplog.records if "scheduler_config.json" in r.getMessage()]
    assert len(said) == 1 and FUTURE in said[0] and "num_inference_steps" in said[0]
    assert public(pipe.scheduler.config) == public(FlowMatchPairScheduler().config)

    result = pipe("A small red ball bounces twice on a wooden floor.", **SMALL)
    assert result.video.shape == (9, 64, 64, 3) and np.isfinite(result.audio).all()
    # the ignored keys change nothing: the same clip as from the checkpoint as we write it
    reference = MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu", torch_dtype="fp32")(
        "A small red ball bounces twice on a wooden floor.", **SMALL)
    assert np.array_equal(result.video, reference.video) and np.array_equal(result.audio, reference.audio)


def public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_inspect_accepts_a_checkpoint_saved_like_diffusers(ckpt):
    save_like_diffusers(ckpt)
    text, ok = inspect_run(str(ckpt))
    assert ok, text


def test_official_scheduler_config_is_quiet(tmp_path, caplog):
    """``num_inference_steps``, which the official class registers, is ignored at INFO: no warning on every load."""
    folder = tmp_path / "scheduler"
    folder.mkdir()
    write(folder / "scheduler_config.json", {"_class_name": "FlowMatchPairScheduler", "_diffusers_version": "0.36.0",
                                             "shift": 5, "extra_one_step": True, "num_inference_steps": 100})
    from mova.loading import load_library_component

    with caplog.at_level(logging.INFO, logger="mova"):
        scheduler = load_library_component("scheduler", ["mova.diffusion.schedulers.flow_match_pair",
                                                         "FlowMatchPairScheduler"], folder)
    assert public(scheduler.config) == public(FlowMatchPairScheduler().config)
    assert [r.levelno for r in caplog.records if "num_inference_steps" in r.getMessage()] == [logging.INFO]


def test_in_code_configs_stay_strict():
    """A dict built in code has no file to be tolerant about: an unknown key there is a typo."""
    from mova.models import VideoDiT

    with pytest.raises(TypeError, match="num_hedas"):
        VideoDiT(num_hedas=3)
    with pytest.raises(TypeError, match="shfit"):
        FlowMatchPairScheduler(shfit=3.0)


@pytest.mark.parametrize("component, key, value, expected", [
    ("video_dit", "num_heads", "40", "an integer"),
    ("video_dit", "num_layers", 2.5, "an integer"),
    ("video_dit", "eps", "1e-6", "a positive number"),
    ("video_dit", "patch_size", 2, "a list of 3 integers"),
    ("video_dit", "has_image_input", "false", "false (MOVA checkpoints do not use this Wan branch"),
    ("video_dit", "require_vae_embedding", "true", "true or false"),
    ("audio_dit", "vae_type", "oobleck", "'dac'"),
    ("dual_tower_bridge", "interaction_strategy", 3, "one of ['full'"),
    ("audio_vae", "encoder_rates", [2, "3"], "integers from 1 to 64"),
    ("audio_vae", "sample_rate", -48000, "an integer from 1 to 384000"),
    ("dual_tower_bridge", "audio_fps", -50.0, "a positive number"),
])
def test_bad_values_of_known_keys_name_key_and_file(ckpt, component, key, value, expected):
    path = ckpt / component / "config.json"
    write(path, {**read(path), key: value})
    with pytest.raises(CheckpointError) as err:
        load_components(ckpt)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and f".{key}={value!r} is invalid" in msg and expected in msg, msg


def test_bad_scheduler_value_names_key_and_file(ckpt):
    path = ckpt / "scheduler" / "scheduler_config.json"
    write(path, {**read(path), "shift": "five", "num_inference_steps": 100})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: FlowMatchPairScheduler.shift='five' is invalid"):
        load_components(ckpt)
    write(path, {**read(path), "shift": 5.0, "num_train_timesteps": 10**12})
    with pytest.raises(CheckpointError,
                       match=rf"^{re.escape(str(path))}: FlowMatchPairScheduler.num_train_timesteps=10+ is invalid"):
        load_components(ckpt)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: is not valid JSON"):
        load_components(ckpt)


# ----------------------------------------------------------------------------------------------------------------
# 2. Refusal: every broken folder is refused by the loader and reported by inspect, naming the file
# ----------------------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _pickle_only(folder: Path, name: str) -> None:
    path = folder / name
    state = load_file(path)
    path.unlink()
    torch.save(state, folder / ("pytorch_model.bin" if name == "model.safetensors" else "diffusion_pytorch_model.bin"))


def _link_outside(path: Path) -> None:
    outside = path.parent.parent.parent / f"outside_{path.name}"
    shutil.move(path, outside)
    path.symlink_to(outside)


def _linked_folder(ckpt: Path) -> None:
    """tokenizer/ is a link to a folder inside the checkpoint (fine), one of whose files links outside (not)."""
    shutil.move(ckpt / "tokenizer", ckpt / "shared_tokenizer")
    (ckpt / "tokenizer").symlink_to("shared_tokenizer")
    _link_outside(ckpt / "shared_tokenizer" / "tokenizer.json")


def _shard_outside(folder: Path) -> None:
    """audio_dit as two shards, one of them named through ``../`` in the index."""
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, folder / "part-1.safetensors")
    save_file({k: state[k] for k in keys[half:]}, folder.parent.parent / "part-2.safetensors")
    weight_map = {k: "part-1.safetensors" for k in keys[:half]}
    weight_map.update({k: "../../part-2.safetensors" for k in keys[half:]})
    write(folder / "diffusion_pytorch_model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})


def _config_of(file: str, **changes):
    def change(ckpt: Path) -> None:
        write(ckpt / file, {**read(ckpt / file), **changes})
    return change


def _config(component: str, **changes):
    return _config_of(f"{component}/config.json", **changes)


def _index(**changes):
    def change(ckpt: Path) -> None:
        write(ckpt / "model_index.json", {**read(ckpt / "model_index.json"), **changes})
    return change


# name -> (damage, the file the message must name, the component whose inspect row must say it, words in the message)
BROKEN = {
    "truncated native weights": (lambda c: _truncate(c / "audio_dit" / "diffusion_pytorch_model.safetensors"),
                                 "audio_dit/diffusion_pytorch_model.safetensors", "audio_dit", "not a readable"),
    "garbage native weights": (lambda c: _garbage(c / "dual_tower_bridge" / "diffusion_pytorch_model.safetensors"),
                               "dual_tower_bridge/diffusion_pytorch_model.safetensors", "dual_tower_bridge",
                               "not a readable"),
    "truncated text encoder": (lambda c: _truncate(c / "text_encoder" / "model.safetensors"),
                               "text_encoder/model.safetensors", "text_encoder", "not a readable"),
    "garbage video vae": (lambda c: _garbage(c / "video_vae" / "diffusion_pytorch_model.safetensors"),
                          "video_vae/diffusion_pytorch_model.safetensors", "video_vae", "not a readable"),
    "pickle-only text encoder": (lambda c: _pickle_only(c / "text_encoder", "model.safetensors"),
                                 "text_encoder", "text_encoder", "pytorch_model.bin"),
    "pickle-only video vae": (lambda c: _pickle_only(c / "video_vae", "diffusion_pytorch_model.safetensors"),
                              "video_vae", "video_vae", "diffusion_pytorch_model.bin"),
    "weights linked outside": (lambda c: _link_outside(c / "text_encoder" / "model.safetensors"),
                               "text_encoder/model.safetensors", "text_encoder", "outside the checkpoint folder"),
    "tokenizer linked outside": (lambda c: _link_outside(c / "tokenizer" / "tokenizer_config.json"),
                                 "tokenizer/tokenizer_config.json", "tokenizer", "outside the checkpoint folder"),
    "link outside in a linked folder": (_linked_folder, "tokenizer/tokenizer.json", "tokenizer",
                                        "outside the checkpoint folder"),
    "shard named through ../": (lambda c: _shard_outside(c / "audio_dit"),
                                "audio_dit/diffusion_pytorch_model.safetensors.index.json", "audio_dit",
                                "'../../part-2.safetensors'"),
    "garbage tokenizer": (lambda c: _garbage(c / "tokenizer" / "tokenizer.json"), "tokenizer", "tokenizer",
                          "cannot load the tokenizer"),
    "malformed tokenizer.json": (_config_of("tokenizer/tokenizer.json", model={"type": "Unigram", "vocab": "x"}),
                                 "tokenizer", "tokenizer", "cannot load the tokenizer"),
    "100000 DiT layers": (_config("video_dit", num_layers=100_000), "video_dit/config.json", "video_dit",
                          "num_layers=100000 is invalid: expected an integer from 1 to 512"),
    "huge DiT width": (_config("video_dit_2", dim=2**24, num_heads=2**18), "video_dit_2/config.json", "video_dit_2",
                       "dim=16777216 is invalid"),
    "100000 bridge layers": (_config("dual_tower_bridge", visual_layers=100_000), "dual_tower_bridge/config.json",
                             "dual_tower_bridge", "visual_layers=100000"),
    "100000 text encoder layers": (_config("text_encoder", num_layers=100_000), "text_encoder/config.json",
                                   "text_encoder", "num_layers=100000 is invalid"),
    "100000 VAE blocks": (_config("video_vae", num_res_blocks=100_000), "video_vae/config.json", "video_vae",
                          "num_res_blocks=100000 is invalid"),
    "20 DAC rates": (_config("audio_vae", encoder_rates=[2] * 20, decoder_rates=[2] * 20), "audio_vae/config.json",
                     "audio_vae", "a list of 1 to 16 integers"),
    "config not JSON": (lambda c: (c / "audio_vae" / "config.json").write_bytes(b"\x89PNG\r\n"),
                        "audio_vae/config.json", "audio_vae", "not valid JSON"),
    "a function as text encoder": (_index(text_encoder=["transformers", "pipeline"]), "model_index.json",
                                   "text_encoder", "expected ['transformers', 'UMT5EncoderModel']"),
    "another diffusers class as VAE": (_index(video_vae=["diffusers", "AutoencoderKL"]), "model_index.json",
                                       "video_vae", "expected ['diffusers', 'AutoencoderKLWan']"),
    "not a [library, class] pair": (_index(video_vae="AutoencoderKLWan"), "model_index.json", "video_vae",
                                    "video_vae='AutoencoderKLWan' is invalid"),
    "another class as DiT": (_index(video_dit=["mova.diffusion.models.wan_video_dit", "WanAudioModel"]),
                             "model_index.json", "video_dit", "'WanModel'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_refused_by_loader_and_inspect(ckpt, case):
    damage, file, component, words = BROKEN[case]
    damage(ckpt)
    with pytest.raises(ValueError) as err:
        load_components(ckpt)
    msg = str(err.value)
    assert msg.startswith(str(ckpt / file)) and words in msg, msg
    text, ok = inspect_run(str(ckpt))
    assert not ok and "verdict: INVALID" in text
    row = [line for line in text.splitlines() if line.startswith(f"  {component}: ")]
    assert row and words in row[0], text


@pytest.mark.parametrize("key, value, expected", [
    ("boundary_ratio", "abc", "boundary_ratio='abc' is invalid: expected a number in [0, 1]"),
    ("boundary_ratio", 1.5, "boundary_ratio=1.5 is invalid"),
    ("default_num_frames", -5, "default_num_frames=-5 is invalid: expected an integer from 1 to"),
    ("default_num_frames", 9.5, "default_num_frames=9.5 is invalid"),
    ("max_num_frames", 10**9, "max_num_frames=1000000000 is invalid"),
    ("default_height", 0, "default_height=0 is invalid"),
    ("default_width", "64", "default_width='64' is invalid"),
    ("default_fps", float("nan"), "default_fps=nan is invalid"),
    ("max_sequence_length", 0, "max_sequence_length=0 is invalid"),
    ("max_sequence_length", 10**7, "max_sequence_length=10000000 is invalid"),
    ("default_num_inference_steps", True, "default_num_inference_steps=True is invalid"),
    ("default_text_scale", -1, "default_text_scale=-1 is invalid"),
    ("default_negative_prompt", 5, "default_negative_prompt=5 is invalid: expected a string"),
])
def test_bad_pipeline_settings_refused_naming_key_and_file(ckpt, key, value, expected):
    _index(**{key: value})(ckpt)
    with pytest.raises(CheckpointError) as err:
        MOVAPipeline.from_pretrained(ckpt, device="cpu")
    assert str(err.value).startswith(f"{ckpt / 'model_index.json'}: ") and expected in str(err.value)
    text, ok = inspect_run(str(ckpt))
    assert not ok and expected in text


def test_settings_checked_together(ckpt):
    _index(default_height=1280, default_width=2048)(ckpt)
    with pytest.raises(CheckpointError, match="default_height×default_width=1280×2048 is invalid"):
        load_components(ckpt)
    _index(default_height=64, default_width=64, default_num_frames=1025, default_fps=1.0)(ckpt)
    with pytest.raises(CheckpointError, match=r"1025 / 1 = 1025.0 s is too long"):
        load_components(ckpt)


def test_links_inside_the_folder_and_a_hub_cache_snapshot_load(ckpt, tmp_path):
    """Links are fine while they stay in the checkpoint folder, or in a Hugging Face cache repository's blobs."""
    shared = ckpt / "video_dit_2" / "diffusion_pytorch_model.safetensors"
    shared.unlink()
    shared.symlink_to(Path("..") / "video_dit" / "diffusion_pytorch_model.safetensors")
    repo = tmp_path / "hub" / "models--OpenMOSS-Team--MOVA-tiny"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    shutil.copytree(ckpt, snapshot, symlinks=True)
    for i, file in enumerate(p for p in sorted(snapshot.rglob("*")) if p.is_file() and not p.is_symlink()):
        blob = repo / "blobs" / f"blob{i}"
        shutil.move(file, blob)
        file.symlink_to(os.path.relpath(blob, file.parent))
    comps = load_components(snapshot, names=["video_dit", "video_dit_2", "tokenizer", "text_encoder"])
    a, b = comps["video_dit"].state_dict(), comps["video_dit_2"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert inspect_run(str(snapshot))[1]


def _limit_memory():  # a 12 GB address-space ceiling: a runaway build fails fast instead of filling the machine
    resource.setrlimit(resource.RLIMIT_AS, (12 * 1024**3, 12 * 1024**3))


def test_inspect_cli_reports_broken_folder_without_traceback(ckpt):
    _config("video_dit", num_layers=100_000)(ckpt)
    _truncate(ckpt / "audio_vae" / "diffusion_pytorch_model.safetensors")
    out = subprocess.run([sys.executable, "-m", "mova", "inspect", str(ckpt)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, preexec_fn=_limit_memory)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert "video_dit          WanModel" in out.stdout and "verdict: INVALID" in out.stdout
    assert f"  video_dit: {ckpt / 'video_dit' / 'config.json'}: VideoDiT.num_layers=100000" in out.stdout
    assert f"  audio_vae: {ckpt / 'audio_vae' / 'diffusion_pytorch_model.safetensors'}: is not a readable" \
        in out.stdout


@pytest.mark.slow
def test_app_with_broken_folder_cannot_start(ckpt):
    _truncate(ckpt / "text_encoder" / "model.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in ("SPACE_ID", "WORLD_SIZE", "MOVA_MODEL")}
    out = subprocess.run([sys.executable, "app.py", "--model", str(ckpt), "--no-arena"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    line = f"MOVA Studio cannot start: {ckpt / 'text_encoder' / 'model.safetensors'}: is not a readable safetensors"
    assert line in out.stderr
