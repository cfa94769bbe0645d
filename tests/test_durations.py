"""The ZeroGPU duration model reads measured whole-clip stage times (benchmarks/clip_time.py's JSON) and falls back to
the declared costs, saying so, when there are none; clip_time.py runs a whole tiny clip on the CPU."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mova.backends.durations import (DEFAULT_FIGURES, DENOISER_FACTORS, DeclaredCosts, DurationModel, MeasuredClip,
                                     fit_defaults)
from mova.settings import GenerationSettings, ModelInfo

ROOT = Path(__file__).resolve().parents[1]
EXACT = dict(slice_factor=1.0, margin=1.0, task_start_s=0.0)  # the estimate on a full H200, nothing added


def run(height=352, width=640, num_frames=193, fps=24.0, nfe=2, step_s=11.0, text=1.0, encode=3.0, vae=4.0,
        dac=0.5) -> dict:
    """A clip_time.py run record (only the fields the duration model reads, plus status)."""
    tokens = (height // 16) * (width // 16) * ((num_frames - 1) // 4 + 1)
    return {"status": "ok", "height": height, "width": width, "num_frames": num_frames, "fps": fps, "nfe": nfe,
            "video_tokens": tokens, "step_s": step_s,
            "stages_s": {"text": text, "encode": encode, "vae_decode": vae, "dac_decode": dac}}


def figures(tmp_path: Path, *runs: dict) -> Path:
    path = tmp_path / "clip_time_h200.json"
    path.write_text(json.dumps({"benchmark": "clip_time", "runs": list(runs)}))
    return path


def test_a_measured_clip_gives_back_its_own_stage_times(tmp_path):
    d = DurationModel.load(figures(tmp_path, run()), **EXACT)
    assert d.source.endswith("clip_time_h200.json") and len(d.measured) == 1
    stages = d.stages(352, 640, 193, 30, 2, 24.0)
    assert stages == pytest.approx({"text": 1.0, "encode": 3.0, "denoise": 30 * 11.0, "vae_decode": 4.0,
                                    "dac_decode": 0.5, "task_start": 0.0})
    assert d.estimate(352, 640, 193, 30, 2, 24.0) == pytest.approx(1.0 + 3.0 + 330.0 + 4.0 + 0.5)
    # half the frames: encode and decode halve (pixel-frames), the DAC with the audio's length, the text stays
    half = d.stages(352, 640, 97, 30, 2, 24.0)
    assert half["encode"] == pytest.approx(3.0 * 97 / 193) and half["vae_decode"] == pytest.approx(4.0 * 97 / 193)
    assert half["dac_decode"] == pytest.approx(0.5 * 97 / 193) and half["text"] == 1.0
    assert half["denoise"] < stages["denoise"] / 2  # fewer tokens; attention shrinks quadratically
    # dual CFG: NFE 3 costs 3/2 of the NFE-2 steps
    assert d.stages(352, 640, 193, 30, 3, 24.0)["denoise"] == pytest.approx(30 * 11.0 * 1.5)


def test_an_eager_or_cudnn_denoiser_scales_the_measured_denoising_only(tmp_path):
    d = DurationModel.load(figures(tmp_path, run()), **EXACT)
    assert d.for_denoiser(compiled=True, fa3=True) == d  # the figures' own denoiser
    base = d.stages(352, 640, 193, 30, 2, 24.0)
    for (compiled, fa3), factor in DENOISER_FACTORS.items():
        scaled = d.for_denoiser(compiled=compiled, fa3=fa3).stages(352, 640, 193, 30, 2, 24.0)
        assert scaled == pytest.approx({**base, "denoise": base["denoise"] * factor})
    # one H200 run's step times: compiled FA3 8.2177, compiled cuDNN 9.1373, eager FA3 10.0261, eager cuDNN 10.86 s
    assert 30 * 11.0 * DENOISER_FACTORS[(False, False)] == pytest.approx(30 * 11.0 * 10.86 / 8.2177)
    assert sorted(DENOISER_FACTORS.values()) == [DENOISER_FACTORS[k] for k in
                                                 ((True, True), (True, False), (False, True), (False, False))]
    declared = DurationModel(**EXACT)  # declared step costs are eager cuDNN steps already
    assert declared.for_denoiser(compiled=False, fa3=False) == declared


def test_two_measured_sizes_fit_the_step_cost_through_both(tmp_path):
    small, large = run(step_s=11.12), run(height=720, width=1280, step_s=112.5, encode=12.0, vae=16.5)
    d = DurationModel.load(figures(tmp_path, small, large), **EXACT)
    assert d.stages(352, 640, 193, 1, 2)["denoise"] == pytest.approx(11.12, rel=1e-9)
    assert d.stages(720, 1280, 193, 1, 2)["denoise"] == pytest.approx(112.5, rel=1e-9)
    assert d.stages(720, 1280, 193, 1, 2)["vae_decode"] == pytest.approx(16.5)  # the nearest measured clip's
    # the fitted a·N + b·N² agrees with the declared fit of the same two step times
    declared = DurationModel(declared=DeclaredCosts(text_and_encode_s=0.0, decode_s_per_mpixel_frame=0.0), **EXACT)
    for h, w in ((480, 832), (576, 1024)):
        assert d.stages(h, w, 121, 1, 2)["denoise"] == pytest.approx(declared.estimate(h, w, 121, 1, 2), rel=0.02)


def test_the_slice_factor_and_margin_scale_measured_stages(tmp_path):
    d = DurationModel.load(figures(tmp_path, run()), slice_factor=2.2, margin=1.25, task_start_s=5.0)
    on_h200 = 1.0 + 3.0 + 20 * 11.0 + 4.0 + 0.5
    assert d.estimate(352, 640, 193, 20, 2, 24.0) == pytest.approx(1.25 * (2.2 * on_h200 + 5.0))


def test_without_figures_the_declared_costs_are_used_and_logged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mova.backends.durations"):
        missing = DurationModel.load(tmp_path / "none.json")
    assert missing.source == "declared" and not missing.measured and "no measured stage times" in caplog.text
    assert missing.estimate(352, 640, 193, 50, 2) == DurationModel().estimate(352, 640, 193, 50, 2)
    (tmp_path / "broken.json").write_text('{"runs": [{"status": "ok", "height": 1}]}')
    with caplog.at_level(logging.WARNING, logger="mova.backends.durations"):
        broken = DurationModel.load(tmp_path / "broken.json")
    assert broken.source == "declared" and "unusable (KeyError" in caplog.text
    oom_only = figures(tmp_path, {"status": "oom"})
    assert DurationModel.load(oom_only).source == "declared"


def test_from_env_reads_the_figures_named_there(tmp_path):
    path = figures(tmp_path, run(step_s=5.0))
    d = DurationModel.from_env({"MOVA_ZEROGPU_FIGURES": str(path), "MOVA_ZEROGPU_MAX_DURATION": "200"})
    assert d.source == str(path) and d.max_s == 200 and d.measured[0] == MeasuredClip.from_record(run(step_s=5.0))
    default = DurationModel.from_env({})
    assert default.source == (str(DEFAULT_FIGURES) if DEFAULT_FIGURES.exists() else "declared")


def test_space_defaults_are_fitted_to_the_target_below_the_cap(tmp_path):
    d = DurationModel.load(figures(tmp_path, run(step_s=11.12)))
    info = ModelInfo(name="m", resolutions=((352, 640),), default_num_frames=193, max_num_frames=193,
                     default_fps=24.0, default_num_inference_steps=50)
    fitted = fit_defaults(info, d)
    settings = GenerationSettings(prompt="x", height=352, width=640, num_frames=fitted.default_num_frames, fps=24.0,
                                  num_inference_steps=fitted.default_num_inference_steps)
    assert d.estimate_settings(settings) <= d.default_target_s == 240.0 < d.max_s
    assert fitted.default_num_frames < 193 and fitted.default_num_inference_steps >= 20  # shortened, not starved
    longer = settings.replace(num_frames=fitted.default_num_frames + 4)
    assert d.estimate_settings(longer) > 240.0  # the longest clip that fits


def test_clip_time_runs_a_tiny_clip_on_the_cpu_and_its_json_feeds_the_duration_model(tmp_path):
    out = tmp_path / "clip_time_tiny.json"
    done = subprocess.run([sys.executable, "benchmarks/clip_time.py", "--preset", "tiny", "--device", "cpu",
                           "--steps", "2", "--warmup-steps", "1", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = json.loads(out.read_text())["runs"]
    assert record["status"] == "ok" and record["video_shape"] == [9, 64, 64, 3] and record["finite"]
    stages = record["stages_s"]
    assert len(record["step_times_s"]) == 2 and all(t > 0 for t in record["step_times_s"])
    assert all(stages[k] > 0 for k in ("text", "encode", "denoise", "vae_decode", "dac_decode"))
    parts = sum(stages[k] for k in ("text", "encode", "denoise", "vae_decode", "dac_decode", "loudness"))
    assert parts <= stages["total"] <= stages["wall"] + 1e-3  # the stages lie inside the pipeline call
    assert stages["denoise"] == pytest.approx(sum(record["step_times_s"]), rel=0.05, abs=0.01)
    d = DurationModel.load(out, **EXACT)
    measured = d.stages(64, 64, 9, 2, 2, record["fps"])
    assert measured["denoise"] == pytest.approx(2 * record["step_s"])
    assert measured["vae_decode"] == pytest.approx(stages["vae_decode"])


def test_clip_time_replays_a_recorded_reuse_pattern(tmp_path):
    """--replay-reuse: the cached run reuses exactly the steps of the least-reusing clip of a demo_eval record."""
    record = {"settings": {"num_inference_steps": 6, "cache": 0.1},
              "per_clip": {"joint": [{"seed": 1000, "reused_steps": [1, 2, 3, 4]},
                                     {"seed": 1001, "reused_steps": [2, 4]},
                                     {"seed": 1002, "reused_steps": [2, 3, 4]}]}}
    pattern = tmp_path / "demo_eval.json"
    pattern.write_text(json.dumps(record))
    out = tmp_path / "clip_time_tiny.json"
    cmd = [sys.executable, "benchmarks/clip_time.py", "--preset", "tiny", "--device", "cpu", "--warmup-steps", "0",
           "--cache", "0.1", "--replay-reuse", str(pattern), "--out", str(out)]
    done = subprocess.run(cmd + ["--steps", "6"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_,) = json.loads(out.read_text())["runs"]
    assert run_["replayed_reuse"] == {"from": str(pattern), "cache": 0.1, "seed": 1001, "reused_steps": [2, 4]}
    assert run_["cached_steps"] == 2 and run_["evaluations"] == run_["nfe"] * 4 and run_["finite"]
    assert len(run_["step_times_s"]) == 6
    # a record of another step count is refused, naming the flag and both counts
    done = subprocess.run(cmd + ["--steps", "5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--replay-reuse" in done.stderr and "steps 6" in done.stderr


def test_clip_time_stores_the_block_weights_of_the_quantised_components_as_asked(tmp_path):
    """--quantization fp8: the components the loader quantises hold e4m3 block weights (both experts then fit an
    80 GB GPU at full size), the VAEs stay as built."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from clip_time import build_pipeline

    from mova.loading import QUANTIZED_COMPONENTS
    from mova.quantization import QuantizedLinear, quantized_format

    pipe = build_pipeline("tiny", torch.device("cpu"), torch.float32, "none", False, 32, tmp_path / "tok", "fp8")
    for name in QUANTIZED_COMPONENTS:
        stored = [m for m in pipe.components[name].modules() if isinstance(m, QuantizedLinear)]
        assert stored and all(m.weight.dtype == torch.float8_e4m3fn for m in stored), name
    assert [quantized_format(pipe.components[n]) for n in QUANTIZED_COMPONENTS[:4]] == ["fp8"] * 4
    for name in ("video_vae", "audio_vae"):
        assert not any(isinstance(m, QuantizedLinear) for m in pipe.components[name].modules()), name
