"""Ahead-of-time compilation of the repeated blocks (mova/backends/aot.py) on the CPU: the ZeroGPU backend falls back
to eager with the reason logged, the block calls of one step are recorded and grouped, and a compiled block runs its
graph only for the signature it was compiled for (a stand-in graph here: inductor's AoT needs the GPU run)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from mova import GenerationSettings
from mova.backends import aot
from tests.test_app_support import FAST, app_checkpoint


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, tmp_path_factory):
    from mova import MOVAPipeline

    return MOVAPipeline.from_pretrained(app_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("aot")), device="cpu")


def test_zerogpu_backend_falls_back_to_eager_on_the_cpu_and_says_why(pipeline, tmp_path, caplog):
    from mova.backends.zerogpu import ZeroGPUBackend

    with caplog.at_level(logging.INFO, logger="mova.backends.aot"):
        backend = ZeroGPUBackend(pipeline=pipeline, data_dir=tmp_path / "data", aot=True)
    assert backend.aot is not None and not backend.aot.compiled and "no CUDA device" in backend.aot.reason
    assert "AoT compile skipped, the denoiser runs eager: no CUDA device" in caplog.text
    assert not any(isinstance(b.forward, aot.AotBlockForward) for b in aot.repeated_blocks(pipeline).values())
    clip = backend.generate(GenerationSettings(prompt="rain", seed=1, **FAST))
    assert clip.num_frames == 9
    assert ZeroGPUBackend(pipeline=pipeline, data_dir=tmp_path / "data").aot is None  # off unless on ZeroGPU
    # the duration model follows: an eager denoiser with cuDNN attention (FA3 is not installed here)
    from mova.backends.durations import DENOISER_FACTORS

    assert backend.durations.measured  # the checkout's H200 figures (compiled, FA3)
    assert backend.durations.denoise_factor == DENOISER_FACTORS[(False, False)]
    assert "denoising ×1.32 for this Space's denoiser" in backend.estimate(GenerationSettings(prompt="rain")).basis


def test_aot_can_be_turned_off_and_other_reasons_are_named(pipeline, monkeypatch):
    assert "MOVA_AOT=0 turns it off" in aot.why_not(pipeline, env={"MOVA_AOT": "0"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline, "device", torch.device("cuda"))
    monkeypatch.setattr(pipeline, "offload", "model")
    assert "offload='model'" in aot.why_not(pipeline, env={})


def test_one_step_records_every_block_call_and_groups_them_by_class_and_shape(pipeline):
    blocks = aot.repeated_blocks(pipeline)
    kinds = {type(b).__name__ for b in blocks.values()}
    assert kinds == {"DiTBlock", "ConditionerBlock"}
    settings = pipeline.model_info().resolve(GenerationSettings(prompt="rain", seed=1, **FAST))
    calls, examples = aot.record_block_calls(pipeline, settings, blocks)
    assert not any(isinstance(b.forward, type(aot.record_block_calls)) for b in blocks.values())  # restored
    reached = {path for path, signatures in calls.items() if signatures}
    assert {p for p in blocks if p.startswith(("video_dit.", "audio_dit."))} <= reached
    assert not {p for p in reached if p.startswith("video_dit_2.")}  # the low-noise expert is not in step 1
    groups, eager = aot.plan_groups(blocks, calls)
    grouped = [p for paths in groups.values() for p in paths]
    assert sorted(grouped + eager) == sorted(blocks) and len(set(grouped)) == len(grouped)
    (video_key,) = [key for key, paths in groups.items() if paths[0].startswith("video_dit.")]
    assert {p for p in groups[video_key] if p.startswith("video_dit_2.")} == \
        {p for p in blocks if p.startswith("video_dit_2.")}  # the second expert shares the first's graph
    assert set(groups) <= set(examples)  # every group has an example call to export
    for (kind, signature), (args, kwargs) in examples.items():
        assert aot.call_signature(args, kwargs) == signature


def test_a_compiled_block_runs_its_graph_only_for_its_signature():
    block = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    loads = []

    def loader(archive: bytes, module: torch.nn.Module):
        loads.append(archive)
        return lambda inp: torch.full((inp.shape[0], 3), 7.0)  # a stand-in for the compiled package

    forward = aot.AotBlockForward(block, block.forward, b"package", aot.call_signature((x,), {}), loader=loader)
    block.forward = forward
    assert torch.equal(block(x), torch.full((2, 3), 7.0)) and torch.equal(block(x + 1), torch.full((2, 3), 7.0))
    assert loads == [b"package"]  # loaded once per process
    other = torch.randn(5, 4)
    assert torch.allclose(block(other), torch.nn.functional.linear(other, block.weight, block.bias))  # eager
    assert (forward.compiled_calls, forward.eager_calls) == (2, 1)
    assert aot.call_signature((x.double(),), {}) != forward.signature  # another dtype goes eager too
    assert aot.call_signature((x, (1, 2)), {}) != aot.call_signature((x, (1, 3)), {})  # and other constants


def test_real_aot_packages_run_the_default_request_and_load_in_a_fresh_process(pipeline, monkeypatch, tmp_path):
    """The whole path with real packages, on the CPU: export, AoT compile (inductor's packaging, the fallback after
    ``spaces.aoti_compile``, whose module needs a CUDA build of torch), the package bound to the live weights, the
    compiled graph used for its signature only, the package checked in a fresh process, and a compiled block
    pickled and loaded again."""
    import pickle
    import subprocess
    import sys

    settings = pipeline.model_info().resolve(GenerationSettings(prompt="rain", seed=1, **FAST))
    blocks = aot.repeated_blocks(pipeline)
    calls, examples = aot.record_block_calls(pipeline, settings, blocks)
    groups, _ = aot.plan_groups(blocks, calls)
    key = next(k for k, paths in groups.items() if paths[0].startswith("audio_dit."))  # one graph keeps it quick
    group = {key: groups[key]}
    eager = pipeline(settings)
    originals = {path: blocks[path].forward for path in group[key]}
    try:
        archives = aot.compile_archives(blocks, examples, group, packaging="inductor")
        assert aot.apply_archives(blocks, group, archives) == len(group[key])
        compiled = pipeline(settings)
        forwards = [blocks[path].forward for path in group[key]]
        assert all(f.compiled_calls > 0 and f.eager_calls == 0 for f in forwards)
        assert torch.allclose(torch.from_numpy(compiled.audio), torch.from_numpy(eager.audio), atol=1e-5, rtol=1e-4)
        assert abs(compiled.video.astype(int) - eager.video.astype(int)).max() <= 1
        pipeline(settings.replace(num_frames=5))  # another length: the graph's shapes do not fit, eager runs
        assert all(f.eager_calls > 0 for f in forwards)

        assert aot.verify_archives(blocks, examples, group, archives) == {}  # loaded in a fresh process
        revived = pickle.loads(pickle.dumps(forwards[0]))  # as a process that receives the block does
        args, kwargs = examples[key]
        assert torch.allclose(revived(*args, **kwargs), forwards[0].eager(*args, **kwargs), atol=1e-5)
        assert (revived.compiled_calls, revived.eager_calls) == (1, 0)
    finally:
        for path, forward in originals.items():
            blocks[path].forward = forward


def crashing_loader(archive: bytes, block: torch.nn.Module):  # module level: the checking process imports these
    os.kill(os.getpid(), signal.SIGSEGV)  # what loading a spaces-compiled package did on an H200 with torch 2.11


def wrong_loader(archive: bytes, block: torch.nn.Module):
    return lambda x: torch.zeros(x.shape[0], block.out_features)


def faithful_loader(archive: bytes, block: torch.nn.Module):
    return lambda x: torch.nn.functional.linear(x, block.weight, block.bias)


def test_a_package_that_crashes_or_miscomputes_fails_its_check_in_a_process_of_its_own():
    block = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    key = ("Linear", aot.call_signature((x,), {}))
    case = dict(blocks={"b": block}, examples={key: ((x,), {})}, groups={key: ["b"]}, archives={key: b"package"})
    assert aot.verify_archives(**case, loader=faithful_loader) == {}
    assert aot.verify_archives(**case, loader=crashing_loader) == \
        {key: "it crashed the process that loaded it (SIGSEGV)"}  # and this process lives on
    (why,) = aot.verify_archives(**case, loader=wrong_loader).values()
    assert why.startswith("its output differs from the eager forward's (relative L2 1 > 0.03)")
    (why,) = aot.verify_archives(**case, loader=wrong_loader, isolated=False).values()  # ZeroGPU: in its GPU task
    assert why.startswith("its output differs")
    assert aot.group_name(key) == "Linear[2x4]"


def record_packagings(monkeypatch) -> list[str]:
    """``compile_archives`` stand-in: each group's package is its packaging's name; returns the packagings asked for."""
    tried = []

    def compile_archives(blocks, examples, groups, packaging):
        tried.append(packaging)
        return {k: packaging.encode() for k in groups}

    monkeypatch.setattr(aot, "compile_archives", compile_archives)
    return tried


def prepare_one_graph(pipeline, monkeypatch, caplog, loader, gpu_task=None):
    """``aot.prepare`` of the default request with ``loader`` checking the packages and one graph (one checking
    process per packaging keeps a test quick; the other groups' blocks stay eager). Returns the report, the
    packagings compiled and the settings."""
    monkeypatch.setattr(aot, "why_not", lambda pipeline, env=None: None)
    tried = record_packagings(monkeypatch)
    monkeypatch.setattr(aot, "load_package", loader)
    plan = aot.plan_groups

    def one_group(blocks, calls):
        groups, eager = plan(blocks, calls)
        first, *rest = groups
        return {first: groups[first]}, eager + [p for key in rest for p in groups[key]]

    monkeypatch.setattr(aot, "plan_groups", one_group)
    settings = pipeline.model_info().resolve(GenerationSettings(prompt="rain", seed=1, **FAST))
    with caplog.at_level(logging.WARNING, logger="mova.backends.aot"):
        report = aot.prepare(pipeline, settings, gpu_task=gpu_task)
    return report, tried, settings


@pytest.fixture
def blocks(pipeline):
    """The pipeline's repeated blocks, their forwards put back after the test."""
    blocks = aot.repeated_blocks(pipeline)
    originals = {path: b.forward for path, b in blocks.items()}
    yield blocks
    for path, forward in originals.items():
        blocks[path].forward = forward


def test_prepare_leaves_blocks_eager_when_their_package_fails_its_check(pipeline, monkeypatch, caplog):
    report, tried, settings = prepare_one_graph(pipeline, monkeypatch, caplog, crashing_loader)
    assert not report.compiled and report.blocks == 0 and report.graphs == 0
    assert report.reason.startswith("every compiled graph failed its check: DiTBlock[")
    assert tried == ["spaces", "inductor"]  # every packaging was tried before the graph was left eager
    assert set(report.failed.values()) == {"spaces: it crashed the process that loaded it (SIGSEGV); "
                                           "inductor: it crashed the process that loaded it (SIGSEGV)"}
    assert len(report.failed) == 1 and sorted(report.eager_blocks) == sorted(aot.repeated_blocks(pipeline))
    assert "failed its check, its" in caplog.text
    assert not any(isinstance(b.forward, aot.AotBlockForward) for b in aot.repeated_blocks(pipeline).values())
    assert pipeline(settings).video.shape[0] == 9  # the eager pipeline still generates


def spaces_crashing_loader(archive: bytes, block: torch.nn.Module):
    if archive == b"spaces":  # a spaces package crashes its loader; inductor's runs the block
        os.kill(os.getpid(), signal.SIGSEGV)
    return block


def test_a_graph_whose_spaces_package_crashes_is_packaged_again_with_inductor(pipeline, blocks, monkeypatch, caplog):
    report, tried, _ = prepare_one_graph(pipeline, monkeypatch, caplog, spaces_crashing_loader)
    assert tried == ["spaces", "inductor"]
    assert report.compiled and report.graphs == 1 and report.failed == {}
    (name, packaging), = report.packaging.items()
    assert name.startswith("DiTBlock[") and packaging == "inductor"
    assert report.rejected == {name: "spaces: it crashed the process that loaded it (SIGSEGV)"}
    compiled = [b.forward for b in blocks.values() if isinstance(b.forward, aot.AotBlockForward)]
    assert len(compiled) == report.blocks > 0 and {f.archive for f in compiled} == {b"inductor"}
    assert "runs inductor's package, after spaces: it crashed" in caplog.text


def test_a_gpu_task_ended_by_a_spaces_package_runs_again_with_inductors(pipeline, blocks, monkeypatch, caplog):
    """On ZeroGPU the packages are checked inside the GPU task, where a crashing loader ends the task (``spaces``
    raises it as an error): the task runs again from the next packaging, and the report says what ended it."""
    runs = []

    def gpu_task(fn):
        def run():
            runs.append(fn)
            if len(runs) == 1:  # the worker died checking spaces' packages
                raise RuntimeError("GPU task aborted")
            return fn()
        return run

    # in the task the packages are checked here, not in a process of their own
    report, tried, _ = prepare_one_graph(pipeline, monkeypatch, caplog, lambda archive, block: block, gpu_task)
    assert len(runs) == 2 and tried == ["inductor"]  # the second task starts from inductor's packaging
    assert report.compiled and report.failed == {} and set(report.packaging.values()) == {"inductor"}
    assert report.rejected == {"every graph": "spaces: RuntimeError: GPU task aborted"}
    assert report.blocks == len([b for b in blocks.values() if isinstance(b.forward, aot.AotBlockForward)]) > 0
    assert "failed, trying the next" in caplog.text
