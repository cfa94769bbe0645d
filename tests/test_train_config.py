"""Run configs (YAML, base chains, --set overrides, validation), the stage values, the LR schedule, data order,
expert routing and the CLI flag set — no model, no data: milliseconds."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml

from train.config import DEFAULT_LORA_TARGETS, TrainConfig
from train.data import PrepareConfig
from train.schedule import lr_factor
from train.trainer import ResumableSampler, expert_mass
from train.vae.configuration import VAETrainConfig
from train.yaml_config import ConfigError, apply_overrides, dump_config, from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "train" / "configs"
VAE_CONFIGS = ROOT / "train" / "vae_configs"
config_from_dict = functools.partial(from_dict, TrainConfig)
load_stage = functools.partial(load_config, TrainConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_stage_config_loads_and_round_trips(path):
    cfg = load_stage(path)
    assert cfg.name == (path.stem if path.stem != "base" else "run")
    assert from_dict(TrainConfig, yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize("path", sorted(VAE_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_vae_config_loads(path):
    cfg = load_config(VAETrainConfig, path)
    assert cfg.kind == path.stem.split("_")[-1]  # demo_video, tiny_audio, ...
    assert cfg.world_config().sample_rate > 0 and cfg.steps > 0


@pytest.mark.parametrize("cls, text, key, message", [
    (TrainConfig, "steps: 10\noptim: {lrr: 1.0e-4}\n", "optim.lrr", "optim.lrr=0.0001 is invalid: unknown key; optim has"),
    (TrainConfig, "diffusion:\n  text_dropout: lots\n", "diffusion.text_dropout",
     "diffusion.text_dropout='lots' is invalid: expected a number"),
    (TrainConfig, "model: {train: [video_dit, vae]}\n", "model.train",
     "model.train=['video_dit', 'vae'] is invalid: expected a list of distinct components"),
    (VAETrainConfig, "kind: video\nmodel: {}\nbatch_size: 2.5\n", "batch_size",
     "batch_size=2.5 is invalid: expected an integer"),
    (VAETrainConfig, "kind: video\nmodel: {}\nloss: {pixl: 1}\n", "loss.pixl", "loss.pixl=1 is invalid: unknown key"),
    (PrepareConfig, "cut: {fps: 24, crf: high}\n", "cut.crf", "cut.crf='high' is invalid: expected an integer"),
])
def test_a_wrong_key_or_type_names_the_key_and_the_file(tmp_path, cls, text, key, message):
    path = tmp_path / "wrong.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")) as info:
        load_config(cls, path)
    assert info.value.key == key and info.value.source == str(path)


def test_errors_name_the_file_of_the_base_chain_or_the_override_that_set_the_key(tmp_path):
    (tmp_path / "a.yaml").write_text("steps: 5\ndiffusion: {expert_routing: random}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.yaml'}: diffusion.expert_routing='random'")):
        load_stage(tmp_path / "b.yaml")
    with pytest.raises(ValueError, match=re.escape("--set: steps=0 is invalid: expected an integer > 0")):
        load_stage(tmp_path / "b.yaml", ["diffusion.expert_routing=alternate", "steps=0"])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'b.yaml'}: model.train=")):  # a defaulted key
        load_stage(tmp_path / "b.yaml", ["diffusion.expert_routing=alternate", "mode=audio_only"])


def test_paper_values():
    p1, p2, p3 = (load_stage(CONFIGS / f"phase{i}.yaml") for i in (1, 2, 3))
    assert (p1.diffusion.shift_video, p1.diffusion.shift_audio, p1.diffusion.text_dropout) == (5.0, 1.0, 0.5)
    assert p1.model.reinit == ["dual_tower_bridge"] and (p1.data.height, p1.data.width) == (352, 640)
    assert (p2.diffusion.shift_video, p2.diffusion.shift_audio, p2.diffusion.text_dropout) == (5.0, 5.0, 0.2)
    assert p2.model.reinit == [] and (p3.data.height, p3.data.width) == (720, 1280)
    for cfg in (p1, p2, p3):
        assert cfg.lr_for("dual_tower_bridge") == 2e-5 and cfg.lr_for("video_dit") == 1e-5
        assert cfg.diffusion.independent_timesteps and cfg.diffusion.expert_routing == "proportional"
    ap = load_stage(CONFIGS / "audio_pretrain.yaml")
    assert ap.mode == "audio_only" and ap.model.train == ["audio_dit"]
    lora, low = load_stage(CONFIGS / "lora.yaml"), load_stage(CONFIGS / "lora_low_memory.yaml")
    assert lora.lora.enabled and (lora.lora.rank, lora.lora.alpha, lora.optim.optimizer) == (16, 16.0, "adamw")
    assert tuple(lora.lora.target_modules) == DEFAULT_LORA_TARGETS
    assert (low.lora.rank, low.optim.optimizer, low.parallel.cpu_offload) == (8, "adamw8bit", True)


def test_overrides_parse_yaml_values():
    cfg = load_stage(CONFIGS / "phase1.yaml", ["steps=7", "optim.lr.dual_tower_bridge=3e-5", "model.base=/x",
                                                "diffusion.text_dropout=0.25", "model.reinit=[]"])
    assert cfg.steps == 7 and cfg.lr_for("dual_tower_bridge") == 3e-5 and cfg.lr_for("audio_dit") == 1e-5
    assert cfg.model.base == "/x" and cfg.diffusion.text_dropout == 0.25 and cfg.model.reinit == []
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["steps"])


@pytest.mark.parametrize("change, field", [
    ({"diffusion": {"expert_routing": "random"}}, "diffusion.expert_routing"),
    ({"diffusion": {"text_dropout": 1.5}}, "diffusion.text_dropout"),
    ({"data": {"num_frames": 10}}, "data.num_frames"),
    ({"data": {"height": 100}}, "data.height"),
    ({"optim": {"optimizer": "sgd"}}, "optim.optimizer"),
    ({"optim": {"lr": {"video_dit": 1e-5}}}, "optim.lr"),
    ({"model": {"train": ["vae"]}}, "model.train"),
    ({"model": {"reinit": ["audio_dit"], "train": ["video_dit"]}}, "model.reinit"),
    ({"mode": "video_only"}, "mode"),
    ({"mode": "audio_only"}, "model.train"),
    ({"parallel": {"strategy": "tp"}}, "parallel.strategy"),
    ({"parallel": {"strategy": "ddp", "cpu_offload": True}}, "parallel.strategy"),
    ({"checkpoint": {"export": "sometimes"}}, "checkpoint.export"),
    ({"steps": 0}, "steps"),
    ({"steps": "many"}, "steps"),
])
def test_invalid_values_name_the_field(change, field):
    with pytest.raises(ValueError, match=rf"{field.replace('.', '[.]')}="):
        config_from_dict(change)


def test_unknown_keys_list_allowed_ones():
    with pytest.raises(ValueError, match=r"optim.lrr=0.0001 is invalid: unknown key; optim has \['optimizer', 'lr'"):
        config_from_dict({"optim": {"lrr": 1e-4}})


def test_base_chain_and_self_reference(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nsteps: 5\ndiffusion: {shift_audio: 2.0}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ndiffusion: {text_dropout: 0.3}\n")
    cfg = load_stage(tmp_path / "b.yaml")
    assert (cfg.name, cfg.steps, cfg.diffusion.shift_audio, cfg.diffusion.text_dropout) == ("b", 5, 2.0, 0.3)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_stage(tmp_path / "c.yaml")


def test_lr_schedule_warmup_then_cosine():
    f = lambda s: lr_factor(s, total=100, warmup=10, warmup_start=0.01, min_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.01) and f(5) == pytest.approx(0.505) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_expert_mass_matches_boundary():
    # σ = 5u/(1+4u) ≥ 0.9 ⇔ u ≥ 9/14
    assert expert_mass(5.0, 0.9) == pytest.approx(5 / 14)
    assert expert_mass(1.0, 0.9) == pytest.approx(0.1)


def test_sampler_epochs_and_resume():
    a = ResumableSampler(10, 4, seed=3)
    batches = [a.next() for _ in range(5)]  # 2 per epoch (drop last), 3 epochs touched
    assert all(len(b) == 4 and len(set(b)) == 4 for b in batches)
    assert len(set(batches[0] + batches[1])) == 8  # one epoch: no sample twice
    b = ResumableSampler(10, 4, seed=3)
    [b.next() for _ in range(3)]
    c = ResumableSampler(10, 4, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next() for _ in range(2)] == batches[3:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableSampler(3, 4, seed=0)


def test_repeated_blocks_found_once_with_checkpointing():
    from mova.config import tiny_preset
    from mova.models import AudioDiT, DualTowerBridge, DualTowerDenoiser, VideoDiT
    from train.parallel import apply_activation_checkpointing, repeated_blocks

    p = tiny_preset()
    model = DualTowerDenoiser(VideoDiT(**p.video_dit), AudioDiT(**p.audio_dit), DualTowerBridge(**p.bridge),
                              VideoDiT(**p.video_dit))
    n_blocks = 2 * p.video_dit["num_layers"] + p.audio_dit["num_layers"] + 2 * len(model.bridge.layers)
    keys = list(model.state_dict())
    assert len(list(repeated_blocks(model))) == n_blocks
    assert apply_activation_checkpointing(model) == n_blocks
    assert len(list(repeated_blocks(model))) == n_blocks and list(model.state_dict()) == keys


def test_cli_flags_are_frozen():
    from train.__main__ import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    flags = {name: sorted(o for a in p._actions for o in a.option_strings if o not in ("-h", "--help"))
             for name, p in sub.items()}
    assert flags == {
        "run": ["--data", "--out", "--resume", "--set"],
        "cache": ["--audio-only", "--batch-size", "--config", "--device", "--fps", "--height", "--manifest", "--model", "--num-frames",
                  "--out", "--part", "--shard-size", "--text-dtype", "--text-len", "--width"],
        "config": ["--set"],
    }


def test_vae_cli_flags_are_frozen():
    from train.vae.loop import build_parser

    parser = build_parser()
    flags = sorted(o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help"))
    assert flags == ["--batch", "--config", "--device", "--max-minutes", "--out", "--resume", "--set", "--steps",
                     "--workers"]
    assert parser.parse_args(["audio", "--out", "x"]).kind == "audio"
