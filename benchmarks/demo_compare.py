"""Two demo-model settings compared over one or more seed sets: pooled figures, differences, bootstrap intervals.

    python benchmarks/demo_compare.py \\
        --base demo_eval_50steps_gpu_bf16_h100.json demo_eval_50steps_gpu_bf16_seeds2000_h100.json \\
        --candidate demo_eval_50steps_gpu_fp8_h100.json demo_eval_50steps_gpu_fp8_seeds2000_h100.json \\
        --out benchmarks/results/demo_compare_fp8_h100.json

The files are ``benchmarks/demo_eval.py`` reports. A bare name is looked up in ``benchmarks/results``. The i-th
``--base`` file pairs with the i-th ``--candidate`` file. Each pair must hold the same held-out prompts with the
same generation seeds (this is checked); only the settings may differ.

What it reports:
- All the pairs' clips pooled together (a clip's offset counts only where its partner has one too), summarised
  exactly as demo_eval summarises one run (``train.demo_world.scoring.summarise``).
- The difference candidate − base of the median clip offset, of the per-impact median offset and of the colour
  match rate. Each comes with a 95 % bootstrap interval. The bootstrap resamples prompts with each clip's base and
  candidate kept together, so it is paired.
- Each clip's own change: the paired median, and how many clips moved by more than a quarter frame either way.
- Each difference against issue 19's tolerances: offsets up to +0.25 frame, colour down to −4 points.

Why pool: on the demo model the median clip offset is bimodal (clips cluster near 0.5 and near 1 frame). With 50
clips, one or two clips crossing the gap decide the median, so a single seed set's difference is mostly noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCES = {"median_abs_offset_frames": 0.25, "per_impact_median_abs_offset_frames": 0.25,
              "colour_match_points": -4.0}


def _clips(path: str) -> tuple[Path, list[dict]]:
    p = Path(path)
    p = p if p.exists() or p.is_absolute() else RESULTS / p
    return p, json.loads(p.read_text())["per_clip"]["joint"]


def _offset(clip: dict) -> float:
    value = clip.get("offset_frames")
    return abs(value) if value is not None and np.isfinite(value) else float("nan")


def _figures(clips: list[dict]) -> np.ndarray:
    """[median clip offset, per-impact median offset, colour match %] of these clips (NaN where none counts)."""
    offsets = [o for o in map(_offset, clips) if np.isfinite(o)]
    contacts = [abs(d) for c in clips for d in c.get("contact_offsets_frames", [])]
    colour = [c["colour_match"] for c in clips if "colour_match" in c]
    return np.array([np.median(offsets) if offsets else np.nan, np.median(contacts) if contacts else np.nan,
                     100.0 * np.mean(colour) if colour else np.nan])


def compare(base_files: list[str], candidate_files: list[str], *, resamples: int = 5000, seed: int = 0) -> dict:
    """The report (see the module docstring) of candidate vs base over the paired files."""
    from train.demo_world.scoring import summarise

    if len(base_files) != len(candidate_files) or not base_files:
        raise ValueError(f"--base and --candidate need the same number of files (got {len(base_files)} and "
                         f"{len(candidate_files)}), one pair per seed set")
    base, cand, pairs = [], [], []
    for bf, cf in zip(base_files, candidate_files):
        (bp, b), (cp, c) = _clips(bf), _clips(cf)
        keys_b, keys_c = [(x["prompt_id"], x.get("seed")) for x in b], [(x["prompt_id"], x.get("seed")) for x in c]
        if keys_b != keys_c:
            raise ValueError(f"{bp.name} and {cp.name} do not hold the same prompts and generation seeds: they "
                             "cannot be paired")
        for k, (x, y) in enumerate(zip(b, c)):  # an offset counts only where both clips of the pair have one
            if not (np.isfinite(_offset(x)) and np.isfinite(_offset(y))):
                b[k], c[k] = {**x, "offset_frames": float("nan")}, {**y, "offset_frames": float("nan")}
        pairs.append({"base": bp.name, "candidate": cp.name, "clips": len(b),
                      "difference": dict(zip(TOLERANCES, (_figures(c) - _figures(b)).round(4).tolist()))})
        base += b
        cand += c

    def difference(index: np.ndarray) -> np.ndarray:
        return _figures([cand[i] for i in index]) - _figures([base[i] for i in index])

    index = np.arange(len(base))
    ci = bootstrap((index,), difference, paired=True, vectorized=False, n_resamples=resamples,
                   confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    point = difference(index)
    names = list(TOLERANCES)
    differences = {n: {"value": round(float(point[k]), 4), "ci95": [round(float(ci.low[k]), 4),
                                                                   round(float(ci.high[k]), 4)],
                       "tolerance": TOLERANCES[n],
                       "within": bool(point[k] >= TOLERANCES[n] if TOLERANCES[n] < 0 else point[k] <= TOLERANCES[n])}
                   for k, n in enumerate(names)}
    moved = np.array([_offset(c) - _offset(b) for b, c in zip(base, cand)])
    moved = moved[np.isfinite(moved)]
    fps = 12.0  # the demo model's rate: only the summary's offset in ms reads it
    return {
        "benchmark": "demo_compare",
        "pairs": pairs,
        "clips": len(base),
        "pooled": {"base": summarise(base, fps), "candidate": summarise(cand, fps)},
        "differences": differences,
        "per_clip_offset_change": {"clips": int(moved.size), "median": round(float(np.median(moved)), 4),
                                   "mean": round(float(moved.mean()), 4),
                                   "worse_by_over_0.25": int((moved > 0.25).sum()),
                                   "better_by_over_0.25": int((moved < -0.25).sum())},
        "bootstrap": {"resamples": resamples, "method": "percentile, paired by clip", "seed": seed},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="+", required=True, help="demo_eval reports of the reference setting")
    parser.add_argument("--candidate", nargs="+", required=True,
                        help="demo_eval reports of the compared setting, one per --base file, in the same order")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    args = parser.parse_args()
    try:
        report = compare(args.base, args.candidate, resamples=args.resamples)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    report["command"] = "python benchmarks/demo_compare.py " + " ".join(sys.argv[1:])
    text = json.dumps(report, indent=1, default=float) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(json.dumps({k: report[k] for k in ("clips", "differences", "per_clip_offset_change")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
