"""Model components: full-size structure on meta, tiny forwards, float64 parity with the spec's equations."""

from __future__ import annotations

import contextlib
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mova.config import get_preset, tiny_preset
from mova.loading import build_on_meta, parameter_count
from mova.models import AudioDiT, AudioVAE, DualTowerBridge, DualTowerDenoiser, VideoDiT
from mova.models.bridge import aligned_positions, apply_rope_half, interaction_layers, rotary_cos_sin
from mova.models.layers import (
    DiTBlock, apply_rope_interleaved, rope_angles, rope_tables, sinusoidal_embedding, video_rope,
)

# --------------------------------------------------------------------------------------------------------
# Full size, on the meta device (spec §4, §23)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full():
    p = get_preset("mova-720p")
    return {
        "video": build_on_meta(VideoDiT, p.video_dit),
        "audio": build_on_meta(AudioDiT, p.audio_dit),
        "bridge": build_on_meta(DualTowerBridge, p.bridge),
        "vae": build_on_meta(AudioVAE, p.audio_vae),
    }


def test_full_size_parameter_and_tensor_counts(full):
    assert parameter_count(full["video"]) == 14_288_901_184
    assert parameter_count(full["audio"]) == 1_419_193_472
    assert parameter_count(full["bridge"]) == 2_659_737_600
    assert parameter_count(full["vae"]) == 371_589_058
    assert len(full["video"].state_dict()) == 1095
    assert len(full["audio"].state_dict()) == 825
    assert len(full["bridge"].state_dict()) == 720
    # paper: 32B total, 18B active
    total = 2 * 14_288_901_184 + 1_419_193_472 + 2_659_737_600
    assert total == 32_656_733_440


def shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_full_size_video_keys_and_shapes(full):
    s = shapes(full["video"])
    expected = {
        "patch_embedding.weight": [5120, 36, 1, 2, 2], "patch_embedding.bias": [5120],
        "text_embedding.0.weight": [5120, 4096], "text_embedding.2.weight": [5120, 5120],
        "time_embedding.0.weight": [5120, 256], "time_embedding.2.weight": [5120, 5120],
        "time_projection.1.weight": [30720, 5120], "time_projection.1.bias": [30720],
        "blocks.39.self_attn.q.weight": [5120, 5120], "blocks.0.self_attn.norm_q.weight": [5120],
        "blocks.0.self_attn.norm_k.weight": [5120], "blocks.0.cross_attn.o.bias": [5120],
        "blocks.0.cross_attn.norm_k.weight": [5120], "blocks.0.norm3.weight": [5120], "blocks.0.norm3.bias": [5120],
        "blocks.0.ffn.0.weight": [13824, 5120], "blocks.0.ffn.2.weight": [5120, 13824],
        "blocks.0.modulation": [1, 6, 5120], "head.head.weight": [64, 5120], "head.head.bias": [64],
        "head.modulation": [1, 2, 5120],
    }
    for key, shape in expected.items():
        assert s[key] == shape, key
    assert not any(k.startswith(("blocks.0.norm1", "blocks.0.norm2", "head.norm")) for k in s)
    assert "blocks.40.ffn.0.weight" not in s


def test_full_size_audio_keys_and_shapes(full):
    s = shapes(full["audio"])
    assert s["patch_embedding.weight"] == [1536, 128, 1]
    assert s["text_embedding.0.weight"] == [1536, 4096]
    assert s["time_projection.1.weight"] == [9216, 1536]
    assert s["blocks.29.ffn.0.weight"] == [8960, 1536]
    assert s["blocks.29.ffn.2.weight"] == [1536, 8960]
    assert s["head.head.weight"] == [128, 1536]
    assert s["head.modulation"] == [1, 2, 1536]
    assert "blocks.30.modulation" not in s


def test_full_size_bridge_keys_and_shapes(full):
    s = shapes(full["bridge"])
    a2v, v2a = "audio_to_video_conditioners.29", "video_to_audio_conditioners.0"
    assert s[f"{a2v}.y_norm.weight"] == [1536]
    assert s[f"{a2v}.inner.q.weight"] == [5120, 5120]
    assert s[f"{a2v}.inner.k.weight"] == [5120, 1536]
    assert s[f"{a2v}.inner.v.weight"] == [5120, 1536]
    assert s[f"{a2v}.inner.norm_k.weight"] == [5120]
    assert s[f"{v2a}.y_norm.bias"] == [5120]
    assert s[f"{v2a}.inner.q.weight"] == [1536, 1536]
    assert s[f"{v2a}.inner.k.weight"] == [1536, 5120]
    assert s[f"{v2a}.inner.o.weight"] == [1536, 1536]
    assert "audio_to_video_conditioners.30.y_norm.weight" not in s
    assert "condition_scale" not in s
    assert sum(1 for k in s if k.startswith("audio_to_video_conditioners.")) == 30 * 12


def test_full_size_audio_vae_keys(full):
    s = shapes(full["vae"])
    assert s["encoder.block.0.weight_v"] == [128, 1, 7]
    assert s["encoder.block.0.weight_g"] == [128, 1, 1]
    assert s["encoder.block.1.block.0.block.0.alpha"] == [1, 128, 1]
    assert s["encoder.block.5.block.4.weight_v"] == [4096, 2048, 16]
    assert s["encoder.block.7.weight_v"] == [128, 4096, 3]
    assert s["quant_conv.weight"] == [256, 128, 1]
    assert s["post_quant_conv.weight"] == [128, 128, 1]
    assert s["decoder.model.0.weight_v"] == [2048, 128, 7]
    assert s["decoder.model.1.block.1.weight_v"] == [2048, 1024, 16]  # ConvTranspose: [in, out, k]
    assert s["decoder.model.1.block.1.weight_g"] == [2048, 1, 1]
    assert s["decoder.model.7.weight_v"] == [1, 64, 7]


def test_interaction_strategies():
    def layers(strategy, v=40, a=30):
        return interaction_layers(strategy, v, a)

    assert layers("full") == list(range(30))
    assert layers("shallow_focus") == list(range(10))
    assert layers("distributed") == list(range(0, 30, 3))
    assert layers("progressive") == list(range(8)) + list(range(8, 30, 3))
    assert layers("custom") == [0, 2, 4, 6, 8, 12, 16, 20]
    p = tiny_preset(interaction_strategy="distributed", video_layers=4, audio_layers=4)
    bridge = DualTowerBridge(**p.bridge)
    assert sorted(map(int, bridge.audio_to_video_conditioners)) == [0, 3]


# --------------------------------------------------------------------------------------------------------
# Tiny configurations
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    p = tiny_preset()
    models = [VideoDiT(**p.video_dit), AudioDiT(**p.audio_dit), DualTowerBridge(**p.bridge), VideoDiT(**p.video_dit)]
    for m in models:
        m.eval()
        for param in m.parameters():  # random non-zero everything (bridge o and heads included)
            torch.nn.init.normal_(param, std=0.2)
    v, a, b, v2 = models
    return DualTowerDenoiser(v, a, b, v2).eval()


def inputs(B=2, T=3, H=8, W=8, N=21, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 36, T, H, W, generator=g), torch.randn(B, 8, N, generator=g),
            torch.randn(B, 12, 32, generator=g))


def test_tiny_denoiser_shapes(tiny):
    video, audio, text = inputs()
    with torch.no_grad():
        ov, oa = tiny(video, audio, text, 950.0, 300.0, 24.0)
    assert ov.shape == (2, 16, 3, 8, 8)
    assert oa.shape == (2, 8, 21)
    assert torch.isfinite(ov).all() and torch.isfinite(oa).all()
    with torch.no_grad():  # single-tower forwards too
        assert tiny.video_dit(video, 10.0, text).shape == (2, 16, 3, 8, 8)
        assert tiny.audio_dit(audio, 10.0, text).shape == (2, 8, 21)


def test_expert_selection_by_boundary(tiny):
    video, audio, text = inputs(B=1)
    with torch.no_grad():
        high = tiny(video, audio, text, 900.0, 900.0, 24.0)[0]
        low = tiny(video, audio, text, 899.9, 900.0, 24.0)[0]
        forced = tiny(video, audio, text, 899.9, 900.0, 24.0, expert=0)[0]
        ref_high = tiny(video, audio, text, 899.9, 900.0, 24.0, expert=0)[0]
    assert tiny.expert_index(900.0) == 0 and tiny.expert_index(899.9) == 1
    assert not torch.allclose(high, low)
    assert torch.equal(forced, ref_high)
    with pytest.raises(ValueError, match="straddle"):
        tiny(*inputs(B=2), torch.tensor([950.0, 100.0]), 500.0, 24.0)


def test_bridge_strength_zero_makes_towers_independent(tiny):
    video, audio, text = inputs(B=1)
    video2 = video + torch.randn_like(video)
    with torch.no_grad():
        _, a1 = tiny(video, audio, text, 500.0, 500.0, 24.0, bridge_strength=0.0)
        _, a2 = tiny(video2, audio, text, 500.0, 500.0, 24.0, bridge_strength=0.0)
        _, a3 = tiny(video2, audio, text, 500.0, 500.0, 24.0, bridge_strength=1.0)
        _, a4 = tiny(video, audio, text, 500.0, 500.0, 24.0, bridge_strength=1.0)
    assert torch.equal(a1, a2)  # bit-identical: no path from video to audio
    assert not torch.allclose(a3, a4)  # with the bridge on, the video does reach the audio
    # and bridge off equals the audio tower alone
    with torch.no_grad():
        alone = tiny.audio_dit(audio, 500.0, text)
    torch.testing.assert_close(a1, alone, rtol=1e-5, atol=1e-5)


def test_per_sample_bridge_strength_matches_separate_calls(tiny):
    video, audio, text = inputs(B=2)
    with torch.no_grad():
        bv, ba = tiny(video, audio, text, 500.0, 400.0, 24.0, bridge_strength=torch.tensor([1.0, 0.0]))
        v0, a0 = tiny(video[:1], audio[:1], text[:1], 500.0, 400.0, 24.0, bridge_strength=1.0)
        v1, a1 = tiny(video[1:], audio[1:], text[1:], 500.0, 400.0, 24.0, bridge_strength=0.0)
    torch.testing.assert_close(bv, torch.cat([v0, v1]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ba, torch.cat([a0, a1]), rtol=1e-5, atol=1e-5)


def test_bridge_rope_follows_the_denoisers_temporal_stride(tiny):
    """The bridge places video latent frames ``temporal_stride`` pixel frames apart (the pipeline passes its VAE's
    ``scale_factor_temporal``): the tables the denoiser builds equal those of the positions at that stride, and a
    stride-2 model's audio output differs from the same weights at stride 4."""
    video, audio, text = inputs(B=1)
    cfg = tiny.bridge.config
    half = DualTowerDenoiser(tiny.video_dit, tiny.audio_dit, tiny.bridge, tiny.video_dit_2,
                             temporal_stride=2).eval()
    assert tiny.temporal_stride == 4
    with torch.no_grad():
        streams = half.embed(video, audio, text, 500.0, 400.0, 24.0)
        vpos, _ = aligned_positions(24.0, streams.grid_video, 21, cfg.audio_fps, cfg.apply_first_frame_bias_in_rope,
                                    temporal_stride=2)
        cos, sin = rotary_cos_sin(vpos, cfg.head_dim, streams.video.dtype)
        torch.testing.assert_close(streams.bridge_rope_video[0], cos, rtol=0, atol=0)
        torch.testing.assert_close(streams.bridge_rope_video[1], sin, rtol=0, atol=0)
        assert not torch.allclose(half(video, audio, text, 500.0, 400.0, 24.0)[1],
                                  tiny(video, audio, text, 500.0, 400.0, 24.0)[1])
    with pytest.raises(ValueError, match="temporal_stride"):
        DualTowerDenoiser(tiny.video_dit, tiny.audio_dit, tiny.bridge, temporal_stride=0)


def test_aligned_rope_positions():
    vpos, apos = aligned_positions(24.0, (49, 2, 3), 403, 50.0)
    per_frame = vpos.reshape(49, 6)
    assert torch.equal(per_frame, per_frame[:, :1].expand(49, 6))  # spatial tokens share the frame position
    np.testing.assert_allclose(per_frame[:, 0].numpy(), np.arange(49) * 50 / 6, rtol=1e-6)
    assert vpos.dtype == torch.float32 and float(per_frame[48, 0]) == 400.0
    assert float(per_frame[1, 0]) == np.float32(np.float32(1.0) * np.float32(50 / 6))
    np.testing.assert_array_equal(apos.numpy(), np.arange(403))
    vpos_b, _ = aligned_positions(24.0, (49, 1, 1), 403, 50.0, first_frame_bias=True)
    np.testing.assert_allclose(vpos_b[:4].numpy(), [0.0, 2.0833333, 10.416667, 18.75], rtol=1e-6)
    assert abs(float(vpos_b[48]) - 393.75) < 1e-4


# --------------------------------------------------------------------------------------------------------
# Float64 parity with an independent implementation of the spec's equations (numpy)
# --------------------------------------------------------------------------------------------------------


def np_layernorm(x, eps, w=None, b=None):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * w + b if w is not None else y


def np_rmsnorm(x, w, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def np_attention(q, k, v):  # [L, H, D]
    s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v)


def np_rope_complex(x, pos_per_axis, dims):
    """Interleaved RoPE via complex multiplication: axis a rotates pairs of its own dims by pos·θ."""
    L, H, D = x.shape
    z = x[..., 0::2] + 1j * x[..., 1::2]  # [L, H, D/2]
    angles = []
    for pos, d in zip(pos_per_axis, dims):
        theta = 10000.0 ** (-np.arange(0, d, 2) / d)
        angles.append(np.outer(pos, theta))
    ang = np.concatenate(angles, axis=1)  # [L, D/2]
    z = z * np.exp(1j * ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_rope_functions_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 24, 2, 16, generator=g, dtype=torch.float64)
    grid, split = (2, 3, 4), VideoDiT(dim=32, num_heads=2, ffn_dim=8, num_layers=1).rope_split
    assert split == (8, 4, 4)
    ours = apply_rope_interleaved(x, rope_tables(video_rope(grid, split, x.device), x.dtype))[0].numpy()
    f, h, w = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), indexing="ij")
    ref = np_rope_complex(x[0].numpy(), [f.ravel(), h.ravel(), w.ravel()], split)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-6
    # the 128-d split of the full model is 44 | 42 | 42
    assert build_on_meta(VideoDiT, {}).rope_split == (44, 42, 42)
    # rotate-half RoPE of the bridge
    pos = torch.tensor([0.0, 8.333333, 17.5, 400.0])
    cos, sin = rotary_cos_sin(pos, 16, torch.float64)
    y = torch.randn(1, 4, 2, 16, generator=g, dtype=torch.float64)
    ours_h = apply_rope_half(y, cos, sin)[0].numpy()
    yn = y[0].numpy()
    theta = 10000.0 ** (-np.arange(0, 16, 2) / 16)
    ang = np.outer(pos.numpy().astype(np.float64), theta)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = yn[..., :8], yn[..., 8:]
    ref_h = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    assert np.abs(ours_h - ref_h).max() / np.abs(ref_h).max() < 1e-6
    # timestep embedding: cos first, then sin
    emb = sinusoidal_embedding(torch.tensor([0.0, 500.0]), 8).numpy()
    om = 10000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(emb[1], np.concatenate([np.cos(500 * om), np.sin(500 * om)]), rtol=1e-6)
    np.testing.assert_allclose(rope_angles(torch.arange(3), 8)[2].numpy(), 2 * 10000.0 ** (-np.arange(0, 8, 2) / 8))


def test_dit_block_matches_float64_reference():
    torch.manual_seed(3)
    dim, heads, ffn = 32, 2, 48
    block = DiTBlock(dim, ffn, heads).double().eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    grid, split = (2, 2, 3), (8, 4, 4)
    L = 12
    x = torch.randn(2, L, dim, dtype=torch.float64)
    ctx = torch.randn(2, 5, dim, dtype=torch.float64)
    t_mod = torch.randn(2, 6, dim, dtype=torch.float64)
    with torch.no_grad():
        ours = block(x, ctx, t_mod, rope_tables(video_rope(grid, split, x.device), x.dtype)).numpy()

    P = {k: v.detach().numpy() for k, v in block.state_dict().items()}
    lin = lambda name, z: z @ P[f"{name}.weight"].T + P[f"{name}.bias"]  # noqa: E731
    f, h, w = (a.ravel() for a in np.meshgrid(np.arange(2), np.arange(2), np.arange(3), indexing="ij"))
    for b in range(2):
        xb, cb = x[b].numpy(), ctx[b].numpy()
        mod = P["modulation"][0] + t_mod[b].numpy()
        s1, c1, g1, s2, c2, g2 = mod
        hdn = np_layernorm(xb, 1e-6) * (1 + c1) + s1
        q = np_rmsnorm(lin("self_attn.q", hdn), P["self_attn.norm_q.weight"], 1e-6).reshape(L, heads, -1)
        k = np_rmsnorm(lin("self_attn.k", hdn), P["self_attn.norm_k.weight"], 1e-6).reshape(L, heads, -1)
        v = lin("self_attn.v", hdn).reshape(L, heads, -1)
        q, k = (np_rope_complex(t, [f, h, w], split) for t in (q, k))
        xb = xb + g1 * lin("self_attn.o", np_attention(q, k, v).reshape(L, dim))
        hdn = np_layernorm(xb, 1e-6, P["norm3.weight"], P["norm3.bias"])
        q = np_rmsnorm(lin("cross_attn.q", hdn), P["cross_attn.norm_q.weight"], 1e-6).reshape(L, heads, -1)
        k = np_rmsnorm(lin("cross_attn.k", cb), P["cross_attn.norm_k.weight"], 1e-6).reshape(5, heads, -1)
        v = lin("cross_attn.v", cb).reshape(5, heads, -1)
        xb = xb + lin("cross_attn.o", np_attention(q, k, v).reshape(L, dim))
        hdn = np_layernorm(xb, 1e-6) * (1 + c2) + s2
        xb = xb + g2 * lin("ffn.2", np_gelu_tanh(lin("ffn.0", hdn)))
        err = np.abs(ours[b] - xb).max() / np.abs(xb).max()
        assert err < 1e-6, err


def test_bridge_conditioner_matches_float64_reference():
    torch.manual_seed(4)
    bridge = DualTowerBridge(visual_layers=1, audio_layers=1, visual_hidden_dim=32, audio_hidden_dim=16, head_dim=8,
                             audio_fps=50.0).double().eval()
    for p in bridge.parameters():
        torch.nn.init.normal_(p, std=0.3)
    grid, n_audio, fps = (3, 1, 2), 7, 24.0
    v = torch.randn(1, 6, 32, dtype=torch.float64)
    a = torch.randn(1, n_audio, 16, dtype=torch.float64)
    rv, ra = bridge.rope(fps, grid, n_audio, v.device, torch.float64)
    with torch.no_grad():
        v_new, a_new = bridge(0, v, a, rv, ra, 0.7, grid)
    P = {k: t.detach().numpy() for k, t in bridge.state_dict().items()}
    vpos = np.repeat(np.arange(3) * 50.0 / (fps / 4), 2)
    apos = np.arange(n_audio, dtype=np.float64)

    def rope_half(z, pos):  # [L, H, D]
        D = z.shape[-1]
        ang = np.outer(pos, 10000.0 ** (-np.arange(0, D, 2) / D))
        ang = np.concatenate([ang, ang], axis=1)[:, None, :]
        rot = np.concatenate([-z[..., D // 2:], z[..., : D // 2]], axis=-1)
        return z * np.cos(ang) + rot * np.sin(ang)

    def conditioner(prefix, x, y, xpos, ypos, heads):
        lin = lambda n, z: z @ P[f"{prefix}.inner.{n}.weight"].T + P[f"{prefix}.inner.{n}.bias"]  # noqa: E731
        yn = np_layernorm(y, 1e-6, P[f"{prefix}.y_norm.weight"], P[f"{prefix}.y_norm.bias"])
        q = np_rmsnorm(lin("q", x), P[f"{prefix}.inner.norm_q.weight"], 1e-6).reshape(len(x), heads, -1)
        k = np_rmsnorm(lin("k", yn), P[f"{prefix}.inner.norm_k.weight"], 1e-6).reshape(len(y), heads, -1)
        vv = lin("v", yn).reshape(len(y), heads, -1)
        out = np_attention(rope_half(q, xpos), rope_half(k, ypos), vv).reshape(len(x), -1)
        return lin("o", out)

    vn, an = v[0].numpy(), a[0].numpy()
    ref_v = vn + 0.7 * conditioner("audio_to_video_conditioners.0", vn, an, vpos, apos, 4)
    ref_a = an + 0.7 * conditioner("video_to_audio_conditioners.0", an, vn, apos, vpos, 2)
    assert np.abs(v_new[0].numpy() - ref_v).max() / np.abs(ref_v).max() < 1e-6
    assert np.abs(a_new[0].numpy() - ref_a).max() / np.abs(ref_a).max() < 1e-6


def test_pooled_adaln_and_trainable_scale_options_build_and_run():
    p = tiny_preset()
    bridge = DualTowerBridge(**{**p.bridge, "pooled_adaln": True, "trainable_condition_scale": True,
                                "apply_cross_rope": False}).eval()
    keys = bridge.state_dict().keys()
    assert "condition_scale" in keys
    assert "video_to_audio_conditioners.0.per_frame_pooling.probe" in keys
    assert "video_to_audio_conditioners.0.adaln.linear.weight" in keys
    assert "audio_to_video_conditioners.0.per_frame_pooling.probe" not in keys
    v, a = torch.randn(2, 3 * 4, 48), torch.randn(2, 9, 32)
    with torch.no_grad():
        nv, na = bridge(0, v, a, None, None, 1.0, (3, 2, 2))
        bridge.condition_scale.fill_(0.0)
        zv, za = bridge(0, v, a, None, None, 1.0, (3, 2, 2))
    assert nv.shape == v.shape and na.shape == a.shape
    assert torch.equal(zv, v) and torch.equal(za, a)  # a zero learned scale switches the bridge off
    with pytest.raises(ValueError, match="pooled_adaln"):
        DualTowerBridge.check_config({"pooled_adaln": True})  # the released widths cannot build it (5120 not divisible by 12)


# --------------------------------------------------------------------------------------------------------
# Audio VAE
# --------------------------------------------------------------------------------------------------------


def test_audio_vae_lengths_and_weight_norm_forms(tmp_path):
    p = tiny_preset()
    torch.manual_seed(0)
    vae = AudioVAE(**p.audio_vae).eval()
    assert vae.hop == 960 and vae.num_latent_frames(386_000) == 403 and vae.num_latent_frames(242_000) == 253
    audio = 0.1 * torch.randn(2, 1, 5000)
    with torch.no_grad():
        z = vae.encode(audio)
        assert z.shape == (2, 8, 6)  # ceil(5000 / 960)
        y = vae.decode(z)
    assert y.shape == (2, 1, 960 * 6)
    assert y.abs().max() <= 1.0


def _stream_twice(model, streamer, resident, log, *args):
    """Two forwards of ``model`` under ``streamer``, then ``remove()``. Appends to ``log`` ("run", block, the blocks
    resident while it runs) before each streamed block computes and ("release", block) after it; returns (the
    outputs, the block names in the order the streamer recorded)."""
    names = {id(m): n for n, m in model.named_modules()}

    def run(block, _):
        log.append(("run", names[id(block)], frozenset(names[k] for k, b in streamer.blocks.items() if resident(b))))

    def done(block, _, __):
        log.append(("still resident" if resident(block) else "release", names[id(block)]))

    handles = [h for b in streamer.blocks.values()  # registered after the streamer's hooks: they see its work
               for h in (b.register_forward_pre_hook(run), b.register_forward_hook(done))]
    try:
        with torch.no_grad():
            outs = [model(*args) for _ in range(2)]
    finally:
        streamer.remove()
        for h in handles:
            h.remove()
    return outs, [names[k] for k in streamer.order]


def _expected(order, prefetch, calls=False):
    """The log of one forward over the blocks ``order``; with ``calls``, also the stream calls of the streamer."""
    out = []
    for i, block in enumerate(order):
        nxt = order[i + 1] if prefetch and i + 1 < len(order) else None
        if calls:
            out += [("copy", block)] if not prefetch or i == 0 else []  # else prefetched while order[i-1] ran
            out += [("wait", block), ("keep",)] + ([("copy", nxt)] if nxt else [])
        out += [("run", block, frozenset({block, nxt} - {None})), ("release", block)]
    return out


def _streamed_blocks(model):
    return [*model.experts, model.audio_dit, model.bridge]


def test_block_streamer_without_side_stream_loads_each_block_when_it_runs(tiny):
    """The synchronous path (no side stream: a CPU device, or ``prefetch=False``): the execution order is recorded,
    each block is resident only while it runs, nothing is prefetched, the results are bit-identical. On CPU it
    copies and pins nothing; the prefetch schedule and the real copies are the two tests below."""
    from mova.offload import BlockStreamer

    args = (*inputs(B=1), 500.0, 400.0, 24.0)
    with torch.no_grad():
        ref = tiny(*args)
    streamer = BlockStreamer(_streamed_blocks(tiny), torch.device("cpu"))
    assert streamer.stream is None
    log: list[tuple] = []
    outs, order = _stream_twice(tiny, streamer, lambda b: streamer.ready[id(b)] is not None, log, *args)
    assert all(torch.equal(a, b) for out in outs for a, b in zip(ref, out))
    assert len(order) == 9  # 3 video + 2 audio blocks + 2×2 bridge conditioners
    assert log == _expected(order, prefetch=False) * 2


def test_block_streamer_prefetch_schedule_with_a_fake_stream(tiny, monkeypatch):
    """The prefetch logic on CPU, with torch.cuda's stream API replaced by fakes that log each call. First forward:
    the order is recorded and each block is copied (on the side stream) when it runs. Second forward: block i
    waits for its copy, marks its weights in use on the compute stream, starts the copy of block i+1 on the side
    stream, runs with only blocks i and i+1 resident, then is released. Real copies and pinning: the CUDA test."""
    from mova.offload import BlockStreamer

    log: list[tuple] = []
    side = object()
    block_of = {}  # event -> the block whose copy it marks (read from the streamer's table at the wait)

    class Event:
        def record(self, stream):
            assert stream is side
            log.append(("copy", self))

    def wait_event(event):
        block_of[event] = names[next(k for k, e in streamer.ready.items() if e is event)]
        log.append(("wait", block_of[event]))

    compute = SimpleNamespace(wait_event=wait_event)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: log.append(("keep",)), raising=False)
    names = {id(m): n for n, m in tiny.named_modules()}
    args = (*inputs(B=1), 500.0, 400.0, 24.0)
    with torch.no_grad():
        ref = tiny(*args)
    streamer = BlockStreamer(_streamed_blocks(tiny), torch.device("cpu"))
    streamer.stream = side
    outs, order = _stream_twice(tiny, streamer, lambda b: streamer.ready[id(b)] is not None, log, *args)
    assert all(torch.equal(a, b) for out in outs for a, b in zip(ref, out))
    calls = [("copy", block_of[e[1]]) if e[0] == "copy" else e for e in log]
    calls = [e for i, e in enumerate(calls) if not (e == ("keep",) and calls[i - 1] == e)]  # one per block
    assert calls == _expected(order, prefetch=False, calls=True) + _expected(order, prefetch=True, calls=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the prefetch path needs a CUDA device and side stream")
def test_block_streamer_prefetches_on_cuda(tiny):
    """The real prefetch path: block weights live in pinned host memory; in the second forward block i+1 is on the
    GPU (copied on the side stream) while block i runs, no other block is; results match the all-GPU model."""
    from mova.offload import BlockStreamer

    device = torch.device("cuda")
    args = (*(x.to(device) for x in inputs(B=1)), 500.0, 400.0, 24.0)
    with torch.no_grad():
        ref = copy.deepcopy(tiny).to(device)(*args)
    model = copy.deepcopy(tiny)
    streamer = BlockStreamer(_streamed_blocks(model), device)
    assert isinstance(streamer.stream, torch.cuda.Stream)
    assert all(host.is_pinned() for pairs in streamer.host.values() for _, host in pairs)
    log: list[tuple] = []

    def on_gpu(block):
        return all(p.device.type == "cuda" for p in block.parameters())

    outs, order = _stream_twice(model, streamer, on_gpu, log, *args)
    assert log == _expected(order, prefetch=False) + _expected(order, prefetch=True)
    for out in outs:
        for a, b in zip(ref, out):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert all(p.device.type == "cpu" for b in streamer.blocks.values() for p in b.parameters())
