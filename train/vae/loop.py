"""The autoencoder training loop and its command line: train, checkpoint (``state.pt``), export, evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from train.metrics import MetricsLogger
from train.schedule import lr_factor
from train.vae.autoencoders import build_model, evaluate, export, latent_statistics, training_losses
from train.vae.clips import ClipPool, generate_clips, read_clips
from train.vae.configuration import DEFAULT_CONFIGS, EXPORT_NAMES, OptimSpec, VAETrainConfig
from train.yaml_config import load_config

logger = logging.getLogger("train.vae")

STATE, EVAL = "state.pt", "eval.json"


def lr_at(step: int, optim: OptimSpec, total: int, time_fraction: float = 0.0) -> float:
    """Learning rate before optimizer step ``step`` (0-based): linear warmup, then the trainer's cosine to
    min_lr_ratio·lr over the larger of the step fraction and ``time_fraction`` (the spent part of ``max_minutes``)."""
    if step < optim.warmup_steps:  # from lr / warmup_steps, reaching lr at step warmup_steps - 1
        return optim.lr * (step + 1) / optim.warmup_steps
    return optim.lr * lr_factor(step, total=total, warmup=optim.warmup_steps, warmup_start=0.0,
                                min_ratio=optim.min_lr_ratio, time_fraction=time_fraction)


def _uses_bf16(cfg: VAETrainConfig, device: torch.device) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def _autocast(cfg: VAETrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=_uses_bf16(cfg, device))


def _save_state(path: Path, cfg: VAETrainConfig, step: int, train_seconds: float, model: nn.Module,
                optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    state = {"step": step, "train_seconds": train_seconds, "config": cfg.to_dict(), "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train(cfg: VAETrainConfig, out: str | os.PathLike, device: str | torch.device | None = None,
          resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train, export and evaluate one autoencoder into ``out``; returns the ``eval.json`` dict (with the loss
    history of this run under ``losses``). ``stop_after`` ends this invocation after that many steps (the
    schedule still spans ``cfg.steps``; ``resume=True`` continues), as ``max_minutes`` does by wall time."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.data.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # 1. Data (generated before the model touches the GPU: worker processes are forked)
    t0 = time.perf_counter()
    if cfg.data.path:
        clips, _ = read_clips(cfg, cfg.data.pool_clips)
    else:
        clips, _ = generate_clips(cfg, cfg.data.pool_clips, "train")
    held_out, held_out_scenes = generate_clips(cfg, cfg.data.held_out_clips, "held_out")
    pool = ClipPool(clips, cfg.kind, cfg.data, device)
    logger.info("%s: %d training clips %s on %s, %d held-out clips (%.1f s)", cfg.kind, len(pool),
                list(clips.shape[1:]), device, len(held_out), time.perf_counter() - t0)

    # 2. Model, optimizer, resumable state
    model = build_model(cfg)
    if cfg.init and not resume:
        from diffusers import AutoencoderKLWan

        model.load_state_dict(AutoencoderKLWan.from_pretrained(cfg.init).state_dict())
        logger.info("starting from the weights of %s", cfg.init)
    model = model.to(device).train()
    if cfg.trainable == "decoder":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("decoder.", "post_quant_conv.")))
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay, fused=device.type == "cuda")
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.data.seed)
    step, prior_seconds = 0, 0.0
    state_path = out / STATE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)  # RNG states must stay on CPU
        if state["config"]["model"] != cfg.model:
            raise ValueError(f"--resume: model config {cfg.model} differs from the checkpoint's "
                             f"{state['config']['model']} in {state_path}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, prior_seconds = state["step"], state.get("train_seconds", 0.0)
        logger.info("resumed from %s at step %d", state_path, step)
    metrics = MetricsLogger(out, enabled=True, tensorboard=False, batches=False, resume_step=step if resume else None)
    logger.info("%s VAE: %.3f M parameters; %d steps of batch %d, lr %.1e, %s", cfg.kind, n_params / 1e6, cfg.steps,
                cfg.batch_size, cfg.optim.lr, "bf16 autocast" if _uses_bf16(cfg, device) else "fp32")

    # 3. Loop
    losses: list[float] = []
    sums: dict[str, torch.Tensor] = {}
    t_start = t_log = time.perf_counter()
    start_step, n_log = step, 0
    budget_s = 60.0 * cfg.max_minutes

    def spent() -> float:  # training seconds of the whole run, earlier invocations included
        return prior_seconds + time.perf_counter() - t_start

    while step < cfg.steps:
        lr = lr_at(step, cfg.optim, cfg.steps, spent() / budget_s if budget_s else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = pool.sample(cfg.batch_size, generator)
        with _autocast(cfg, device):
            terms = training_losses(cfg, model, x)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        step += 1
        for k, v in {**terms, "grad_norm": grad_norm}.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        n_log += 1
        elapsed = time.perf_counter() - t_start
        out_of_time = bool(budget_s) and spent() >= budget_s
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            values = {k: float(v) / n_log for k, v in sums.items()}  # one device sync per log interval
            if not math.isfinite(values["loss"]):
                raise RuntimeError(f"{cfg.kind} VAE: loss is {values['loss']} at step {step}; lower optim.lr")
            now = time.perf_counter()
            sec = (now - t_log) / n_log
            eta = (cfg.steps - step) * elapsed / (step - start_step)
            eta = min(eta, budget_s - spent()) if budget_s else eta
            values.update(lr=lr, sec_per_step=sec, elapsed_s=elapsed)
            metrics.log(step, values)
            losses.append(values["loss"])
            parts = " ".join(f"{k} {values[k]:.4g}" for k in terms if k != "loss")
            logger.info("%s step %d/%d loss %.4f (%s) lr %.2e | %.3f s/step | ETA %s", cfg.kind, step, cfg.steps,
                        values["loss"], parts, lr, sec, _format_seconds(eta))
            sums, n_log, t_log = {}, 0, now
        stop = out_of_time or (stop_after is not None and step - start_step >= stop_after)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
            _save_state(state_path, cfg, step, spent(), model, optimizer, generator)
        if stop and step < cfg.steps:
            logger.info("stopping at step %d of %d (%s)", step, cfg.steps,
                        f"max_minutes={cfg.max_minutes} reached: schedule complete" if out_of_time
                        else f"stop_after={stop_after}; --resume continues")
            break
    metrics.close()
    train_s = spent()
    del pool

    # 4. Latent statistics, export, held-out evaluation (fp32)
    model.eval()
    if cfg.trainable == "decoder":  # the frozen encoder's latent space, normalised exactly as before
        from diffusers import AutoencoderKLWan

        init_config = AutoencoderKLWan.load_config(cfg.init)
        mean, std = list(init_config["latents_mean"]), list(init_config["latents_std"])
    else:
        mean, std = latent_statistics(cfg, model, clips[: cfg.data.stats_clips], device)
    folder = export(cfg, model, out / EXPORT_NAMES[cfg.kind], mean, std)
    result: dict[str, Any] = {
        "kind": cfg.kind, "steps": step, "train_seconds": round(train_s, 1), "device": str(device),
        "parameters": n_params, "export": str(folder),
        "size_mb": {"float32": round(n_params * 4 / 1e6, 2), "bfloat16": round(n_params * 2 / 1e6, 2),
                    "exported": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 2)},
        "latents_mean": mean, "latents_std": std, "held_out": evaluate(cfg, model, held_out, held_out_scenes, device),
        "config": cfg.to_dict(),
    }
    if cfg.kind == "audio":
        dac = cfg.dac_config()
        result.update(sample_rate=dac.sample_rate, hop=dac.hop, latent_rate_hz=dac.latent_rate)
    (out / EVAL).write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result["held_out"].items() if isinstance(v, float)}
    summary.update(result["held_out"].get("detectors", {}))
    logger.info("%s VAE exported to %s; held-out %s; %s written", cfg.kind, folder,
                " ".join(f"{k} {v:.2f}" for k, v in summary.items()), out / EVAL)
    return {**result, "losses": losses}


# --------------------------------------------------------------------------------------------------------
# 6. Command line
# --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.vae",
                                     description="Train the demo checkpoint's video VAE (Wan) or audio VAE (DAC)")
    parser.add_argument("kind", choices=tuple(DEFAULT_CONFIGS), help="which autoencoder")
    parser.add_argument("--out", required=True, help="run folder: metrics.jsonl, state.pt, the export, eval.json")
    parser.add_argument("--config", default=None, help="config YAML (default train/vae_configs/demo_<kind>.yaml)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides the config)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (overrides the config)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=None, help="clip generation processes (default: CPU cores)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock training budget: the LR schedule completes within it, then export")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=5e-4 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    for flag, key in (("steps", "steps"), ("batch", "batch_size"), ("workers", "data.workers"),
                      ("max_minutes", "max_minutes")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        cfg = load_config(VAETrainConfig, args.config or DEFAULT_CONFIGS[args.kind], overrides)
        if cfg.kind != args.kind:
            raise ValueError(f"--config {args.config!r} has kind={cfg.kind!r}, but the command is {args.kind!r}")
        train(cfg, args.out, device=args.device, resume=args.resume)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
