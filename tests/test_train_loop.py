"""The trainer end to end on CPU (tiny model, demo-world clips, fp32): the loss falls, a resumed run repeats the
uninterrupted one exactly, the export loads in MOVAPipeline and generates, and the logged batches show the
recipe — independent per-modality timesteps through their own shifts, the text-dropout rate, expert routing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from train.trainer import run
from train_helpers import DEMO_OVERRIDES, demo_cache, one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

CONFIG = Path(__file__).resolve().parent.parent / "train" / "configs" / "demo_tiny.yaml"


def _rows(path):
    return [json.loads(line) for line in open(path) if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_checkpoint):
    """30 steps of demo_tiny (batch 4, shifts 5/1, text dropout 0.5), checkpoints at 10/20/30, keep 2."""
    cache = demo_cache(str(tmp_path_factory.getbasetemp()), str(tiny_checkpoint))
    out = tmp_path_factory.mktemp("run") / "a"
    losses = run(tiny_config(tiny_checkpoint, *DEMO_OVERRIDES), cache, out)
    return {"out": out, "losses": losses, "cache": cache}


def test_loss_falls(trained):
    losses = trained["losses"]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:5]), losses
    metrics = _rows(trained["out"] / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 31))
    assert [m["loss"] for m in metrics] == pytest.approx(losses, abs=0)
    m = metrics[-1]
    assert m["loss"] == pytest.approx(m["loss_video"] + m["loss_audio"], rel=1e-6)  # λ_v = λ_a = 1
    assert m["lr/dual_tower_bridge"] == pytest.approx(2 * m["lr/video_dit"])  # per-component learning rates


def test_checkpoints_keep_latest(trained):
    ckpts = sorted(p.name for p in (trained["out"] / "checkpoints").iterdir())
    assert ckpts == ["step-0000020", "step-0000030"]
    assert (trained["out"] / "checkpoints" / "step-0000020" / "COMPLETE").is_file()


def test_resume_repeats_the_uninterrupted_run_exactly(trained, tiny_checkpoint, tmp_path):
    """Steps 21–30 resumed (through the CLI) from the step-20 checkpoint equal those of the uninterrupted run."""
    from train.__main__ import main

    out = tmp_path / "b"
    shutil.copytree(trained["out"] / "checkpoints" / "step-0000020", out / "checkpoints" / "step-0000020")
    shutil.copy(trained["out"] / "config.yaml", out / "config.yaml")
    argv = ["run", str(CONFIG), "--data", str(trained["cache"]), "--out", str(out), "--resume"]
    for item in (f"model.base={tiny_checkpoint}", *DEMO_OVERRIDES):
        argv += ["--set", item]
    assert main(argv) == 0
    resumed = _rows(out / "metrics.jsonl")
    original = _rows(trained["out"] / "metrics.jsonl")[20:]
    assert [r["step"] for r in resumed] == list(range(21, 31))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in original]  # bit-identical on CPU fp32
    for component in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        a = load_file(trained["out"] / "final" / component / "diffusion_pytorch_model.safetensors")
        b = load_file(out / "final" / component / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_loads_and_generates(trained, tiny_checkpoint):
    from mova import MOVAPipeline

    pipe = MOVAPipeline.from_pretrained(trained["out"] / "final", device="cpu")
    result = pipe("A small red ball bounces twice.", height=64, width=64, num_frames=9, fps=12.0,
                  num_inference_steps=2, seed=3)
    assert result.video.shape == (9, 64, 64, 3) and result.audio.shape == (36000,)
    base = load_file(tiny_checkpoint / "dual_tower_bridge" / "diffusion_pytorch_model.safetensors")
    new = load_file(trained["out"] / "final" / "dual_tower_bridge" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(base[k], new[k]) for k in base)  # trained (and re-initialised) weights
    vae = trained["out"] / "final" / "video_vae" / "diffusion_pytorch_model.safetensors"
    assert vae.is_file()  # frozen components come from the base checkpoint


def test_logged_batches_follow_the_recipe(trained):
    rows = _rows(trained["out"] / "batches.jsonl")
    assert len(rows) == 30 and all(len(r["t_video"]) == 4 for r in rows)
    t_v = np.concatenate([r["t_video"] for r in rows])
    t_a = np.concatenate([r["t_audio"] for r in rows])
    sigma_a = np.concatenate([r["sigma_audio"] for r in rows])
    dropped = np.concatenate([r["dropped"] for r in rows])
    # independent timesteps
    assert (t_v != t_a).all()
    # audio σ follows shift 1 (uniform) and not shift 5; video t (over both experts) follows shift 5
    cdf = lambda s: (lambda x: np.clip(x, 0, 1) / (s - (s - 1) * np.clip(x, 0, 1)))  # noqa: E731
    assert stats.kstest(sigma_a, cdf(1.0)).pvalue > 1e-3
    assert stats.kstest(sigma_a, cdf(5.0)).pvalue < 1e-3
    assert stats.kstest(t_v / 1000, cdf(5.0)).pvalue > 1e-3
    # text dropout p = 0.5: within 4 standard deviations of a binomial rate
    n = dropped.size
    assert abs(dropped.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    # every micro-batch on the side of the boundary that its expert owns
    for r in rows:
        high = np.array(r["t_video"]) >= 900.0
        assert high.all() if r["expert"] == 0 else not high.any()
    assert {r["expert"] for r in rows} == {0, 1}


def test_text_dropout_replaces_embeddings_by_the_empty_prompt(trained, tiny_checkpoint):
    from train.trainer import Trainer

    cfg = tiny_config(tiny_checkpoint, "steps=1", "diffusion.text_dropout=1.0", "checkpoint.export=never",
                      "log.batches=false")
    trainer = Trainer(cfg, trained["cache"], trained["out"].parent / "dropout")
    seen = {}
    original = trainer.model.forward

    def spy(video, audio, text, *args, **kwargs):
        seen["text"] = text.detach().clone()
        return original(video, audio, text, *args, **kwargs)

    trainer.model.forward = spy
    trainer.train_step()
    assert torch.equal(seen["text"], trainer.null_text[None].expand_as(seen["text"]))


def test_image_dropout_replaces_the_first_frame_by_the_white_frame(trained, tiny_checkpoint):
    """diffusion.image_dropout: the condition channels of dropped samples are the white frame's (MOVA's T2VA input);
    the draw is logged, and runs without image dropout keep their random stream."""
    from train.trainer import Trainer

    seen = []

    def spy_on(trainer):
        original = trainer.model.forward

        def spy(video, *args, **kwargs):
            seen.append(video[:, 16:].detach().clone())
            return original(video, *args, **kwargs)

        trainer.model.forward = spy

    out = trained["out"].parent / "image_dropout"
    cfg = tiny_config(tiny_checkpoint, "steps=1", "diffusion.image_dropout=1.0", "checkpoint.export=never")
    trainer = Trainer(cfg, trained["cache"], out)
    spy_on(trainer)
    trainer.train_step()
    assert torch.equal(seen[0], trainer.white_cond[None].expand_as(seen[0]))
    trainer.close()
    assert _rows(out / "batches.jsonl")[0]["image_dropped"] == [True] * cfg.data.batch_size
    cfg = tiny_config(tiny_checkpoint, "steps=1", "diffusion.image_dropout=0.0", "checkpoint.export=never",
                      "log.batches=false")
    trainer = Trainer(cfg, trained["cache"], out.parent / "no_image_dropout")
    spy_on(trainer)
    trainer.train_step()
    batch = trainer.data.collate([trainer.data[i] for i in trainer.sampler._epoch_order()[:cfg.data.batch_size]])
    assert torch.equal(seen[1], batch["cond"])  # the clips' own first frames


def test_preloaded_data_gives_the_same_run(trained, tiny_checkpoint, tmp_path):
    """data.preload holds the cache in memory: the same batches, the same losses as reading the shards."""
    losses = run(tiny_config(tiny_checkpoint, *DEMO_OVERRIDES, "steps=4", "checkpoint.every=0",
                             "checkpoint.export=never", "data.preload=true"), trained["cache"], tmp_path / "pre")
    assert losses == trained["losses"][:4]


def test_max_minutes_shortens_the_run_to_fit(trained, tiny_checkpoint, tmp_path):
    """A budget too small for the configured steps: after the timed probe steps the run ends (checkpoint, export)
    and its LR schedule is the shortened one."""
    from train.trainer import BUDGET_PROBE_STEPS

    cfg = tiny_config(tiny_checkpoint, *DEMO_OVERRIDES, "steps=50", "max_minutes=0.0001", "checkpoint.every=0",
                      "log.batches=false")
    losses = run(cfg, trained["cache"], tmp_path / "budget")
    assert len(losses) == BUDGET_PROBE_STEPS
    assert (tmp_path / "budget" / "final" / "model_index.json").is_file()
    assert _rows(tmp_path / "budget" / "metrics.jsonl")[-1]["step"] == BUDGET_PROBE_STEPS


def test_max_minutes_refits_the_lr_schedule(trained, tiny_checkpoint, tmp_path):
    """At 1 s/step with 30 s left of a 1-minute budget the run is cut to 60 steps, and the cosine ends there."""
    from train.trainer import Trainer, lr_factor

    cfg = tiny_config(tiny_checkpoint, "steps=100", "max_minutes=1", "log.batches=false")
    trainer = Trainer(cfg, trained["cache"], tmp_path / "refit")
    trainer.step = 30
    trainer._fit_budget(elapsed=30.0, pace=1.0)
    assert trainer.total_steps == 60
    schedule = dict(warmup=3, warmup_start=0.01, min_ratio=0.1)  # demo_tiny / base.yaml
    for step in (10, 45, 59):
        assert trainer.lr_scheduler.lr_lambdas[0](step) == pytest.approx(lr_factor(step, total=60, **schedule))
    assert trainer.trainer_state()["total_steps"] == 60  # a resumed run keeps the fitted length
    trainer._fit_budget(elapsed=1.0, pace=0.1)  # plenty of time: never beyond cfg.steps
    assert trainer.total_steps == 100
    trainer.close()


def test_audio_only_mode_trains_the_audio_tower(trained, tiny_checkpoint, tmp_path):
    cfg = tiny_config(tiny_checkpoint, "mode=audio_only", "model.train=[audio_dit]", "model.reinit=[]",
                      "steps=3", "checkpoint.every=0", "optim.lr=1.0e-3", "log.batches=false")
    losses = run(cfg, trained["cache"], tmp_path / "audio")
    assert len(losses) == 3 and all(np.isfinite(losses))
    base = load_file(tiny_checkpoint / "video_dit" / "diffusion_pytorch_model.safetensors")
    new = load_file(tmp_path / "audio" / "final" / "video_dit" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(base[k], new[k]) for k in base)  # untouched tower linked from the base
    a0 = load_file(tiny_checkpoint / "audio_dit" / "diffusion_pytorch_model.safetensors")
    a1 = load_file(tmp_path / "audio" / "final" / "audio_dit" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a0[k], a1[k]) for k in a0)


def _small_manifest(tmp_path, tmp_path_factory, n=4):
    from train_helpers import demo_dataset

    lines = demo_dataset(str(tmp_path_factory.getbasetemp())).read_text().splitlines()[:n]
    root = demo_dataset(str(tmp_path_factory.getbasetemp())).parent
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["video_path"] = str(root / row["video_path"])
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_cache_and_run_from_a_manifest(tmp_path, tmp_path_factory, tiny_checkpoint, capsys):
    """``python -m train cache`` with the geometry of a stage config, and ``run --data MANIFEST`` (cached into
    OUT/cache first)."""
    from train.__main__ import main
    from train.latents import LatentCache

    manifest = _small_manifest(tmp_path, tmp_path_factory)
    assert main(["cache", "--manifest", str(manifest), "--model", str(tiny_checkpoint), "--out",
                 str(tmp_path / "cache"), "--config", str(CONFIG), "--device", "cpu"]) == 0
    assert "cached 4 of 4 rows" in capsys.readouterr().out
    assert LatentCache(tmp_path / "cache").meta["num_frames"] == 9
    argv = ["run", str(CONFIG), "--data", str(manifest), "--out", str(tmp_path / "run")]
    for item in (f"model.base={tiny_checkpoint}", "steps=2", "data.batch_size=4", "checkpoint.export=never"):
        argv += ["--set", item]
    assert main(argv) == 0
    assert len(LatentCache(tmp_path / "run" / "cache")) == 4
    assert len(_rows(tmp_path / "run" / "metrics.jsonl")) == 2
    assert main(["run", str(CONFIG), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"),
                 "--set", f"model.base={tiny_checkpoint}"]) == 2  # a ValueError is reported, exit code 2


def test_text_len_must_match_the_checkpoints_prompt_length(trained, tiny_checkpoint, tmp_path):
    """A checkpoint that declares max_sequence_length (the pipeline pads prompts to it) refuses another data.text_len:
    a denoiser trained on 512 padded rows and sampled with 64 would see a different context."""
    from train.trainer import Trainer

    base = tmp_path / "base"
    shutil.copytree(tiny_checkpoint, base)
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "max_sequence_length": 64}))
    with pytest.raises(ValueError, match=r"data\.text_len=512 differs .* max_sequence_length=64"):
        Trainer(tiny_config(base, *DEMO_OVERRIDES, "data.text_len=512"), trained["cache"], tmp_path / "run")


# -- model.train names the text encoder (the demo recipe's stage 2) ----------------------------------------------------

TEXT_LR = "optim.lr={video_dit: 1.0e-3, video_dit_2: 1.0e-3, audio_dit: 1.0e-3, dual_tower_bridge: 2.0e-3, " \
          "text_encoder: 1.0e-3}"
TEXT_TRAIN = "model.train=[video_dit, video_dit_2, audio_dit, dual_tower_bridge, text_encoder]"


def _text_config(checkpoint, *overrides):
    return tiny_config(checkpoint, TEXT_TRAIN, TEXT_LR, "model.reinit=[]", "log.batches=false", *overrides)


def test_training_the_text_encoder_feeds_the_cached_embeddings_at_step_one(trained, tiny_checkpoint):
    """Before its first update the trained text encoder must give the denoiser what the cache holds (the same
    encoder's output): the step-1 text input and loss equal those of a run that reads the cache."""
    from train.trainer import Trainer

    inputs, losses = {}, {}
    for name, extra in (("cached", ["model.reinit=[]", "log.batches=false"]), ("encoded", [TEXT_TRAIN, TEXT_LR])):
        common = ("steps=1", "checkpoint.export=never", "data.batch_size=4")
        cfg = (tiny_config(tiny_checkpoint, *common, *extra) if name == "cached"
               else _text_config(tiny_checkpoint, *common))
        trainer = Trainer(cfg, trained["cache"], trained["out"].parent / f"step1-{name}")
        original = trainer.model.forward

        def spy(video, audio, text, *args, _original=original, _name=name, **kwargs):
            inputs[_name] = text.detach().clone()
            return _original(video, audio, text, *args, **kwargs)

        trainer.model.forward = spy
        losses[name] = trainer.train_step()["loss"]
    dropped = (inputs["cached"] == trainer.null_text[None]).all(dim=(1, 2))
    assert 0 < int(dropped.sum()) < len(dropped)  # both paths: a caption's tokens and the empty prompt's
    torch.testing.assert_close(inputs["encoded"], inputs["cached"], rtol=1e-5, atol=1e-6)
    assert losses["encoded"] == pytest.approx(losses["cached"], rel=1e-5)


def test_text_encoder_trains_exports_and_resumes(trained, tiny_checkpoint, tmp_path):
    """6 steps with the text encoder in model.train: its weights move and are exported in the official layout
    (transformers' files, loaded strictly by MOVAPipeline); steps 4–6 resumed from the step-3 checkpoint repeat
    the uninterrupted run exactly; dropped samples are encoded from the empty prompt's tokens."""
    from mova import MOVAPipeline
    from mova.loading import load_components

    overrides = ("steps=6", "checkpoint.every=3", "checkpoint.keep_latest=2", "data.batch_size=4")
    losses = run(_text_config(tiny_checkpoint, *overrides), trained["cache"], tmp_path / "a")
    assert len(losses) == 6 and all(np.isfinite(losses))
    metrics = _rows(tmp_path / "a" / "metrics.jsonl")
    assert metrics[-1]["lr/text_encoder"] == pytest.approx(metrics[-1]["lr/video_dit"])
    base = load_file(tiny_checkpoint / "text_encoder" / "model.safetensors")
    new = load_file(tmp_path / "a" / "final" / "text_encoder" / "model.safetensors")
    assert set(new) == set(base) and any(not torch.equal(base[k], new[k]) for k in base)
    pipe = MOVAPipeline.from_pretrained(tmp_path / "a" / "final", device="cpu")
    loaded = dict(pipe.text_encoder.state_dict())
    assert all(torch.equal(loaded[k], new[k].to(loaded[k].dtype)) for k in new)
    result = pipe("A small red ball bounces twice.", height=64, width=64, num_frames=9, fps=12.0,
                  num_inference_steps=2, seed=3)
    assert result.video.shape == (9, 64, 64, 3)

    out = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-0000003", out / "checkpoints" / "step-0000003")
    shutil.copy(tmp_path / "a" / "config.yaml", out / "config.yaml")
    run(_text_config(tiny_checkpoint, *overrides), trained["cache"], out, resume=True)
    assert [r["loss"] for r in _rows(out / "metrics.jsonl")] == [r["loss"] for r in metrics[3:]]
    resumed = load_file(out / "final" / "text_encoder" / "model.safetensors")
    assert all(torch.equal(resumed[k], new[k]) for k in new)

    # the empty prompt's encoding, by the exported encoder, is what a dropped sample gets
    comps = load_components(tmp_path / "a" / "final", names=["text_encoder", "tokenizer"])
    from mova.pipeline import encode_tokens, tokenize_prompts

    with torch.no_grad():
        empty = encode_tokens(comps["text_encoder"], *tokenize_prompts(comps["tokenizer"], [""], 16))
    assert empty.shape[1] == 16 and empty[0, 1:].abs().sum() == 0 and empty[0, 0].abs().sum() > 0


def test_text_encoder_training_rejects_lora_and_sharding(tiny_checkpoint):
    with pytest.raises(ValueError, match="model.train=.*with lora.enabled"):
        _text_config(tiny_checkpoint, "lora.enabled=true")
    with pytest.raises(ValueError, match="parallel.strategy='fsdp'.*text_encoder"):
        _text_config(tiny_checkpoint, "parallel.strategy=fsdp")
    with pytest.raises(ValueError, match="model.reinit=.*distinct components from"):
        _text_config(tiny_checkpoint, "model.reinit=[text_encoder]")
