"""The generation modes on the demo checkpoint, scored by the project's own detectors (CPU, a few minutes per part).

    python benchmarks/modes_eval.py                 # every part → benchmarks/results/modes_eval.json
    python benchmarks/modes_eval.py --parts a2v,v2a --n 10 --out /tmp/modes.json

Parts, each on held-out demo-world clips (seeds disjoint from every training clip) and beside a baseline:

* ``a2v`` — audio → video: a held-out ball clip's real sound (+ its first frame and caption) → a generated picture.
  For each visible floor contact in it (``train.demo_world.detect_ball_impacts``) the offset to the nearest onset of
  the given sound (``mova.eval.detect_onsets``), in frames; chance: the same pictures against other clips' sound;
  bridge off: the same run with ``bridge_strength=0`` (the picture cannot hear the sound).
* ``v2a`` — video → audio: a held-out ball clip's real frames → generated sound; for each contact in the given
  frames the offset to the nearest onset of the generated sound; chance: the sounds against other clips' frames;
  bridge off: the sound generated with ``bridge_strength=0``.
  Talking-face clips: the mouth–loudness correlation (``train.demo_world.scoring.score_face``) of the given frames
  and the generated sound, beside other clips' sound.
* ``flf`` — first–last frame: PSNR of the generated last frame against the given one (the reference clip's), with
  and without ``last_image`` (same seed).
* ``extend`` — 3-window chains (``num_windows=3``) with pixel and latent joins: the length against 3 × one clip,
  and at each join the largest frame change and sample jump against the clip's own 95th percentile
  (``mova.eval.seam_figures``).
* ``retake`` — a span of held-out clips generated again (both, video, audio; strength 1 and 0.5): the largest change
  outside the span (must be within the VAE round trip, measured on the same clips) and the mean change inside.
* ``bad_inputs`` — the messages bad inputs get (no model needed).

Every figure is reported as measured, thresholds beside it (``criteria``, ``passed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTS = ("a2v", "v2a", "flf", "extend", "retake", "bad_inputs")
CRITERIA = {
    "a2v": "median |offset| <= 0.75 frame and >= 80 % of impacts within ±2 frames",
    "v2a": "median |offset| <= 0.75 frame and >= 80 % of impacts within ±2 frames",
    "flf": "last-frame PSNR >= 25 dB",
    "extend": "3 windows = 3 × one clip; every join's frame change and sample jump <= the clip's own 95th percentile",
    "retake": "outside the span unchanged to within the VAE round trip; inside it differs",
    "bad_inputs": "each bad input refused with a message naming its field",
}


def impact_figures(offsets_frames: list[float], impacts: int) -> dict:
    """Per-impact figures: ``offsets_frames`` one per visual impact (NaN where the clip has no onset at all)."""
    finite = np.abs(np.array([o for o in offsets_frames if np.isfinite(o)]))
    within = int(np.sum(finite <= 2.0))
    return {"impacts": impacts, "impacts_with_an_onset": int(finite.size),
            "median_abs_offset_frames": float(np.median(finite)) if finite.size else float("nan"),
            "within_2_frames": within, "share_within_2_frames": within / impacts if impacts else float("nan")}


def per_impact(videos, audios, fps, rate, impacts_from: str) -> dict:
    """Offsets of each impact (seen in ``videos``) to the nearest onset of the matching ``audios``."""
    from mova.eval import detect_onsets, nearest_offsets
    from train.demo_world import detect_ball_impacts

    offsets, count = [], 0
    for video, audio in zip(videos, audios):
        impacts = np.asarray(detect_ball_impacts(video, fps))
        count += impacts.size
        offsets += list(nearest_offsets(detect_onsets(audio, rate), impacts) * fps)
    return impact_figures(offsets, count)


def shifted(items: list, k: int = 1) -> list:
    """Another clip's item for each clip (the chance baseline)."""
    return items[k:] + items[:k]


def passes_sync(fig: dict) -> bool:
    return bool(fig["median_abs_offset_frames"] <= 0.75 and fig["share_within_2_frames"] >= 0.8)


# ----------------------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------------------


def run_a2v(pipe, args) -> dict:
    from train.demo_world import held_out_prompts

    prompts = held_out_prompts(args.n, seed=args.prompt_seed, scenes=["bouncing_balls"])
    fps, rate = prompts[0].clip.fps, prompts[0].clip.sample_rate
    videos, sounds, unbridged = [], [], []
    for i, p in enumerate(prompts):
        r = pipe(p.caption, image=p.first_frame, audio=(p.clip.audio, rate), seed=args.generation_seed + i)
        assert np.array_equal(r.audio, p.clip.audio[:r.audio.shape[0]]), "A2V must carry the given sound"
        videos.append(r.video)
        sounds.append(r.audio)
        # the same with the bridge off: the picture cannot hear the sound (what the first frame and prompt give)
        unbridged.append(pipe(p.caption, image=p.first_frame, audio=(p.clip.audio, rate), bridge_strength=0.0,
                              seed=args.generation_seed + i).video)
        log(f"a2v {i + 1}/{len(prompts)}")
    out = {"clips": len(prompts), "task": "real sound + first frame + caption -> picture",
           "generated": per_impact(videos, sounds, fps, rate, "generated"),
           "chance_other_clips_sound": per_impact(videos, shifted(sounds), fps, rate, "generated"),
           "bridge_off": per_impact(unbridged, sounds, fps, rate, "generated"),
           "reference_clips": per_impact([p.clip.video for p in prompts], [p.clip.audio for p in prompts], fps,
                                         rate, "reference")}
    out["passed"] = passes_sync(out["generated"])
    return out


def run_v2a(pipe, args) -> dict:
    from train.demo_world import held_out_prompts
    from train.demo_world.scoring import score_face

    prompts = held_out_prompts(args.n, seed=args.prompt_seed, scenes=["bouncing_balls"])
    fps, rate = prompts[0].clip.fps, prompts[0].clip.sample_rate
    videos, sounds, unbridged = [], [], []
    for i, p in enumerate(prompts):
        r = pipe(p.caption, video=p.clip.video, seed=args.generation_seed + i)
        assert np.array_equal(r.video, p.clip.video), "V2A must carry the given frames"
        videos.append(p.clip.video)
        sounds.append(r.audio)
        unbridged.append(pipe(p.caption, video=p.clip.video, bridge_strength=0.0, seed=args.generation_seed + i).audio)
        log(f"v2a {i + 1}/{len(prompts)}")
    faces = held_out_prompts(args.n_faces, seed=args.prompt_seed + 1, scenes=["talking_face"])
    face_sounds = []
    for i, p in enumerate(faces):
        face_sounds.append(pipe(p.caption, video=p.clip.video, seed=args.generation_seed + i).audio)
        log(f"v2a face {i + 1}/{len(faces)}")

    def face_corr(sound_list):
        return float(np.median([score_face(p.clip.video, a, fps, rate)["correlation_at_0"]
                                for p, a in zip(faces, sound_list)]))

    out = {"clips": len(prompts), "task": "real frames + caption -> sound",
           "generated": per_impact(videos, sounds, fps, rate, "given"),
           "chance_other_clips_frames": per_impact(shifted(videos), sounds, fps, rate, "given"),
           "bridge_off": per_impact(videos, unbridged, fps, rate, "given"),
           "reference_clips": per_impact(videos, [p.clip.audio for p in prompts], fps, rate, "reference"),
           "talking_face": {"clips": len(faces), "median_mouth_loudness_correlation": face_corr(face_sounds),
                            "chance_other_clips_sound": face_corr(shifted(face_sounds)),
                            "reference_clips": face_corr([p.clip.audio for p in faces])}}
    out["passed"] = passes_sync(out["generated"])
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def run_flf(pipe, args) -> dict:
    from train.demo_world import held_out_prompts

    prompts = held_out_prompts(args.n_flf, seed=args.prompt_seed + 2)
    with_last, without = [], []
    for i, p in enumerate(prompts):
        last = p.clip.video[-1]
        seed = args.generation_seed + i
        with_last.append(psnr(pipe(p.caption, image=p.first_frame, last_image=last, seed=seed).video[-1], last))
        without.append(psnr(pipe(p.caption, image=p.first_frame, seed=seed).video[-1], last))
        log(f"flf {i + 1}/{len(prompts)}: {with_last[-1]:.1f} dB (without: {without[-1]:.1f} dB)")
    out = {"clips": len(prompts), "scenes": sorted({p.scene for p in prompts}),
           "last_frame_psnr_db": {"median": statistics.median(with_last), "min": min(with_last),
                                  "share_at_least_25": float(np.mean(np.array(with_last) >= 25.0))},
           "baseline_without_last_image_psnr_db": {"median": statistics.median(without), "min": min(without)},
           "per_clip": [{"with": a, "without": b} for a, b in zip(with_last, without)]}
    out["passed"] = bool(out["last_frame_psnr_db"]["median"] >= 25.0)
    return out


def run_extend(pipe, args) -> dict:
    from mova import modes
    from mova.eval import seam_figures
    from train.demo_world import held_out_prompts

    prompts = held_out_prompts(args.n_extend, seed=args.prompt_seed + 3)
    out: dict = {"chains": len(prompts), "num_windows": 3}
    for crossfade in ("pixel", "latent"):
        rows, lengths = [], []
        for i, p in enumerate(prompts):
            seed = args.generation_seed + i
            single = pipe(p.caption, image=p.first_frame, seed=seed)
            chain = pipe(p.caption, image=p.first_frame, seed=seed, num_windows=3, crossfade=crossfade)
            s = chain.settings
            plan = modes.Plan(s, modes.read_inputs(s, chain.sample_rate), sample_rate=chain.sample_rate,
                              hop=pipe.audio_vae.hop, temporal=pipe.vae_scale_temporal)
            lengths.append({"frames": int(chain.video.shape[0]), "single_frames": int(single.video.shape[0]),
                            "samples": int(chain.audio.shape[0]), "single_samples": int(single.audio.shape[0])})
            # the joins are measured on the sound before loudness normalisation changes its scale: same ratios
            rows.append(seam_figures(chain.video, chain.audio, plan.joins()))
            log(f"extend {crossfade} {i + 1}/{len(prompts)}: "
                + ", ".join(f"{j['frame_change_vs_p95']:.2f}/{j['sample_jump_vs_p95']:.2f}" for j in rows[-1]["joins"]))
        joins = [j for r in rows for j in r["joins"]]
        out[crossfade] = {
            "length_ratio": [lg["frames"] / lg["single_frames"] for lg in lengths],
            "audio_length_ratio": [lg["samples"] / lg["single_samples"] for lg in lengths],
            "joins": len(joins), "joins_within_p95": sum(j["within"] for j in joins),
            "control_seamless_share_within": {
                "frames": statistics.median(r["seamless_frame_share_within"] for r in rows),
                "samples": statistics.median(r["seamless_sample_share_within"] for r in rows)},
            "frame_change_vs_p95": {"median": statistics.median(j["frame_change_vs_p95"] for j in joins),
                                    "max": max(j["frame_change_vs_p95"] for j in joins),
                                    "within": sum(j["frame_change_vs_p95"] <= 1 for j in joins)},
            "sample_jump_vs_p95": {"median": statistics.median(j["sample_jump_vs_p95"] for j in joins),
                                   "max": max(j["sample_jump_vs_p95"] for j in joins),
                                   "within": sum(j["sample_jump_vs_p95"] <= 1 for j in joins)},
            "per_chain": rows,
        }
        out[crossfade]["passed"] = bool(all(r == 3.0 for r in out[crossfade]["length_ratio"])
                                        and out[crossfade]["joins_within_p95"] == len(joins))
    better = min(("pixel", "latent"), key=lambda c: (-out[c]["joins_within_p95"],
                                                     out[c]["frame_change_vs_p95"]["median"]
                                                     + out[c]["sample_jump_vs_p95"]["median"]))
    out["better_join"] = better
    out["passed"] = out[better]["passed"]
    return out


def run_retake(pipe, args) -> dict:
    from mova.pipeline import _pixels
    from train.demo_world import held_out_prompts

    prompts = held_out_prompts(args.n_retake, seed=args.prompt_seed + 4)
    start, end = 0.75, 1.5
    rows = []
    for i, p in enumerate(prompts):
        clip, fps, rate = p.clip, p.clip.fps, p.clip.sample_rate
        inside = (np.arange(len(clip.video)) / fps >= start) & (np.arange(len(clip.video)) / fps < end)
        t = np.arange(len(clip.audio)) / rate
        inside_a = (t >= start) & (t < end)
        # the VAE round trip of this clip: what "unchanged to within the round trip" allows
        rt_video = pipe.decode_video(pipe.encode_video(_pixels(clip.video)))
        rt_audio = pipe.decode_audio(pipe.encode_audio(clip.audio), len(clip.audio))
        row = {"prompt_id": p.prompt_id, "scene": p.scene,
               "vae_round_trip": {"video_mean_abs": float(np.abs(rt_video.astype(int) - clip.video).mean()),
                                  "audio_mean_abs": float(np.abs(rt_audio - clip.audio).mean())}}
        for modality, strength in (("both", 1.0), ("video", 1.0), ("audio", 1.0), ("both", 0.5)):
            r = pipe(p.caption, retake=clip, retake_start=start, retake_end=end, retake_modality=modality,
                     strength=strength, seed=args.generation_seed + i)
            dv = np.abs(r.video.astype(int) - clip.video.astype(int))
            da = np.abs(r.audio - clip.audio[:len(r.audio)])
            row[f"{modality}@{strength:g}"] = {
                "outside_video_max_abs": int(dv[~inside].max()), "outside_audio_max_abs": float(da[~inside_a].max()),
                "inside_video_mean_abs": float(dv[inside].mean()), "inside_audio_mean_abs": float(da[inside_a].mean())}
        rows.append(row)
        log(f"retake {i + 1}/{len(prompts)}")
    out = {"clips": len(prompts), "span_s": [start, end], "per_clip": rows}
    keys = [k for k in rows[0] if "@" in k]
    out["summary"] = {k: {m: statistics.median(r[k][m] for r in rows) for m in rows[0][k]} for k in keys}
    out["vae_round_trip"] = {m: statistics.median(r["vae_round_trip"][m] for r in rows)
                             for m in rows[0]["vae_round_trip"]}
    rt = out["vae_round_trip"]
    ok = True
    for r in rows:
        for k in keys:
            v = r[k]
            # the largest change outside, against the round trip's mean error (a stricter bound than its own max)
            ok &= v["outside_video_max_abs"] <= rt["video_mean_abs"]
            ok &= v["outside_audio_max_abs"] <= rt["audio_mean_abs"]
            mod = k.split("@")[0]
            if mod in ("both", "video"):
                ok &= v["inside_video_mean_abs"] > 0
            if mod in ("both", "audio"):
                ok &= v["inside_audio_mean_abs"] > 0
    out["passed"] = bool(ok)
    return out


def run_bad_inputs(pipe, args) -> dict:
    """Bad inputs through ``Backend.check`` (the app's validator before the queue): each message and its field."""
    from mova import GenerationSettings, media
    from mova.backends.local import LocalBackend

    rate = pipe.audio_sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backend = LocalBackend(pipeline=pipe, data_dir=tmp / "data")
        t = np.arange(int(0.8 * rate)) / rate
        short = media.write_wav(tmp / "short.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
        silent = media.write_wav(tmp / "silent.wav", np.zeros(3 * rate, np.float32), rate)
        frames = np.full((25, 64, 64, 3), 90, np.uint8)
        no_sound = media.write_mp4(tmp / "nosound.mp4", frames, 12.0)
        wide = media.write_mp4(tmp / "wide.mp4", np.zeros((25, 64, 128, 3), np.uint8), 12.0,
                               np.full(int(25 / 12 * rate), 0.1, np.float32), rate)
        clip = media.write_mp4(tmp / "clip.mp4", frames, 12.0, np.full(int(25 / 12 * rate), 0.1, np.float32), rate)
        cases = {
            "audio shorter than the clip": ("audio", dict(audio=str(short))),
            "silent audio": ("audio", dict(audio=str(silent))),
            "a video without audio for extend": ("extend", dict(extend=str(no_sound))),
            "mismatched sizes": ("retake", dict(retake=str(wide))),
            "a span outside the clip": ("retake_end", dict(retake=str(clip), retake_start=1.0, retake_end=3.0)),
            "audio and video together": ("video", dict(audio=str(short), video=str(clip))),
        }
        rows = {}
        for name, (field, kwargs) in cases.items():
            try:
                backend.check(GenerationSettings(prompt="a ball bounces", **kwargs))
                rows[name] = {"field": field, "refused": False, "message": None}
            except ValueError as exc:
                message = str(exc)
                rows[name] = {"field": field, "refused": True, "names_field": message.split()[0].split("=")[0]
                              == field, "message": message}
    return {"cases": rows, "passed": all(r["refused"] and r["names_field"] for r in rows.values())}


# ----------------------------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--n", type=int, default=30, help="held-out ball clips for a2v and v2a (default 30)")
    parser.add_argument("--n-faces", type=int, default=10, help="talking-face clips for v2a (default 10)")
    parser.add_argument("--n-flf", type=int, default=20, help="clips for first-last frame (default 20)")
    parser.add_argument("--n-extend", type=int, default=5, help="3-window chains per join kind (default 5)")
    parser.add_argument("--n-retake", type=int, default=5, help="clips to retake (default 5)")
    parser.add_argument("--prompt-seed", type=int, default=0, help="held-out prompt set seed")
    parser.add_argument("--generation-seed", type=int, default=2000, help="clip i is generated with this + i")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "modes_eval.json"))
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts {unknown} unknown: expected some of {list(PARTS)}")

    import torch

    from mova.pipeline import MOVAPipeline

    pipe = MOVAPipeline.from_pretrained(args.model, device="cpu", torch_dtype="fp32")
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.is_file() else {}  # parts not rerun are kept
    report.update({
        "benchmark": "modes_eval", "model": args.model,
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} torch threads)",
        "torch": torch.__version__, "criteria": CRITERIA,
        "command": "python benchmarks/modes_eval.py " + " ".join(sys.argv[1:]),
    })
    report.setdefault("results", {})
    for part in parts:
        t0 = time.perf_counter()
        result = globals()[f"run_{part}"](pipe, args)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        report["results"][part] = result
        report["passed"] = {k: v["passed"] for k, v in report["results"].items()}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
        log(f"{part}: passed={result['passed']} ({result['seconds']} s)")
    print(json.dumps(report["passed"], indent=1))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
