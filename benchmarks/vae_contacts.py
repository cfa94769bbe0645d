"""What the demo video VAE keeps of the bouncing balls' floor contacts, under different demo-world timings.

Issue 24 asks to make the demo world representable before any denoiser is trained again: a reconstruction (encode
with the posterior mode, then decode) should keep ≥ 90 % of the visible contacts within ±1 frame. For each timing
below, held-out bouncing-ball clips (seeds disjoint from every training clip) go through the shipped demo VAE
(``assets/demo/video_vae``, or ``--vae``), and the world's own contact detector runs on the reference and on the
reconstruction (``train.vae.losses.detector_agreement``):

* ``recall_within_1_frame``: reference contacts with a reconstructed contact within ±1 frame;
* ``contacts_per_clip``, ``min_gap_frames`` (the closest two contacts of one clip, median over clips) and
  ``latent_frames_per_contact_gap`` (that gap over the VAE's temporal stride, ``scale_factor_temporal``): how much
  room the latent has;
  all of it also for one-ball and two-ball clips apart (two balls may land 0.15 s apart whatever the hops).

The shipped VAE was trained on the current timing (12 fps, 25 frames, hops ≥ 0.3 s), so the other rows say how this
VAE copes with sparser or slower-sampled contacts, not what a VAE trained on them would reach.

    python benchmarks/vae_contacts.py --n 48 --out benchmarks/results/vae_contacts.json
    python benchmarks/vae_contacts.py --current-only --vae RUN/video_vae --out ...   # a fine-tuned decoder
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (fps, num_frames, min_hop_s); the first row is the world the demo model was trained on
TIMINGS = {
    "12 fps, 25 frames, hops >= 0.3 s (current)": (12.0, 25, 0.3),
    "12 fps, 25 frames, hops >= 0.5 s": (12.0, 25, 0.5),
    "12 fps, 25 frames, hops >= 0.7 s": (12.0, 25, 0.7),
    "24 fps, 49 frames, hops >= 0.3 s": (24.0, 49, 0.3),
    "24 fps, 49 frames, hops >= 0.5 s": (24.0, 49, 0.5),
}


@torch.no_grad()
def reconstruct(vae, clips: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 [n, T, H, W, 3] -> the VAE's reconstruction (posterior mode, then decode, on the VAE's device), uint8."""
    from train.vae.clips import video_from_model, video_to_model

    out = []
    for start in range(0, len(clips), batch):
        x = video_to_model(torch.from_numpy(np.ascontiguousarray(clips[start:start + batch]))).to(vae.device)
        out.append(video_from_model(vae.decode(vae.encode(x).latent_dist.mode()).sample.cpu()).numpy())
    return np.concatenate(out)


def measure(vae, fps: float, num_frames: int, min_hop_s: float, n: int, seed: int) -> dict:
    from train.demo_world import bouncing_balls
    from train.demo_world.dataset import clip_seed
    from train.demo_world.detectors import detect_ball_impacts
    from train.demo_world.world import WorldConfig
    from train.vae.losses import detector_agreement

    cfg = WorldConfig(fps=fps, num_frames=num_frames)
    clips = [bouncing_balls(clip_seed(seed, i, "held_out"), cfg, min_hop_s=min_hop_s) for i in range(n)]
    videos = np.stack([c.video for c in clips])
    recon = reconstruct(vae, videos)
    rows = [detector_agreement(p, r, "bouncing_balls", fps) for p, r in zip(recon, videos)]
    balls = [len(c.params["balls"]) for c in clips]
    times = [detect_ball_impacts(v, fps) for v in videos]  # each reference clip's contacts, once
    min_gap = [float(np.diff(t).min() * fps) if len(t) > 1 else None for t in times]

    def figures(keep: list[int]) -> dict:
        contacts = sum(rows[i]["impacts"] for i in keep)
        gaps = [min_gap[i] for i in keep if min_gap[i] is not None]
        return {
            "clips": len(keep), "contacts": contacts, "contacts_per_clip": contacts / max(len(keep), 1),
            "prompted_contacts_per_clip": float(np.mean([sum(b["num_bounces"] for b in clips[i].params["balls"])
                                                         for i in keep])) if keep else None,
            "recall_within_1_frame": sum(rows[i]["impacts_found"] for i in keep) / contacts if contacts else None,
            "min_gap_frames": statistics.median(gaps) if gaps else None,
            "latent_frames_per_contact_gap": statistics.median(gaps) / vae.config.scale_factor_temporal
            if gaps else None,
        }

    return {"fps": fps, "num_frames": num_frames, "min_hop_s": min_hop_s, **figures(list(range(n))),
            "one_ball": figures([i for i in range(n) if balls[i] == 1]),
            "two_balls": figures([i for i in range(n) if balls[i] == 2])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=str(ROOT / "assets" / "demo" / "video_vae"))
    parser.add_argument("--n", type=int, default=48, help="held-out clips per timing")
    parser.add_argument("--seed", type=int, default=0, help="world seed of the held-out split")
    parser.add_argument("--current-only", action="store_true",
                        help="only the first timing (the world the demo model is trained on): for a VAE trained on it")
    parser.add_argument("--device", default="cpu", help="where the VAE runs (float32): cpu, cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vae_contacts.json")
    args = parser.parse_args()
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(args.vae, torch_dtype=torch.float32).to(args.device).eval()
    runs = {}
    for name, (fps, frames, hop) in list(TIMINGS.items())[:1 if args.current_only else None]:
        runs[name] = measure(vae, fps, frames, hop, args.n, args.seed)
        print(name, json.dumps(runs[name]), flush=True)
    report = {"benchmark": "vae_contacts", "vae": Path(args.vae).resolve().relative_to(ROOT).as_posix()
              if Path(args.vae).resolve().is_relative_to(ROOT) else args.vae,
              "temporal_stride": vae.config.scale_factor_temporal,
              "target": "recall_within_1_frame >= 0.90 on held-out clips (issue 24)", "runs": runs,
              "command": "python benchmarks/vae_contacts.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
