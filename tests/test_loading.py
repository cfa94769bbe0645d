"""Checkpoint folders: strict loading, round trips, sharding, both DAC storage forms, clear errors."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mova.checkpoint_report import run as inspect_run
from mova.config import tiny_preset
from mova.loading import load_components, load_native, read_model_index, save_native
from mova.models import AudioDiT, AudioVAE, DualTowerBridge, VideoDiT

NATIVE = {"video_dit": VideoDiT, "video_dit_2": VideoDiT, "audio_dit": AudioDiT, "dual_tower_bridge": DualTowerBridge,
          "audio_vae": AudioVAE}


@pytest.fixture()
def ckpt(tiny_checkpoint, tmp_path):
    """A private copy of the session's tiny checkpoint that a test may damage."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def test_round_trip_is_exact_and_strict(tiny_checkpoint, tmp_path):
    comps = load_components(tiny_checkpoint)
    from mova.loading import save_pretrained

    out = save_pretrained(tmp_path / "again", {k: v for k, v in comps.items() if k != "model_index"})
    assert read_model_index(out)["video_dit"] == ["mova.diffusion.models.wan_video_dit", "WanModel"]
    for name, cls in NATIVE.items():
        a = load_file(tiny_checkpoint / name / "diffusion_pytorch_model.safetensors")
        b = load_file(out / name / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert json.loads((tiny_checkpoint / name / "config.json").read_text()) == \
            json.loads((out / name / "config.json").read_text())
    again = load_components(out)
    for name in NATIVE:
        sa, sb = comps[name].state_dict(), again[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not comps["video_dit"].training  # loaded modules are in eval mode


def test_load_into_dtype_and_meta_free(tiny_checkpoint):
    model = load_native(VideoDiT, tiny_checkpoint / "video_dit", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in model.parameters())


def test_sharded_save_and_load(tmp_path, tiny_checkpoint):
    model = load_native(VideoDiT, tiny_checkpoint / "video_dit")
    save_native(model, tmp_path / "sharded", max_shard_bytes=100_000)
    index = json.loads((tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_native(VideoDiT, tmp_path / "sharded")
    sa, sb = model.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_plain_weight_dac_checkpoint_loads(tmp_path, tiny_checkpoint):
    vae = load_native(AudioVAE, tiny_checkpoint / "audio_vae")
    z = torch.randn(1, 8, 4)
    with torch.no_grad():
        ref = vae.decode(z)
    # fold every (weight_g, weight_v) pair into the plain weight it denotes
    state = {k: v for k, v in vae.state_dict().items() if not k.endswith(("weight_g", "weight_v"))}
    state |= {f"{n}.weight": m.effective_weight().detach() for n, m in vae.named_modules() if hasattr(m, "weight_v")}
    folded = AudioVAE.from_config(vae.config, use_weight_norm=False)
    folded.load_state_dict(state)
    save_native(folded, tmp_path / "plain")
    keys = load_file(tmp_path / "plain" / "diffusion_pytorch_model.safetensors").keys()
    assert any(k.endswith(".weight") and k.startswith("decoder.model.0") for k in keys)
    assert not any(k.endswith("weight_g") for k in keys)
    # the config still says use_weight_norm=true, as the official one does: the loader follows the keys
    cfg = json.loads((tmp_path / "plain" / "config.json").read_text())
    cfg["use_weight_norm"] = True
    (tmp_path / "plain" / "config.json").write_text(json.dumps(cfg))
    plain = load_native(AudioVAE, tmp_path / "plain")
    with torch.no_grad():
        torch.testing.assert_close(plain.decode(z), ref, rtol=1e-5, atol=1e-6)


def test_missing_component_folder(ckpt):
    shutil.rmtree(ckpt / "audio_dit")
    with pytest.raises(ValueError, match="audio_dit"):
        load_components(ckpt)


def test_component_missing_from_index(ckpt):
    index = json.loads((ckpt / "model_index.json").read_text())
    del index["dual_tower_bridge"]
    (ckpt / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="dual_tower_bridge"):
        read_model_index(ckpt)


def test_wrong_shape_and_missing_keys_are_listed(ckpt):
    path = ckpt / "audio_dit" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    state["head.head.weight"] = torch.zeros(3, 3)
    del state["blocks.0.ffn.0.bias"]
    state["blocks.0.extra.weight"] = torch.zeros(1)
    save_file(state, path)
    with pytest.raises(ValueError) as err:
        load_native(AudioDiT, ckpt / "audio_dit")
    msg = str(err.value)
    assert "head.head.weight: checkpoint [3, 3] vs model [8, 32]" in msg
    assert "blocks.0.ffn.0.bias" in msg and "blocks.0.extra.weight" in msg
    text, ok = inspect_run(str(ckpt))
    assert not ok and "INVALID" in text and "head.head.weight" in text


def test_unused_config_field_is_named_and_ignored(ckpt, caplog):
    """A key the class does not use (a typo, or a field of a later release) is logged with the file, as diffusers
    does, and changes nothing; a bad value of a known key is an error naming the key and the file."""
    path = ckpt / "video_dit" / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "num_hedas": 3}))
    with caplog.at_level("WARNING", logger="mova"):
        model = load_native(VideoDiT, ckpt / "video_dit")
    assert model.config.num_heads == cfg["num_heads"] and "num_hedas" not in model.config
    assert [r.getMessage() for r in caplog.records] == [
        f"The config attributes ['num_hedas'] of {path} are not used by VideoDiT and will be ignored."]
    path.write_text(json.dumps({**cfg, "num_heads": "3"}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: VideoDiT.num_heads='3' is invalid: "
                                         "expected an integer"):
        load_native(VideoDiT, ckpt / "video_dit")


def test_no_weights_and_pickles_refused(ckpt):
    (ckpt / "audio_dit" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({}, ckpt / "audio_dit" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="only safetensors"):
        load_native(AudioDiT, ckpt / "audio_dit")


def test_config_values_validated():
    with pytest.raises(ValueError, match="VideoDiT.has_image_input=True is invalid"):
        VideoDiT.check_config({"has_image_input": True})
    with pytest.raises(ValueError, match="interaction_strategy"):
        DualTowerBridge(interaction_strategy="everything")
    with pytest.raises(ValueError, match="num_heads=7 is invalid: expected a divisor of dim=48"):
        VideoDiT(dim=48, num_heads=7, num_layers=1)
    # official metadata keys are accepted, and hop_length (written by some configs) round-trips without effect
    vae = AudioVAE.from_config({"_class_name": "DAC", "_name_or_path": "x", "hop_length": 3840, "encoder_dim": 4,
                                "decoder_dim": 32, "latent_dim": 8})
    assert vae.config.hop_length == 3840 and vae.hop == 960


def test_denoiser_input_errors(tiny_checkpoint):
    from mova.models import DualTowerDenoiser

    c = load_components(tiny_checkpoint, names=list(NATIVE))
    den = DualTowerDenoiser(c["video_dit"], c["audio_dit"], c["dual_tower_bridge"], c["video_dit_2"])
    v, a, t = torch.randn(1, 36, 3, 8, 8), torch.randn(1, 8, 10), torch.randn(1, 4, 32)
    with torch.no_grad():
        with pytest.raises(ValueError, match="video latents have 20 channels.*in_dim=36"):
            den(v[:, :20], a, t, 10.0, 10.0, 24.0)
        with pytest.raises(ValueError, match="batch sizes differ"):
            den(v, torch.randn(2, 8, 10), t, 10.0, 10.0, 24.0)
        with pytest.raises(ValueError, match="divisible by patch_size"):
            den(torch.randn(1, 36, 3, 7, 8), a, t, 10.0, 10.0, 24.0)
        with pytest.raises(ValueError, match="audio latents have 4 channels"):
            den(v, a[:, :4], t, 10.0, 10.0, 24.0)
        with pytest.raises(ValueError, match="text_embeds width 16"):
            den(v, a, t[..., :16], 10.0, 10.0, 24.0)


def test_inspect_cli(tiny_checkpoint, capsys):
    from mova.__main__ import main

    assert main(["inspect", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "verdict: valid" in out and "UMT5EncoderModel" in out
    assert main(["inspect", "mova-720p", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    params = {c["name"]: c["parameters"] for c in report["components"]}
    assert params["video_dit"] == 14_288_901_184 and params["dual_tower_bridge"] == 2_659_737_600


def test_loading_keeps_one_copy_in_host_memory(tmp_path):
    """Peak RSS growth while loading a ~200 MB component stays near its size (no second full copy)."""
    import subprocess
    import sys

    model = VideoDiT(dim=512, ffn_dim=2048, num_heads=4, num_layers=10, text_dim=64, freq_dim=32)
    save_native(model, tmp_path / "big")
    size = sum(p.numel() * 4 for p in model.parameters())
    assert size > 150e6
    code = (
        "import resource, sys, torch\n"
        "from mova.loading import load_native\nfrom mova.models import VideoDiT\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"m = load_native(VideoDiT, {str(tmp_path / 'big')!r})\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    growth = int(out.stdout.strip().splitlines()[-1])
    assert growth < 1.3 * size, (growth, size)
