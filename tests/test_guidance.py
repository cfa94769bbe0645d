"""Classifier-free guidance (spec §14): formulas, batched branches, NFE, sequential path, validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mova.guidance import GUIDANCE_MODES, Guidance, guided_velocity

C_A, N_A, L, D = 8, 6, 5, 12  # audio channels / tokens, text length / width
FPS = 24.0


class ToyDenoiser:
    """Deterministic stand-in for DualTowerDenoiser with the same call contract.

    Per sample: a channel mix of the 36-ch video input scaled by t_video, plus a text term; audio likewise. The bridge
    adds a nonlinear function of the *other* modality scaled by the per-sample ``bridge_strength`` (0 → towers
    independent).
    Every call is recorded (batch size, bridge strengths, expert).
    """

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w_video = torch.randn(16, 36, generator=g) / 6
        self.w_audio = torch.randn(C_A, C_A, generator=g) / 3
        self.w_text_v = torch.randn(D, 16, generator=g)
        self.w_text_a = torch.randn(D, C_A, generator=g)
        self.w_a2v = torch.randn(16, generator=g)
        self.w_v2a = torch.randn(C_A, generator=g)
        self.calls: list[dict] = []

    def __call__(self, video_latents, audio_latents, text_embeds, t_video, t_audio, video_fps, bridge_strength=1.0,
                 expert=None):  # fmt: skip
        b = video_latents.shape[0]
        assert audio_latents.shape[0] == text_embeds.shape[0] == t_video.shape[0] == t_audio.shape[0] == b
        bs = torch.as_tensor(bridge_strength, dtype=torch.float32)
        bs = bs.expand(b) if bs.ndim == 0 else bs
        self.calls.append({"batch": b, "bridge_strength": bs.tolist(), "expert": expert, "tensor": torch.is_tensor(
            bridge_strength)})
        txt = text_embeds.mean(dim=1)  # [B, D]
        v = torch.einsum("oc,bcthw->bothw", self.w_video, video_latents)  # [B, 16, T, h, w]
        v = v * (1 + t_video / 1000).view(b, 1, 1, 1, 1) + (txt @ self.w_text_v).view(b, 16, 1, 1, 1)
        a = torch.einsum("oc,bcn->bon", self.w_audio, audio_latents) * (1 + t_audio / 1000).view(b, 1, 1)
        a = a + (txt @ self.w_text_a).view(b, C_A, 1) + 0.01 * video_fps
        audio_summary = torch.tanh(audio_latents.mean(dim=(1, 2)) + txt.sum(dim=1))  # [B]
        video_summary = torch.sin(video_latents[:, :16].mean(dim=(1, 2, 3, 4)))  # [B]
        v = v + (bs * audio_summary).view(b, 1, 1, 1, 1) * self.w_a2v.view(1, 16, 1, 1, 1)
        a = a + (bs * video_summary).view(b, 1, 1) * self.w_v2a.view(1, C_A, 1)
        if expert is not None:
            v = v + 0.5 * (expert + 1)
        return v, a


def _inputs(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 36, 3, 4, 4, generator=g)
    audio = torch.randn(batch, C_A, N_A, generator=g)
    text = torch.randn(batch, L, D, generator=g)
    neg = torch.randn(batch, L, D, generator=g)
    t_v = torch.rand(batch, generator=g) * 1000
    t_a = torch.rand(batch, generator=g) * 1000
    return video, audio, text, neg, t_v, t_a


def _reference(den, guidance, video, audio, text, neg, t_v, t_a, expert=None):
    """The §14 formulas from separate single-branch calls with a float bridge strength."""
    kw = {} if expert is None else {"expert": expert}

    def v(prompt: bool, bridge: bool):
        out = den(video, audio, text if prompt else neg, t_v, t_a, FPS, bridge_strength=1.0 if bridge else 0.0, **kw)
        return out[0].float(), out[1].float()

    s_t, s_b = guidance.text_scale, guidance.bridge_scale
    results = []
    for m in range(2):  # video, audio
        if guidance.mode == "none":
            r = v(True, True)[m]
        elif guidance.mode == "text":
            r = v(False, True)[m] + s_t * (v(True, True)[m] - v(False, True)[m])
        elif guidance.mode == "text+bridge":
            r = v(False, False)[m] + s_t * (v(True, True)[m] - v(False, False)[m])
        else:
            null, bridge_only, cond = v(False, False)[m], v(False, True)[m], v(True, True)[m]
            r = null + s_b * (bridge_only - null) + s_t * (cond - bridge_only)
        results.append(r)
    return tuple(results)


EXPECTED_NFE = {"none": 1, "text": 2, "text+bridge": 2, "dual": 3}


@pytest.mark.parametrize("mode", GUIDANCE_MODES)
@pytest.mark.parametrize("batch", [1, 2])
def test_batched_equals_formula_and_single_call(mode, batch):
    guidance = Guidance(mode=mode, text_scale=4.5, bridge_scale=2.5)
    den = ToyDenoiser()
    video, audio, text, neg, t_v, t_a = _inputs(batch)
    v_video, v_audio = guided_velocity(den, guidance, video, audio, text, neg, t_v, t_a, FPS)

    assert len(den.calls) == 1  # one batched forward
    call = den.calls[0]
    assert call["batch"] == EXPECTED_NFE[mode] * batch == guidance.nfe * batch
    assert call["tensor"]  # bridge strength passed per sample as a tensor
    expected_bridge = {
        "none": [1.0],
        "text": [1.0, 1.0],
        "text+bridge": [0.0, 1.0],
        "dual": [0.0, 1.0, 1.0],
    }[mode]
    assert call["bridge_strength"] == [s for s in expected_bridge for _ in range(batch)]
    assert call["expert"] is None

    ref_video, ref_audio = _reference(ToyDenoiser(), guidance, video, audio, text, neg, t_v, t_a)
    assert v_video.dtype == v_audio.dtype == torch.float32
    assert v_video.shape == (batch, 16, 3, 4, 4) and v_audio.shape == (batch, C_A, N_A)
    torch.testing.assert_close(v_video, ref_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(v_audio, ref_audio, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", GUIDANCE_MODES)
def test_sequential_equals_batched(mode):
    guidance = Guidance(mode=mode, text_scale=6.0, bridge_scale=3.5)
    video, audio, text, neg, t_v, t_a = _inputs(2, seed=5)
    batched = guided_velocity(ToyDenoiser(), guidance, video, audio, text, neg, t_v, t_a, FPS, expert=1)
    den = ToyDenoiser()
    seq = guided_velocity(den, guidance, video, audio, text, neg, t_v, t_a, FPS, expert=1, sequential=True)
    assert [c["batch"] for c in den.calls] == [2] * guidance.nfe
    assert all(c["expert"] == 1 for c in den.calls)
    for a, b in zip(batched, seq):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    ref = _reference(ToyDenoiser(), guidance, video, audio, text, neg, t_v, t_a, expert=1)
    for a, b in zip(seq, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bridge_branch_changes_the_result():
    """The toy bridge matters, so text and text+bridge really differ (the test above is not vacuous)."""
    video, audio, text, neg, t_v, t_a = _inputs(1)
    a = guided_velocity(ToyDenoiser(), Guidance("text"), video, audio, text, neg, t_v, t_a, FPS)
    b = guided_velocity(ToyDenoiser(), Guidance("text+bridge"), video, audio, text, neg, t_v, t_a, FPS)
    assert (a[0] - b[0]).abs().max() > 1e-2 and (a[1] - b[1]).abs().max() > 1e-2


def test_paper_special_cases():
    """dual with s_B = 1 is text CFG; dual with s_B = s_T is text+bridge CFG (spec §14.2)."""
    video, audio, text, neg, t_v, t_a = _inputs(2, seed=9)
    args = (video, audio, text, neg, t_v, t_a, FPS)
    text_cfg = guided_velocity(ToyDenoiser(), Guidance("text", 5.0), *args)
    dual_1 = guided_velocity(ToyDenoiser(), Guidance("dual", 5.0, 1.0), *args)
    tb = guided_velocity(ToyDenoiser(), Guidance("text+bridge", 5.0), *args)
    dual_5 = guided_velocity(ToyDenoiser(), Guidance("dual", 5.0, 5.0), *args)
    for x, y in zip(text_cfg + tb, dual_1 + dual_5):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-5)
    # text_scale = 1 reduces to the conditional branch.
    one = guided_velocity(ToyDenoiser(), Guidance("text", 1.0), *args)
    none = guided_velocity(ToyDenoiser(), Guidance("none"), *args)
    for x, y in zip(one, none):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_expert_forwarded_only_when_given():
    video, audio, text, neg, t_v, t_a = _inputs(1)
    den = ToyDenoiser()
    guided_velocity(den, Guidance("none"), video, audio, text, None, t_v, t_a, FPS, expert=0)
    assert den.calls[-1]["expert"] == 0

    def no_expert_kwarg(video_latents, audio_latents, text_embeds, t_video, t_audio, video_fps, bridge_strength=1.0):
        return ToyDenoiser()(video_latents, audio_latents, text_embeds, t_video, t_audio, video_fps, bridge_strength)

    guided_velocity(no_expert_kwarg, Guidance("text"), video, audio, text, neg, t_v, t_a, FPS)  # no TypeError


def test_scalar_timesteps_and_negative_broadcast():
    video, audio, text, neg, _, _ = _inputs(3)
    g = Guidance("dual", 5.0, 3.5)
    out = guided_velocity(ToyDenoiser(), g, video, audio, text, neg[:1], 950.0, torch.tensor(950.0), FPS)
    ref = _reference(ToyDenoiser(), g, video, audio, text, neg[:1].expand(3, L, D), torch.full((3,), 950.0),
                     torch.full((3,), 950.0))  # fmt: skip
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_input_errors():
    video, audio, text, neg, t_v, t_a = _inputs(2)
    with pytest.raises(ValueError, match="negative_embeds"):
        guided_velocity(ToyDenoiser(), Guidance("text"), video, audio, text, None, t_v, t_a, FPS)
    with pytest.raises(ValueError, match="negative_embeds shape"):
        guided_velocity(ToyDenoiser(), Guidance("text"), video, audio, text, neg[:, :3], t_v, t_a, FPS)
    with pytest.raises(ValueError, match="t_video"):
        guided_velocity(ToyDenoiser(), Guidance("none"), video, audio, text, None, t_v[:1], t_a, FPS)
    with pytest.raises(ValueError, match="batch sizes"):
        guided_velocity(ToyDenoiser(), Guidance("none"), video, audio[:1], text, None, t_v, t_a, FPS)
    # mode "none" needs no negative prompt.
    guided_velocity(ToyDenoiser(), Guidance("none"), video, audio, text, None, t_v, t_a, FPS)


def test_guidance_defaults_and_nfe():
    g = Guidance()
    assert (g.mode, g.text_scale, g.bridge_scale) == ("text", 5.0, 1.0)
    assert {m: Guidance(mode=m).nfe for m in GUIDANCE_MODES} == EXPECTED_NFE
    assert isinstance(Guidance(text_scale=3).text_scale, float)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"mode": "cfg"}, "mode"),
        ({"mode": None}, "mode"),
        ({"text_scale": -1.0}, "text_scale"),
        ({"text_scale": float("nan")}, "text_scale"),
        ({"text_scale": float("inf")}, "text_scale"),
        ({"text_scale": "5"}, "text_scale"),
        ({"text_scale": True}, "text_scale"),
        ({"bridge_scale": -0.5}, "bridge_scale"),
        ({"bridge_scale": float("inf")}, "bridge_scale"),
    ],
)
def test_guidance_validation(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        Guidance(**kwargs)
    if field == "mode":
        assert "text+bridge" in str(info.value) and "dual" in str(info.value)  # lists the allowed values


def test_guidance_import_is_light():
    code = "import sys, mova.guidance as g; g.Guidance('dual', 5.0, 3.5).nfe; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
