"""The fast path's pieces that run on a CPU: fp8 arithmetic against float64, module swapping, and the refusals of
``precision="fp8"`` where it cannot run (timings live in benchmarks/)."""

from __future__ import annotations

import pytest
import torch

from mova.acceleration import Fp8Linear, fp8, fp8_linear, fp8_targets, fp8_unavailable
from mova.attention import Fp8Attention, _to_e4m3
from mova.config import tiny_preset
from mova.models import AudioDiT, DualTowerBridge, VideoDiT
from mova.settings import GenerationSettings


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_fp8_linear_is_a_rowwise_scaled_e4m3_gemm():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 40, 128, generator=g), torch.randn(48, 128, generator=g), torch.randn(48, generator=g)
    x[0, 0] *= 100.0  # one loud row: rowwise scales keep the other rows' precision
    out = fp8_linear(x, w, b)
    ref = x.double() @ w.double().T + b.double()
    assert out.shape == (3, 40, 48) and 0.005 < rel(out, ref) < 0.06  # e4m3 keeps 3 mantissa bits
    assert rel(out[1:], ref[1:]) < 0.06


def test_e4m3_attention_inputs_round_trip_per_head():
    q = torch.randn(2, 50, 3, 16, dtype=torch.float64)
    q[:, :, 1] *= 1000.0  # a loud head gets its own scale
    q8, scale = _to_e4m3(q)
    assert q8.dtype == torch.float8_e4m3fn and scale.shape == (2, 3)
    back = q8.double() * scale[:, None, :, None].double()
    for h in range(3):
        assert rel(back[:, :, h], q[:, :, h]) < 0.04


def test_fp8_swaps_block_linears_and_restores_them(monkeypatch, caplog):
    p = tiny_preset()
    models = [VideoDiT(**p.video_dit), DualTowerBridge(**p.bridge)]
    keys = [list(m.state_dict()) for m in models]
    targets = fp8_targets(models)
    # q, k, v, o of self- and cross-attention and the FFN's two layers per block; q, k, v, o per conditioner
    assert len(targets) == 10 * 3 + 4 * 2 * 2
    assert all(not name.startswith(("time_", "text_")) for m in models for name, mod in m.named_modules()
               if isinstance(mod, Fp8Linear))
    monkeypatch.setattr("mova.acceleration.fp8_unavailable", lambda device: None)

    def count(kind):
        return sum(isinstance(mod, kind) for m in models for mod in m.modules())

    with fp8(models, torch.device("cpu")):
        assert count(Fp8Linear) == len(targets)
        # e4m3 attention in each block's self-attention only; the text cross-attention and the bridge stay bf16
        assert count(Fp8Attention) == len(models[0].blocks) == 3 and all(type(b.self_attn.attn) is Fp8Attention for b in models[0].blocks)
        assert [list(m.state_dict()) for m in models] == keys  # the same parameters, the same keys
    assert count(Fp8Linear) == count(Fp8Attention) == 0
    with fp8(models, torch.device("cpu"), linears=False):  # one half at a time, for measuring each half's cost
        assert count(Fp8Linear) == 0 and count(Fp8Attention) == 3
    with fp8(models, torch.device("cpu"), attention=False):
        assert count(Fp8Linear) == len(targets) and count(Fp8Attention) == 0
    # the GEMMs accumulate fast unless asked not to, and that choice reaches torch._scaled_mm
    calls = []
    scaled_mm = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **kw: calls.append(kw["use_fast_accum"]) or scaled_mm(*a, **kw))
    layer = targets[0][2]
    x = torch.randn(2, 5, layer.in_features)
    for fast in (True, False):
        with fp8(models, torch.device("cpu"), fast_accum=fast):
            swapped = getattr(targets[0][0], targets[0][1])
            assert isinstance(swapped, Fp8Linear) and swapped(x).shape == (2, 5, layer.out_features)
    assert calls == [True, False]
    # a seam that parallel inference has taken keeps its module, and the log says so (no silent downgrade)
    sharded = models[0].blocks[0].self_attn.attn = torch.nn.Module()
    with caplog.at_level("WARNING", logger="mova.acceleration"), fp8(models, torch.device("cpu")):
        assert count(Fp8Attention) == 2 and models[0].blocks[0].self_attn.attn is sharded
    assert "1 self-attention(s) run another attention module" in caplog.text


def test_fp8_can_keep_the_audio_towers_self_attention_in_bf16(monkeypatch):
    p = tiny_preset()
    video, audio = VideoDiT(**p.video_dit), AudioDiT(**p.audio_dit)
    monkeypatch.setattr("mova.acceleration.fp8_unavailable", lambda device: None)

    def kinds(model):
        return [type(b.self_attn.attn) for b in model.blocks]

    with fp8([video, audio], torch.device("cpu")):
        assert set(kinds(video)) == set(kinds(audio)) == {Fp8Attention}
    with fp8([video, audio], torch.device("cpu"), audio_attention=False):
        assert set(kinds(video)) == {Fp8Attention} and Fp8Attention not in kinds(audio)
        assert isinstance(audio.blocks[0].ffn[0], Fp8Linear)  # its linears are still e4m3
    assert Fp8Attention not in kinds(video) + kinds(audio)


def test_fp8_is_refused_where_it_cannot_run(tiny_checkpoint):
    from mova import MOVAPipeline

    assert "CUDA GPU" in fp8_unavailable(torch.device("cpu"))
    with pytest.raises(ValueError, match=r"precision='fp9' is invalid: expected one of \['bf16', 'fp8'\]"):
        GenerationSettings(prompt="a bell", precision="fp9")
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32")
    with pytest.raises(ValueError, match=r"precision='fp8' is unavailable here: it needs a CUDA GPU"):
        pipe("a bell", height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=1, precision="fp8")


def test_fa3_pads_head_sizes_it_lacks(monkeypatch):
    """A head size without an FA3 kernel (the demo model's 32) is padded to 64 with the softmax scale kept: the same
    attention (a stand-in kernel computes FA3's contract with PyTorch's SDPA)."""
    import types

    import mova.attention as att

    seen = []

    def flash_attn_func(q, k, v, softmax_scale=None, **descales):
        seen.append(q.shape[-1])
        if descales:  # e4m3 operands times their per-(batch, head) descales, as the kernel reads them
            q, k, v = (t.double() * descales[f"{n}_descale"][:, None, :, None] for n, t in zip("qkv", (q, k, v)))
        out = torch.nn.functional.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (q, k, v)),
                                                               scale=softmax_scale)
        return out.transpose(1, 2)

    monkeypatch.setattr(att, "_fa3_module", lambda: types.SimpleNamespace(flash_attn_func=flash_attn_func))
    q, k, v = (torch.randn(2, 30, 3, 32, dtype=torch.float64) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    out = att._fa3(q, k, v)
    assert seen == [64] and out.shape == q.shape and rel(out, ref) < 1e-6
    k_offset = k + 5.0  # a common key offset: smoothing removes it exactly, so it costs no e4m3 precision
    out8 = att._fa3(q, k_offset, v, fp8=True)
    assert seen[-1] == 64 and out8.shape == q.shape and rel(out8, ref) < 0.08


def test_compile_choice_of_the_cli_and_the_app(tiny_checkpoint, caplog):
    """``compile=auto`` compiles only where it pays (one CUDA device, no offload, no parallel inference); ``on``
    compiles every repeated block in place; a wrong value names the flag and its choices."""
    import logging

    from mova import MOVAPipeline

    def compiled_blocks(pipe):
        return [b for m in pipe._denoiser_models() for b in m.modules()
                if type(b).__name__ in m._repeated_blocks and b._compiled_call_impl is not None]

    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32")
    with caplog.at_level(logging.INFO, logger="mova.pipeline"):
        assert pipe.apply_compile("auto") is False and pipe.apply_compile("off") is False
    assert "compiles on CUDA only (this pipeline is on cpu)" in caplog.text and not compiled_blocks(pipe)
    with pytest.raises(ValueError, match=r"compile='fast' is invalid: expected one of \['auto', 'on', 'off'\]"):
        pipe.apply_compile("fast")
    offloaded = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", offload="model")
    offloaded.device = torch.device("cuda")  # the decision only: nothing runs
    with caplog.at_level(logging.INFO, logger="mova.pipeline"):
        assert offloaded.apply_compile("auto") is False
    assert "does not compile with offload='model'" in caplog.text
    pipe.device = torch.device("cuda")  # a tiny denoiser on a GPU: compiling would take longer than it saves
    with caplog.at_level(logging.INFO, logger="mova.pipeline"):
        assert pipe.apply_compile("auto") is False
    assert "skips a denoiser this small" in caplog.text and not compiled_blocks(pipe)
    pipe.device = torch.device("cpu")
    assert pipe.apply_compile("on") is True
    blocks = compiled_blocks(pipe)
    assert len(blocks) == sum(1 for m in pipe._denoiser_models() for b in m.modules()
                              if type(b).__name__ in m._repeated_blocks) > 0


def test_the_fa3_lookup_is_plain_to_dynamo():
    """The attention asks whether FA3 is installed inside compiled blocks: a cached lookup there made Dynamo warn
    (it traces through ``functools.cache``) on every compile; the module found at import traces as a constant."""
    import warnings

    import mova.attention as att

    def block(x):
        return x * 2 if att._fa3_available() else x + 1

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explained = torch._dynamo.explain(block)(torch.randn(3))
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    assert not [w for w in caught if "Dynamo" in str(w.message)]
