"""benchmarks/demo_compare.py pools demo_eval reports of two settings over seed sets and pairs them clip by clip."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from demo_compare import compare  # noqa: E402


def _report(path: Path, offsets, contacts, colours, seed0: int) -> str:
    clips = [{"prompt_id": f"heldout-0-{i:04d}", "seed": seed0 + i, "scene": "bouncing_balls", "impacts": len(c),
              "aligned": len(c), "offset_frames": o, "contact_offsets_frames": c, "colour_match": m}
             for i, (o, c, m) in enumerate(zip(offsets, contacts, colours))]
    path.write_text(json.dumps({"per_clip": {"joint": clips}}))
    return str(path)


def test_pooled_differences_pair_clips_and_drop_offsets_a_partner_lacks(tmp_path):
    rng = np.random.default_rng(1)
    files = {"base": [], "cand": []}
    pooled = {"base": [], "cand": [], "contacts": []}
    for s, seed0 in enumerate((1000, 2000)):
        base = rng.uniform(0.0, 2.0, 20)
        cand = base + rng.normal(0.3, 0.1, 20)
        cand[3] = float("nan")  # a clip without an offset: its partner's must not count either
        contacts = [[float(x)] for x in rng.uniform(-1, 1, 20)]
        files["base"].append(_report(tmp_path / f"b{s}.json", base, contacts, [True] * 20, seed0))
        files["cand"].append(_report(tmp_path / f"c{s}.json", -cand, [[2 * c[0]] for c in contacts],
                                     [True] * 18 + [False] * 2, seed0))
        pooled["base"] += [b for k, b in enumerate(base) if k != 3]
        pooled["cand"] += [c for k, c in enumerate(cand) if k != 3]
        pooled["contacts"] += [abs(c[0]) for c in contacts]
    report = compare(files["base"], files["cand"], resamples=400)
    d = report["differences"]
    expected = np.median(np.abs(pooled["cand"])) - np.median(pooled["base"])
    assert report["clips"] == 40 and d["median_abs_offset_frames"]["value"] == pytest.approx(expected, abs=1e-4)
    assert d["median_abs_offset_frames"]["ci95"][0] < expected < d["median_abs_offset_frames"]["ci95"][1]
    assert d["median_abs_offset_frames"]["within"] is bool(expected <= 0.25)
    per_impact = np.median(pooled["contacts"])  # the candidate's contacts are twice as far
    assert d["per_impact_median_abs_offset_frames"]["value"] == pytest.approx(per_impact, abs=1e-4)
    assert d["colour_match_points"]["value"] == pytest.approx(-10.0) and d["colour_match_points"]["within"] is False
    change = report["per_clip_offset_change"]
    assert change["clips"] == 38 and change["worse_by_over_0.25"] + change["better_by_over_0.25"] <= 38
    assert report["pooled"]["base"]["clips_with_offset"] == report["pooled"]["candidate"]["clips_with_offset"] == 38


def test_files_that_do_not_pair_are_refused_by_name(tmp_path):
    a = _report(tmp_path / "a.json", [0.5] * 3, [[0.1]] * 3, [True] * 3, 1000)
    b = _report(tmp_path / "b.json", [0.5] * 3, [[0.1]] * 3, [True] * 3, 2000)
    with pytest.raises(ValueError, match="a.json and b.json do not hold the same prompts and generation seeds"):
        compare([a], [b])
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_compare.py"), "--base", a, a,
                          "--candidate", b], capture_output=True, text=True)
    assert run.returncode == 2 and "need the same number of files (got 2 and 1)" in run.stderr
