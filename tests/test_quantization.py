"""Quantised weight storage (``quantization="fp8"|"int8"|"nf4"``), lazily loaded experts and the ``memory="24gb"`` profile,
on CPU: the rounding against an independent computation, strict loading and the save/load round trip, the
pipeline's outputs, the refusals. GPU memory, host RSS and speed under a 24 GB cap live in
``benchmarks/memory_profile.py``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from mova import MOVAPipeline
from mova.acceleration import Fp8Linear, fp8_linear
from mova.loading import load_native, quantize_folder, save_native
from mova.models import AudioDiT, DualTowerBridge, VideoDiT
from mova.offload import BlockStreamer, configure_cuda_allocator
from mova.quantization import NF4_VALUES, QuantizedLinear, quantize_weight, storage_shapes, targets
from mova.settings import MEMORY_PROFILES

REQUEST = dict(prompt="A white ball bounces twice on a rubber floor.", height=64, width=64, num_frames=9, fps=12.0,
               num_inference_steps=3, seed=5)


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every plain nn.Linear inside a block (the `_repeated_blocks` classes), by path: computed independently of
    mova.quantization.targets."""
    blocks = set(model._repeated_blocks)
    inside = [name for name, m in model.named_modules() if type(m).__name__ in blocks]
    return {name: m for name, m in model.named_modules()
            if type(m) is nn.Linear and any(name.startswith(b + ".") for b in inside)}


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
def test_rowwise_rounding_against_float64(fmt):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 96, generator=g, dtype=torch.float64)
    w[3] *= 1000.0  # a loud row gets its own scale: the other rows keep their precision
    q, scale = quantize_weight(w, fmt)
    assert q.dtype == {"fp8": torch.float8_e4m3fn, "int8": torch.int8}[fmt] and scale.shape == (24, 1)
    largest = {"fp8": 448.0, "int8": 127.0}[fmt]
    assert torch.allclose(scale.double(), w.abs().amax(1, keepdim=True) / largest, rtol=1e-6)
    back = q.double() * scale.double()
    err = (back - w).abs()
    if fmt == "int8":  # round to nearest: half a step at most
        assert bool((err <= scale.double() / 2 * (1 + 1e-5)).all())
        assert q.abs().max() == 127
    else:  # e4m3: 3 mantissa bits (relative step 2^-3, half of it 2^-4) above the subnormal range 2^-6
        bound = torch.maximum(w.abs() * 2.0**-4, scale.double() * 2.0**-10)
        assert bool((err <= bound * (1 + 1e-5)).all())
    for row in (0, 3, 10):
        assert float((back[row] - w[row]).norm() / w[row].norm()) < (0.03 if fmt == "fp8" else 0.01)


def nf4_reference(w: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 NF4 by brute force: per block of ``block`` inputs, the absolute maximum, and each weight's nearest of
    the 16 code values (codes int64 [N, K], scales [N, K / block])."""
    values = torch.tensor(NF4_VALUES, dtype=torch.float64)
    blocks = w.double().reshape(w.shape[0], -1, block)
    scale = blocks.abs().amax(2, keepdim=True)
    codes = (blocks / scale).unsqueeze(-1).sub(values).abs().argmin(-1)
    return codes.reshape(w.shape), scale.squeeze(2)


def nf4_unpacked(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] → codes int64 [N, K]: high nibble first (an independent reading of the packing)."""
    codes = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.int64)
    codes[:, 0::2], codes[:, 1::2] = packed.long() // 16, packed.long() % 16
    return codes


@pytest.mark.parametrize("k,block", [(256, 64), (200, 8)])  # 200 = 3 × 64 + 8: blocks of gcd(200, 64) = 8
def test_nf4_picks_the_nearest_code_value_per_block(k, block):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(12, k, generator=g, dtype=torch.float64)
    w[5] *= 1000.0
    q, scale = quantize_weight(w, "nf4")
    assert q.dtype == torch.uint8 and q.shape == (12, k // 2) and scale.shape == (12, k // block)
    assert storage_shapes("nf4", 12, k) == (tuple(q.shape), tuple(scale.shape))
    codes, ref_scale = nf4_reference(w, block)
    assert torch.allclose(scale.double(), ref_scale, rtol=1e-6)
    got = nf4_unpacked(q)
    values = torch.tensor(NF4_VALUES, dtype=torch.float64)
    normalised = w.reshape(12, -1, block) / ref_scale[..., None]
    # the nearest code, up to float32 ties (a value within 1e-6 of the midpoint of two codes may go either way)
    dist = lambda c: (normalised.reshape(12, k) - values[c]).abs()  # noqa: E731
    assert bool((dist(got) <= dist(codes) + 1e-6).all()) and (got == codes).float().mean() > 0.999
    back = QuantizedLinear.from_linear(nn.Linear(k, 12, bias=False), "nf4")
    back.weight.data, back.weight_scale.data = q, scale
    deq = back.dequantized(torch.float64)
    assert torch.allclose(deq, (values[got].reshape(12, -1, block) * ref_scale[..., None]).reshape(12, k), rtol=1e-6)
    # half the largest gap between neighbouring codes (−1 to −0.696), times the block's scale, bounds the error
    half_gap = float(values.diff().max()) / 2
    assert bool(((deq - w).abs().reshape(12, -1, block) <= ref_scale[..., None] * half_gap * (1 + 1e-6)).all())
    assert float((deq[0] - w[0]).norm() / w[0].norm()) < 0.12  # NF4 on normal weights: about 10 %
    with pytest.raises(ValueError, match=r"quantization='nf4' packs two weights per byte: in_features=7"):
        quantize_weight(torch.randn(3, 7), "nf4")


@pytest.mark.parametrize("fmt", ["fp8", "int8", "nf4"])
def test_quantized_linear_is_the_matmul_with_the_rounded_weight(fmt):
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 40)
    x = torch.randn(2, 7, 64, generator=g)
    q = QuantizedLinear.from_linear(linear, fmt)
    w8, s = quantize_weight(linear.weight, fmt)
    if fmt == "nf4":  # codes → values, times the scale of each block of 64
        w8, s = torch.tensor(NF4_VALUES, dtype=torch.float64)[nf4_unpacked(w8)], s.double().repeat_interleave(64, 1)
    ref = x.double() @ (w8.double() * s.double()).T + linear.bias.double()
    out = q(x)
    assert out.shape == (2, 7, 40) and out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert sorted(dict(q.named_parameters())) == ["bias", "weight", "weight_scale"]


def test_fp8_gemm_reads_stored_e4m3_weights_as_they_are():
    g = torch.Generator().manual_seed(2)
    linear = nn.Linear(64, 48)
    x = torch.randn(5, 64, generator=g)
    q = QuantizedLinear.from_linear(linear, "fp8")
    # the stored rowwise e4m3 weight is exactly what the fp8 path makes of the full-precision one per call
    assert torch.equal(Fp8Linear.around(q)(x), fp8_linear(x, linear.weight, linear.bias))
    q8 = QuantizedLinear.from_linear(linear, "int8")
    assert torch.equal(Fp8Linear.around(q8)(x), fp8_linear(x, q8.dequantized(x.dtype), linear.bias))


@pytest.mark.parametrize("cls,name", [(VideoDiT, "video_dit"), (AudioDiT, "audio_dit"),
                                      (DualTowerBridge, "dual_tower_bridge")])
def test_quantize_on_load_stores_every_block_linear(tiny_checkpoint, cls, name):
    full = load_native(cls, tiny_checkpoint / name)
    expected = block_linears(full)
    assert expected and len(targets(full)) == len(expected)
    model = load_native(cls, tiny_checkpoint / name, quantization="fp8")
    got = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    assert sorted(got) == sorted(expected)
    for path, m in got.items():
        w8, s = quantize_weight(expected[path].weight, "fp8")
        assert torch.equal(m.weight.float(), w8.float()) and torch.equal(m.weight_scale, s)
        assert m.bias is None or torch.equal(m.bias, expected[path].bias)
    # everything outside the blocks (embeddings, time/text MLPs, heads, norms) is left as it was
    rest = {k: v for k, v in full.state_dict().items() if k.rsplit(".", 1)[0] not in expected}
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in rest.items())


@pytest.mark.parametrize("fmt", ["fp8", "int8", "nf4"])
def test_quantized_component_saves_and_loads_back_bit_for_bit(tiny_checkpoint, tmp_path, fmt):
    model = load_native(VideoDiT, tiny_checkpoint / "video_dit", quantization=fmt)
    save_native(model, tmp_path / "video_dit")
    config = json.loads((tmp_path / "video_dit" / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "mova", "format": fmt}
    back = load_native(VideoDiT, tmp_path / "video_dit")  # the format comes from the folder
    a, b = model.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k].float(), b[k].float()) for k in a)
    other = "int8" if fmt == "fp8" else "fp8"
    with pytest.raises(ValueError, match=rf"stored as {fmt}; quantization='{other}' asks for another format"):
        load_native(VideoDiT, tmp_path / "video_dit", quantization=other)
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "video_dit" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json.*quant_method 'mova'"):
        load_native(VideoDiT, tmp_path / "video_dit")


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_quantized_pipeline_and_saved_folder_generate_the_same_clip(tiny_checkpoint, tmp_path, fmt):
    full = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32")(**REQUEST)
    on_load = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", quantization=fmt)
    assert sum(isinstance(m, QuantizedLinear) for m in on_load.text_encoder.modules()) > 0
    assert all(type(m.wo) is nn.Linear for m in on_load.text_encoder.modules() if hasattr(m, "wo"))
    a = on_load(**REQUEST)
    out = quantize_folder(tiny_checkpoint, tmp_path / fmt, fmt)
    assert (out / "text_encoder").is_dir() and (out / "scheduler").is_dir()
    saved = MOVAPipeline.from_pretrained(out, torch_dtype="fp32", quantization=fmt)
    b = saved(**REQUEST)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)  # no second rounding
    # the weights' rounding moves the clip a little, not a lot (measured: int8 0.008 grey level and 0.03 % of the
    # audio, nf4 0.15 and 0.6 %), nf4 more than int8
    video, audio = {"int8": (0.05, 0.002), "nf4": (1.0, 0.03)}[fmt]
    assert 0 < np.abs(a.video.astype(float) - full.video).mean() < video
    assert np.linalg.norm(a.audio - full.audio) / np.linalg.norm(full.audio) < audio
    with pytest.raises(ValueError, match=r"out: .* is not empty"):
        quantize_folder(tiny_checkpoint, out, "fp8")


def test_lazy_experts_give_the_same_clip_and_never_share_memory(tiny_checkpoint, monkeypatch):
    ref = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32")(**REQUEST)
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", lazy=True)
    experts = {"video_dit": pipe.components["video_dit"], "video_dit_2": pipe.components["video_dit_2"]}

    def loaded():
        return {n for n, m in experts.items() if next(m.parameters()).device.type != "meta"}

    assert loaded() == set() and pipe.text_encoder is None  # nothing big is read before it is needed
    seen = []
    for name, module in experts.items():
        module.blocks[0].register_forward_pre_hook(lambda m, a, name=name: seen.append((name, loaded(),
                                                                              pipe.text_encoder is None)))
    out = pipe(**REQUEST)
    assert np.array_equal(out.video, ref.video) and np.array_equal(out.audio, ref.audio)
    # the high-noise expert, then the low-noise one; each alone, and never beside the text encoder
    assert [s[0] for s in seen][:1] == ["video_dit"] and seen[-1][0] == "video_dit_2"
    assert all(s[1] == {s[0]} and s[2] for s in seen)
    assert loaded() == set() and pipe.text_encoder is None  # all freed by the end of the call
    # the low-noise expert was read into the high-noise one's buffers (no new allocation): same storages
    assert [p for p, _ in pipe.lazy.loads] == ["text_encoder", "video_dit", "video_dit_2"]
    ptrs = {}
    for name, module in experts.items():
        module.blocks[0].register_forward_pre_hook(
            lambda m, a, name=name: ptrs.setdefault(name, m.self_attn.q.weight.data_ptr()) and None)
    again = pipe(**REQUEST)  # read again for the next generation
    assert np.array_equal(again.video, ref.video)
    assert ptrs["video_dit"] == ptrs["video_dit_2"]


def test_lazy_components_are_quantised_as_they_are_read(tiny_checkpoint):
    resident = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", quantization="nf4")(**REQUEST)
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", quantization="nf4", lazy=True)
    for _ in range(2):  # the second call reads the experts into the buffers the first left behind
        out = pipe(**REQUEST)
        assert np.array_equal(out.video, resident.video) and np.array_equal(out.audio, resident.audio)


def test_memory_profile_sets_the_load_options_and_refuses_conflicts(tiny_checkpoint):
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", memory="24gb")
    assert pipe.offload == "sequential" and pipe.lazy is not None and pipe.lazy.quantization == "fp8"
    assert pipe.model_info().unavailable_precisions[0][0] == "fp8"
    clip = pipe(**REQUEST)
    assert clip.video.shape == (9, 64, 64, 3) and np.isfinite(clip.audio).all()
    with pytest.raises(ValueError, match=r"memory='24gb' sets offload itself"):
        MOVAPipeline.from_pretrained(tiny_checkpoint, memory="24gb", offload="none")
    with pytest.raises(ValueError, match=r"memory='8gb' is invalid: expected one of \['full', '24gb'\]"):
        MOVAPipeline.from_pretrained(tiny_checkpoint, memory="8gb")
    with pytest.raises(ValueError, match=r"quantization='int4' is invalid: expected one of \['fp8', 'int8', 'nf4'\]"):
        MOVAPipeline.from_pretrained(tiny_checkpoint, quantization="int4")
    with pytest.raises(ValueError, match=r"precision='fp8' is unavailable here: the experts load from disk"):
        pipe(**REQUEST, precision="fp8")
    with pytest.raises(ValueError, match=r"lora: adapters need the full-precision denoiser resident"):
        pipe.load_lora(tiny_checkpoint)
    quantized = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", quantization="fp8")
    with pytest.raises(ValueError, match=r"block weights are stored as fp8"):
        quantized.load_lora(tiny_checkpoint)


def test_24gb_profile_sets_the_cuda_allocator_unless_the_user_did(monkeypatch):
    """The 24gb profile grows CUDA segments (fixed ones left 12 GB reserved but unused at 720p under 48 GB); a
    PYTORCH_CUDA_ALLOC_CONF of the user's wins, and nothing changes on other devices."""
    applied = []
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", applied.append)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    conf = MEMORY_PROFILES["24gb"]["cuda_alloc"]
    assert conf == "expandable_segments:True" and MEMORY_PROFILES["full"]["cuda_alloc"] is None
    assert not configure_cuda_allocator(conf, torch.device("cpu"))
    assert not configure_cuda_allocator(None, torch.device("cuda"))
    assert configure_cuda_allocator(conf, torch.device("cuda:0")) and applied == [conf]
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    assert not configure_cuda_allocator(conf, torch.device("cuda")) and applied == [conf]


def test_streamer_takes_a_model_off_and_back_on(tiny_checkpoint):
    """The bookkeeping of BlockStreamer.add / drop (on CPU there is no side stream; the copies are the CPU's)."""
    model = load_native(VideoDiT, tiny_checkpoint / "video_dit")
    other = load_native(AudioDiT, tiny_checkpoint / "audio_dit")
    streamer = BlockStreamer([model, other], torch.device("cpu"))
    blocks = {id(b) for b in model.blocks}
    assert blocks <= set(streamer.blocks) and len(streamer.handles) == len(model.blocks) + len(other.blocks)
    streamer.order.append(next(iter(blocks)))
    streamer.drop(model)
    assert not blocks & set(streamer.blocks) and not blocks & set(streamer.handles) and streamer.order == []
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in model.blocks)
    assert all(b._forward_pre_hooks for b in other.blocks)
    streamer.add(model)
    assert blocks <= set(streamer.blocks) and all(len(b._forward_pre_hooks) == 1 for b in model.blocks)


def test_cli_and_app_take_the_memory_flags(tiny_checkpoint, tmp_path, capsys):
    import app
    from mova.__main__ import main

    args = app.parse_args(["--memory", "24gb", "--quantization", "int8"], env={})
    assert (args.memory, args.quantization, args.offload) == ("24gb", "int8", None)
    with pytest.raises(SystemExit):
        app.parse_args(["--memory", "24gb"], env={"SPACE_ID": "org/space", "SYSTEM": "spaces"})
    assert "apply to one local GPU" in capsys.readouterr().err
    shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    assert main(["quantize", "--model", str(tmp_path / "ck"), "--format", "fp8", "--out", str(tmp_path / "q")]) == 0
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--model", str(tmp_path / "q"), "--memory", "24gb", "--prompt", "a bell rings",
                 "--height", "64", "--width", "64", "--num-frames", "9", "--num-inference-steps", "2", "--out", str(out),
                 "--device", "cpu"])
    assert code == 0 and out.stat().st_size > 0
    assert main(["generate", "--model", str(tmp_path / "q"), "--quantization", "int8", "--prompt", "a bell",
                 "--out", str(tmp_path / "x.mp4"), "--device", "cpu"]) == 2  # stored as fp8: a clear error, exit 2
    assert "stored as fp8" in capsys.readouterr().err
