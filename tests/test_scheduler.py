"""FlowMatchPairScheduler: grids (spec §13.1/§13.3), snapping (§13.2), experts, training sampler, config I/O."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mova.scheduler import FlowMatchPairScheduler, PairSchedule

# Spec §13.3: t values of the 50-step, shift-5, extra_one_step grid (3 decimals).
SPEC_T50 = [
    1000.000, 995.947, 991.761, 987.435, 982.961, 978.332, 973.539, 968.575, 963.429, 958.091,
    952.551, 946.796, 940.814, 934.591, 928.113, 921.363, 914.324, 906.977, 899.301, 891.274,
    882.870, 874.064, 864.824, 855.119, 844.912, 834.163, 822.829, 810.859, 798.199, 784.788,
    770.556, 755.425, 739.309, 722.107, 703.706, 683.975, 662.766, 639.905, 615.193, 588.394,
    559.232, 527.382, 492.452, 453.973, 411.377, 363.964, 310.869, 251.005, 182.989, 105.035,
]  # fmt: skip

# Spec §13.3: float32 σ of the same grid, 9 significant digits (each identifies one float32).
SPEC_SIGMA50 = [
    "1", "0.995947301", "0.991761208", "0.987434626", "0.982960761", "0.978331625", "0.973539233", "0.968574762",
    "0.963428676", "0.958090842", "0.95255053", "0.946795821", "0.940814018", "0.934591472", "0.928113222",
    "0.921363354", "0.914324284", "0.906977117", "0.899301171", "0.891273677", "0.882870257", "0.874063551",
    "0.864823997", "0.855118811", "0.844911933", "0.834163368", "0.82282877", "0.810859144", "0.798199356",
    "0.784787893", "0.770555794", "0.755425453", "0.739309072", "0.722106993", "0.703705609", "0.683975041",
    "0.662765861", "0.639905334", "0.615192831", "0.588393688", "0.559232295", "0.527381599", "0.492451727",
    "0.453973442", "0.411377132", "0.363964349", "0.310869187", "0.251004964", "0.182989165", "0.105035096",
]  # fmt: skip


@pytest.fixture(scope="module")
def sched() -> FlowMatchPairScheduler:
    return FlowMatchPairScheduler()


# ----------------------------------------------------------------------------------------------------------------------
# Inference grid
# ----------------------------------------------------------------------------------------------------------------------


def test_50_step_timesteps_match_spec(sched):
    s = sched.make_schedule(50)
    assert s.timesteps.shape == (50, 2) and s.timesteps.dtype == torch.float32
    assert s.sigmas.shape == (51, 2) and s.sigmas.dtype == torch.float32
    np.testing.assert_allclose(s.timesteps[:, 0].numpy(), SPEC_T50, atol=1e-3, rtol=0)
    assert torch.equal(s.timesteps[:, 0], s.timesteps[:, 1])  # released pipeline: identical columns (§13.4)
    assert torch.all(s.sigmas[-1] == 0)
    assert s.timesteps[31, 0].item() == pytest.approx(755.42548, abs=2e-5)  # float32 value, not exact 755.42551


def test_50_step_sigmas_bit_exact(sched):
    s = sched.make_schedule(50)
    expected = torch.tensor([np.float32(x) for x in SPEC_SIGMA50], dtype=torch.float32)
    # 9 significant digits identify one float32, so parsing them back must give exactly our values.
    assert torch.equal(s.sigmas[:50, 0], expected)
    assert torch.equal(s.sigmas[:50, 1], expected)
    # t = 1000·σ with one float32 rounding.
    assert torch.equal(s.timesteps[:, 0], expected * 1000)


def test_make_schedule_returns_a_fresh_schedule_per_call():
    """The pipeline builds one schedule per request from a shared scheduler: a call in between changes nothing."""
    sc = FlowMatchPairScheduler()
    first = sc.make_schedule(50)
    other = sc.make_schedule(7, video_shift=2.0, audio_strength=0.5)
    again = sc.make_schedule(50)
    assert isinstance(first, PairSchedule) and first is not again
    assert len(first) == first.num_inference_steps == 50 and len(other) == 7
    for name in ("timesteps", "sigmas", "step_sigmas"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name


def test_expert_split(sched):
    s50 = sched.make_schedule(50)
    assert s50.high_noise_steps(0.9) == 18
    assert [s50.expert_for_step(i) for i in range(50)] == [0] * 18 + [1] * 32
    s25 = sched.make_schedule(25)
    assert s25.high_noise_steps() == 9
    assert [s25.expert_for_step(i) for i in range(25)] == [0] * 9 + [1] * 16
    assert s50.high_noise_steps(1.0) == 1 and s50.high_noise_steps(0.0) == 50
    with pytest.raises(ValueError, match="boundary_ratio"):
        s50.high_noise_steps(1.5)


def test_per_modality_shift(sched):
    s = sched.make_schedule(20, video_shift=5.0, audio_shift=1.0)
    v, a = s.sigmas[:20, 0], s.sigmas[:20, 1]
    assert not torch.equal(v, a)
    assert torch.all(v[1:] > a[1:])  # shift > 1 keeps more noise at the same unshifted position
    # shift 1 is the plain float32 linspace.
    lin = torch.linspace(1.0, 0.003 / 1.002, 21, dtype=torch.float32)[:-1]
    assert torch.equal(a, lin)
    # None = config shift; explicit 5 is identical.
    assert torch.equal(v, sched.make_schedule(20).sigmas[:20, 0])


def test_strength_starts_lower(sched):
    s = sched.make_schedule(10, video_strength=0.5)
    sigma_min = 0.003 / 1.002
    start = sigma_min + (1 - sigma_min) * 0.5  # unshifted start, then shift 5
    assert s.sigmas[0, 0].item() == pytest.approx(5 * start / (1 + 4 * start), rel=1e-6)
    assert s.sigmas[0, 1].item() == 1.0
    with pytest.raises(ValueError, match="audio_strength"):
        sched.make_schedule(10, audio_strength=0.0)


def test_extra_one_step_false():
    sc = FlowMatchPairScheduler(extra_one_step=False)
    s = sc.make_schedule(10)
    assert s.sigmas[9, 0].item() == pytest.approx(5 * (0.003 / 1.002) / (1 + 4 * (0.003 / 1.002)), rel=1e-6)


def test_shift_terminal_and_exponential_shift():
    s = FlowMatchPairScheduler(shift_terminal=0.1).make_schedule(10)
    assert s.sigmas[9, 0].item() == pytest.approx(0.1, abs=1e-6) and s.sigmas[0, 0].item() == pytest.approx(1.0)
    # exponential shift with μ = ln 5 is the shift-5 formula up to float32 rounding.
    e = FlowMatchPairScheduler(exponential_shift=True, exponential_shift_mu=math.log(5.0)).make_schedule(50)
    torch.testing.assert_close(e.sigmas, FlowMatchPairScheduler().make_schedule(50).sigmas, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="exponential_shift_mu"):
        FlowMatchPairScheduler(exponential_shift=True)
    with pytest.raises(ValueError, match="video_shift"):
        FlowMatchPairScheduler(exponential_shift=True, exponential_shift_mu=1.0).make_schedule(5, video_shift=3.0)


@pytest.mark.parametrize("field", ["inverse_timesteps", "reverse_sigmas"])
def test_inversion_flags_rejected(field):
    with pytest.raises(ValueError, match=field):
        FlowMatchPairScheduler(**{field: True})


# ----------------------------------------------------------------------------------------------------------------------
# Training grid snapping (§13.2) and the Euler step
# ----------------------------------------------------------------------------------------------------------------------


def test_training_grid(sched):
    assert sched.train_sigmas.shape == (1000,) and sched.train_sigmas.dtype == torch.float32
    assert sched.train_sigmas[0].item() == 1.0
    assert torch.equal(sched.train_timesteps, sched.train_sigmas * 1000)


@pytest.mark.parametrize("n", [50, 20])
def test_snapping_indices(sched, n):
    s = sched.make_schedule(n)
    idx = (sched.train_timesteps[None, :] - s.timesteps[:, :1]).abs().argmin(dim=1)
    assert torch.equal(idx, torch.arange(n) * (1000 // n))  # step i snaps to training index i·1000/N
    assert torch.equal(s.step_sigmas[:n, 0], sched.train_sigmas[idx])
    assert s.step_sigmas[n].tolist() == [0.0, 0.0]


def test_snapping_exact_at_50_one_ulp_at_20(sched):
    s50 = sched.make_schedule(50)
    assert torch.equal(s50.step_sigmas, s50.sigmas)
    s20 = sched.make_schedule(20)
    diff = s20.step_sigmas[:20, 0] != s20.sigmas[:20, 0]
    assert 0 < int(diff.sum()) <= 3  # a few steps differ ...
    ulps = torch.nextafter(s20.sigmas[:20, 0], torch.tensor(2.0)) - s20.sigmas[:20, 0]
    assert torch.all((s20.step_sigmas[:20, 0] - s20.sigmas[:20, 0]).abs() <= ulps)  # ... by at most 1 ulp


def test_timestep_to_sigma_nearest(sched):
    t = sched.train_timesteps[[0, 7, 500]] + torch.tensor([0.0, 0.01, -0.01])
    assert torch.equal(sched.timestep_to_sigma(t), sched.train_sigmas[[0, 7, 500]])


def test_step_matches_hand_computation(sched):
    s = sched.make_schedule(50, video_shift=5.0, audio_shift=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 4, 4, generator=g)
    v = torch.randn(2, 16, 3, 4, 4, generator=g)
    for i in (0, 17, 49):
        dt = s.step_sigmas[i + 1, 0] - s.step_sigmas[i, 0]
        assert torch.equal(s.step(v, i, x, "video"), x + v * dt)
    xa = torch.randn(2, 128, 10, generator=g)
    va = torch.randn(2, 128, 10, generator=g)
    out = s.step(va, 49, xa, "audio")
    assert torch.equal(out, xa + va * (0.0 - s.step_sigmas[49, 1]))
    # bf16 sample: computed in float32, cast back.
    xb, vb = x.bfloat16(), v.bfloat16()
    out_b = s.step(vb, 3, xb, "video")
    dt = s.step_sigmas[4, 0] - s.step_sigmas[3, 0]
    assert out_b.dtype == torch.bfloat16
    assert torch.equal(out_b, (xb.float() + vb.float() * dt).bfloat16())


def test_full_euler_run_reaches_x0_for_exact_velocity(sched):
    """With the true velocity ε − x₀ the Euler path lands on x₀ (straight-line flow)."""
    s = sched.make_schedule(25)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 128, 8, generator=g), torch.randn(1, 128, 8, generator=g)
    x = eps.clone()
    for i in range(len(s)):
        x = s.step(eps - x0, i, x, "audio")
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [0.5, 995.947, torch.tensor(3), True, None])
def test_step_rejects_non_int_index(sched, bad):
    s = sched.make_schedule(10)
    x = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="step_index"):
        s.step(x, bad, x, "video")


def test_step_rejects_out_of_range_and_bad_modality(sched):
    s = sched.make_schedule(10)
    x = torch.zeros(1, 4)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="out of range"):
            s.step(x, bad, x, "video")
    with pytest.raises(ValueError, match="modality"):
        s.step(x, 0, x, "text")
    with pytest.raises(ValueError, match="expert|step_index"):
        s.expert_for_step(10)


# ----------------------------------------------------------------------------------------------------------------------
# Training helpers
# ----------------------------------------------------------------------------------------------------------------------


def _shifted_cdf(shift: float):
    # σ = s·u/(1 + (s − 1)u) ⇔ u = σ/(s − (s − 1)σ); P(σ ≤ x) = P(u ≤ ·).
    return lambda x: np.clip(x / (shift - (shift - 1) * x), 0, 1)


def test_training_sampler_distributions(sched):
    g = torch.Generator().manual_seed(1234)
    out = sched.sample_training_timesteps(20_000, g, shift_video=5.0, shift_audio=1.0)
    for x in out:
        assert x.shape == (20_000,) and x.dtype == torch.float32
    assert stats.kstest(out.sigma_audio.numpy(), "uniform").pvalue > 0.01
    assert stats.kstest(out.sigma_video.numpy(), _shifted_cdf(5.0)).pvalue > 0.01
    # The video levels are clearly not uniform.
    assert stats.kstest(out.sigma_video.numpy(), "uniform").pvalue < 1e-6
    assert torch.equal(out.t_video, out.sigma_video * 1000)
    assert torch.equal(out.t_audio, out.sigma_audio * 1000)


def test_training_sampler_independence(sched):
    ind = sched.sample_training_timesteps(256, torch.Generator().manual_seed(0), 5.0, 5.0, independent=True)
    assert torch.all(ind.t_video != ind.t_audio)
    same = sched.sample_training_timesteps(256, torch.Generator().manual_seed(0), 5.0, 5.0, independent=False)
    assert torch.equal(same.t_video, same.t_audio)
    # Shared u with different shifts: same rank order, different values.
    mixed = sched.sample_training_timesteps(256, torch.Generator().manual_seed(0), 5.0, 1.0, independent=False)
    assert torch.equal(mixed.sigma_video.argsort(), mixed.sigma_audio.argsort())
    # Seeded generator reproduces.
    again = sched.sample_training_timesteps(256, torch.Generator().manual_seed(0), 5.0, 5.0, independent=True)
    assert torch.equal(ind.t_video, again.t_video) and torch.equal(ind.t_audio, again.t_audio)


def test_training_sampler_expert_restriction(sched):
    g = torch.Generator().manual_seed(7)
    hi = sched.sample_training_timesteps(5000, g, 5.0, 1.0, expert=0)
    lo = sched.sample_training_timesteps(5000, g, 5.0, 1.0, expert=1)
    assert torch.all(hi.t_video >= 900) and torch.all(hi.t_video <= 1000)
    assert torch.all(lo.t_video < 900) and torch.all(lo.t_video >= 0)
    assert hi.t_audio.min() < 900  # audio is not restricted
    # Within an expert the distribution is the shifted one, conditioned on the interval.
    u_b = 0.9 / (5 - 4 * 0.9)
    cond = lambda x: (_shifted_cdf(5.0)(x) - u_b) / (1 - u_b)  # noqa: E731
    assert stats.kstest(hi.sigma_video.numpy(), cond).pvalue > 0.01
    other = sched.sample_training_timesteps(100, g, expert=0, boundary_ratio=0.5)
    assert torch.all(other.t_video >= 500)
    with pytest.raises(ValueError, match="expert"):
        sched.sample_training_timesteps(4, g, expert=2)


def test_add_noise_and_velocity_target():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 16, 2, 4, 4, generator=g)
    eps = torch.randn(3, 16, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.0, 0.25, 1.0])
    xt = FlowMatchPairScheduler.add_noise(x0, eps, sigma)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * eps[1])
    assert torch.equal(FlowMatchPairScheduler.velocity_target(x0, eps), eps - x0)
    # d x_σ / dσ = target (straight line): finite difference in σ.
    a = FlowMatchPairScheduler.add_noise(x0, eps, 0.6) - FlowMatchPairScheduler.add_noise(x0, eps, 0.4)
    torch.testing.assert_close(a / 0.2, eps - x0, atol=1e-5, rtol=1e-5)
    assert FlowMatchPairScheduler.add_noise(x0.bfloat16(), eps.bfloat16(), sigma).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="batch"):
        FlowMatchPairScheduler.add_noise(x0, eps, torch.tensor([0.1, 0.2]))


# ----------------------------------------------------------------------------------------------------------------------
# Config I/O
# ----------------------------------------------------------------------------------------------------------------------


def test_config_round_trip(tmp_path):
    official = {
        "_class_name": "FlowMatchPairScheduler",
        "_diffusers_version": "0.36.0",
        "shift": 5,
        "extra_one_step": True,
        "num_train_timesteps": 1000,
    }
    sc = FlowMatchPairScheduler.from_config(official)
    assert fields(sc) == fields(FlowMatchPairScheduler())
    sc2 = FlowMatchPairScheduler.from_config({**sc.config, "shift": 3.0})
    sc2.save_pretrained(tmp_path / "scheduler")
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "FlowMatchPairScheduler" and saved["shift"] == 3.0
    loaded = FlowMatchPairScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert fields(loaded) == fields(sc2) and fields(loaded)["shift"] == 3.0
    assert torch.equal(loaded.train_sigmas, sc2.train_sigmas)


def fields(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def test_config_unknown_key_and_bad_values(tmp_path):
    with pytest.raises(TypeError, match="shfit"):
        FlowMatchPairScheduler(shfit=5.0)
    with pytest.raises(ValueError, match="shift"):
        FlowMatchPairScheduler(shift=0)
    with pytest.raises(ValueError, match="sigma_min"):
        FlowMatchPairScheduler(sigma_min=1.5)
    with pytest.raises(OSError, match="scheduler_config.json"):
        FlowMatchPairScheduler.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_inference_steps"):
        FlowMatchPairScheduler().make_schedule(0)
