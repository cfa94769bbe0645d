"""Ahead-of-time compilation of the denoiser's repeated blocks for ZeroGPU, with the ``spaces`` package's AoT helpers.

ZeroGPU runs each generation in a short-lived worker, where ``torch.compile`` would compile again every time; an AoT
graph is compiled once and loaded in the worker. Regionally, as ``MOVAPipeline.compile`` does with
``torch.compile``: every repeated block class of the towers and the bridge (their ``_repeated_blocks``) is compiled
once per call signature and shared by every block of that class, each with its own weights.

1. :func:`record_block_calls` runs one denoising step of the Space's default request and records each block's call
   signatures (tensor shapes, dtypes and the other arguments) and one example call per block class and signature
   (``spaces.aoti_capture`` does this for one call and then stops the run; a recorder of our own sees them all).
2. :func:`plan_groups` groups blocks by (class, signature); a block called with two signatures (the bridge's a2v and
   v2a directions share a class) stays eager.
3. :func:`compile_archives` exports one block per group (``torch.export``) and compiles it with
   ``spaces.aoti_compile`` — inside a ``spaces.GPU`` task on ZeroGPU — keeping only the compiled package (bytes).
   A graph whose spaces package fails its check (step 4) is compiled again with inductor's own packaging
   (``torch._inductor.aoti_compile_and_package``, constants left out of the ``.so``) and checked again
   (:data:`PACKAGINGS`): with torch >= 2.10, spaces asks inductor to keep the constants "on disk" as pickled weights,
   which its packaging leaves out of the package. On ZeroGPU the check runs inside the GPU task, where a crashing
   package ends the task: the task then runs again from the next packaging.
4. :func:`verify_archives` loads each package with its first block's weights and runs the recorded example call
   against the block's eager forward, in a process of its own (ZeroGPU's GPU task is one; elsewhere a fresh
   subprocess): a package that crashes its loader (on an H200 with torch 2.11, loading spaces-compiled packages
   ended the process with SIGSEGV) or computes something else leaves its blocks eager instead of taking the app down.
5. :func:`apply_archives` gives each block an :class:`AotBlockForward`: the package, loaded once per process with
   the block's own live weights as user-managed constants (no second copy), for calls of the compiled signature,
   and the block's eager forward for any other (another resolution or clip length). ``spaces.aoti_apply`` is not
   used: it drains the module's parameters, which would leave no eager path for other shapes.

:func:`prepare` does all of it and returns an :class:`AotReport`; anything that rules AoT out (no CUDA device, an
offload mode, parallel inference, ``MOVA_AOT=0``, an export or compile failure, every package failing its check)
leaves the pipeline eager and logs the reason. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mova.pipeline import MOVAPipeline
    from mova.settings import GenerationSettings

logger = logging.getLogger(__name__)

AOT_ENV = "MOVA_AOT"  # "0" keeps the Space eager
EXPERT_TWINS = {"video_dit_2": "video_dit"}  # the low-noise expert's blocks are shaped as the high-noise one's
COMPILE_TASK_S = 1500  # the GPU task that compiles at start-up (ZeroGPU grants long tasks at start-up)
VERIFY_REL_L2 = 0.03  # a package's output against the eager forward's (bf16 fusion rounding is well under 1 %)
VERIFY_TIMEOUT_S = 600
PACKAGINGS = ("spaces", "inductor")  # tried in turn for each graph; the first package that passes its check is used


@dataclass
class AotReport:
    """What :func:`prepare` did: ``compiled`` blocks run an AoT graph for ``settings``' shapes; ``reason`` says why
    the pipeline stayed eager (or which blocks did)."""

    compiled: bool
    reason: str = ""
    blocks: int = 0  # blocks given a compiled graph
    graphs: int = 0  # graphs compiled (one per block class and call signature) that passed their check
    eager_blocks: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # graph → why its check failed (its blocks run eager)
    packaging: dict[str, str] = field(default_factory=dict)  # graph → the packaging whose package passed its check
    rejected: dict[str, str] = field(default_factory=dict)  # graph → why a packaging tried before it failed


def call_signature(args: tuple, kwargs: dict) -> tuple:
    """What an AoT graph is specialised to: each tensor's shape, dtype and device, every other value as is
    (tuples and lists walked)."""
    import torch

    def sig(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), str(value.dtype), str(value.device))
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, tuple(sig(v) for v in value))
        return ("value", repr(value))

    return sig(tuple(args)), tuple(sorted((k, sig(v)) for k, v in kwargs.items()))


def repeated_blocks(pipeline: MOVAPipeline) -> dict[str, torch.nn.Module]:
    """Every repeated block of the denoiser (``_repeated_blocks`` of each expert, the audio DiT and the bridge), by
    its module path."""
    den = pipeline.denoiser
    blocks = {}
    for prefix, model in (("video_dit", den.video_dit), ("video_dit_2", den.video_dit_2), ("audio_dit", den.audio_dit),
                          ("bridge", den.bridge)):
        if model is None:
            continue
        names = set(model._repeated_blocks)
        for path, module in model.named_modules():
            if type(module).__name__ in names:
                blocks[f"{prefix}.{path}"] = module
    return blocks


def record_block_calls(pipeline: MOVAPipeline, settings: GenerationSettings, blocks: dict[str, torch.nn.Module],
                       ) -> tuple[dict[str, list[tuple]], dict[tuple, tuple[tuple, dict]]]:
    """Run one denoising step of ``settings`` (latents only). Returns each block's call signatures (blocks the step
    does not reach, such as the low-noise expert, have none) and one example call (args, kwargs) per (block class,
    signature) — kept once per class, not per block, since a full-size block's inputs are hundreds of MB."""
    calls: dict[str, list[tuple]] = {path: [] for path in blocks}
    examples: dict[tuple, tuple[tuple, dict]] = {}
    originals = {}

    def recorder(path: str, forward: Callable) -> Callable:
        def record(*args: Any, **kwargs: Any) -> Any:
            signature = call_signature(args, kwargs)
            if signature not in calls[path]:
                calls[path].append(signature)
            examples.setdefault((type(blocks[path]).__name__, signature), (args, kwargs))
            return forward(*args, **kwargs)
        return record

    try:
        for path, block in blocks.items():
            originals[path] = block.forward
            block.forward = recorder(path, block.forward)
        pipeline(settings.replace(num_inference_steps=1), output_type="latent")
    finally:
        for path, block in blocks.items():
            if path in originals:
                block.forward = originals[path]
    return calls, examples


def plan_groups(blocks: dict[str, torch.nn.Module], calls: dict[str, list[tuple]]) -> tuple[dict[tuple, list[str]],
                                                                                            list[str]]:
    """(class name, signature) → the blocks to compile together, and the blocks left eager. A block called with one
    signature joins its group; a block of the low-noise expert, which the recorded step does not reach, joins the
    group of its twin in the high-noise expert (the same architecture, called with the same shapes); a block
    called with several signatures, or unreached with no twin, stays eager."""
    groups: dict[tuple, list[str]] = {}
    group_of: dict[str, tuple] = {}
    eager, unreached = [], []
    for path, block in blocks.items():
        signatures = calls.get(path, [])
        if len(signatures) == 1:
            key = (type(block).__name__, signatures[0])
            groups.setdefault(key, []).append(path)
            group_of[path] = key
        elif not signatures:
            unreached.append(path)
        else:
            eager.append(path)
    for path in unreached:
        model, _, rest = path.partition(".")
        twin = f"{EXPERT_TWINS.get(model, model)}.{rest}"
        if twin != path and twin in group_of:
            groups[group_of[twin]].append(path)
        else:
            eager.append(path)
    return groups, eager


def compile_package(exported: torch.export.ExportedProgram, packaging: str = "spaces") -> bytes:
    """One exported block compiled ahead of time, as package bytes (picklable, so a ZeroGPU task can return them):
    ``spaces`` with ``spaces.aoti_compile``, ``inductor`` with inductor's own packaging, the constants left out of
    the ``.so`` (both are bound to the block's live weights when loaded)."""
    if packaging == "spaces":
        import spaces

        return spaces.aoti_compile(exported).archive_file.getvalue()
    if packaging != "inductor":
        raise ValueError(f"packaging must be one of {PACKAGINGS}, got {packaging!r}")
    from io import BytesIO

    import torch

    archive = BytesIO()
    torch._inductor.aoti_compile_and_package(exported, package_path=archive, inductor_configs={
        "aot_inductor.package_constants_in_so": False, "always_keep_tensor_constants": True})
    return archive.getvalue()


def compile_archives(blocks: dict[str, torch.nn.Module], examples: dict[tuple, tuple[tuple, dict]],
                     groups: dict[tuple, list[str]], packaging: str = "spaces") -> dict[tuple, bytes]:
    """One ``torch.export`` + :func:`compile_package` per group (of its example call, on its first block)."""
    import torch

    archives = {}
    for key, paths in groups.items():
        args, kwargs = examples[key]
        exported = torch.export.export(blocks[paths[0]], args=tuple(args), kwargs=dict(kwargs))
        archives[key] = compile_package(exported, packaging)
        logger.info("AoT: compiled %s for %d block(s) (%s packaging)", key[0], len(paths), packaging)
    return archives


def load_package(archive: bytes, block: torch.nn.Module) -> Callable:
    """The compiled package with ``block``'s live weights as its constants (user-managed: no copy)."""
    from io import BytesIO

    import torch

    model = torch._inductor.aoti_load_package(BytesIO(archive))
    weights = {**dict(block.named_parameters()), **dict(block.named_buffers())}
    model.load_constants({name: weights[name] for name in model.get_constant_fqns()}, check_full_update=True,
                         user_managed=True)
    return model


def group_name(key: tuple) -> str:
    """A group's name in reports: its block class and the shape of the block's first input."""
    positional = key[1][0][1]  # the signatures of the example call's positional arguments (call_signature)
    if positional and positional[0][0] == "tensor":
        return f"{key[0]}[{'x'.join(map(str, positional[0][1]))}]"
    return key[0]


def check_package(archive: bytes, block: torch.nn.Module, args: tuple, kwargs: dict, expected: torch.Tensor,
                  loader: Callable[[bytes, torch.nn.Module], Callable]) -> str | None:
    """Load ``archive`` with ``block``'s weights and run the example call: None when its output matches
    ``expected`` (the eager forward's) within ``VERIFY_REL_L2``, else why not."""
    import torch

    try:
        out = loader(archive, block)(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is a failed check
        return f"it failed to load or run ({type(exc).__name__}: {exc})"
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        return f"it returned {getattr(out, 'shape', type(out).__name__)} where the block returns {tuple(expected.shape)}"
    err = float((out.float() - expected.float()).norm() / expected.float().norm().clamp(min=1e-12))
    if not err <= VERIFY_REL_L2:  # NaN fails too
        return f"its output differs from the eager forward's (relative L2 {err:.3g} > {VERIFY_REL_L2})"
    return None


def verify_archives(blocks: dict[str, torch.nn.Module], examples: dict[tuple, tuple[tuple, dict]],
                    groups: dict[tuple, list[str]], archives: dict[tuple, bytes], *, isolated: bool = True,
                    loader: Callable[[bytes, torch.nn.Module], Callable] | None = None) -> dict[tuple, str]:
    """Check every package (:func:`check_package`) on its group's first block and example call; returns the groups
    that failed, with why. ``isolated``: in a fresh Python process, so that a package crashing its loader ends
    only that process (reported with the signal); otherwise here (ZeroGPU's GPU task, a worker process of its
    own, whose crash the ``spaces`` task call raises as an error)."""
    import torch

    loader = loader or load_package
    cases = []
    with torch.no_grad():
        for key, paths in groups.items():
            args, kwargs = examples[key]
            cases.append((key, archives[key], blocks[paths[0]], args, kwargs, blocks[paths[0]](*args, **kwargs)))
    if not isolated:
        failures = {key: check_package(archive, block, args, kwargs, expected, loader)
                    for key, archive, block, args, kwargs, expected in cases}
        return {key: why for key, why in failures.items() if why}
    failures = {}
    with tempfile.TemporaryDirectory(prefix="mova-aot-") as tmp:
        for i, case in enumerate(cases):
            payload = os.path.join(tmp, f"case{i}.pkl")
            with open(payload, "wb") as f:
                pickle.dump((*case[1:], loader), f)
            why = _run_check(payload)
            if why:
                failures[case[0]] = why
    return failures


def _run_check(payload: str) -> str | None:
    """:func:`check_package` on a pickled case, in a fresh interpreter (``python -m mova.backends.aot``) that finds
    the modules this process finds (the pickle names the block's and the loader's)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        proc = subprocess.run([sys.executable, "-m", "mova.backends.aot", payload], capture_output=True, text=True,
                              timeout=VERIFY_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return f"loading and running it took more than {VERIFY_TIMEOUT_S} s"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"it crashed the process that loaded it ({name})"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"its check failed ({tail})"
    result = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return None if result == "ok" else result or "its check printed nothing"


class AotBlockForward:
    """A block's forward: the AoT graph for calls of the signature it was compiled for, the eager forward for any
    other. The package is loaded on the first matching call in each process (ZeroGPU's worker) and kept there."""

    def __init__(self, block: torch.nn.Module, eager: Callable, archive: bytes, signature: tuple,
                 loader: Callable[[bytes, torch.nn.Module], Callable] = load_package) -> None:
        self.block, self.eager, self.archive, self.signature, self.loader = block, eager, archive, signature, loader
        self._model: ContextVar[Callable | None] = ContextVar("aot_model", default=None)
        self.compiled_calls = 0
        self.eager_calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if call_signature(args, kwargs) != self.signature:
            self.eager_calls += 1
            return self.eager(*args, **kwargs)
        model = self._model.get()
        if model is None:
            model = self.loader(self.archive, self.block)
            self._model.set(model)
        self.compiled_calls += 1
        return model(*args, **kwargs)

    def __reduce__(self):  # a process that receives it loads the package again
        return AotBlockForward, (self.block, self.eager, self.archive, self.signature, self.loader)


def apply_archives(blocks: dict[str, torch.nn.Module], groups: dict[tuple, list[str]],
                   archives: dict[tuple, bytes]) -> int:
    """Give each grouped block its :class:`AotBlockForward`; returns how many blocks got one."""
    count = 0
    for key, paths in groups.items():
        for path in paths:
            block = blocks[path]
            block.forward = AotBlockForward(block, block.forward, archives[key], key[1])
            count += 1
    return count


def why_not(pipeline: MOVAPipeline, env: dict[str, str] | None = None) -> str | None:
    """Why AoT cannot run here (``None`` when it can)."""
    env = os.environ if env is None else env
    if env.get(AOT_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return f"{AOT_ENV}={env[AOT_ENV]} turns it off"
    import torch

    if not torch.cuda.is_available() or pipeline.device.type != "cuda":
        return f"no CUDA device (the pipeline runs on {pipeline.device}; spaces' AoT compiles CUDA graphs)"
    if pipeline.offload != "none":
        return f"offload={pipeline.offload!r} moves blocks between devices; AoT needs offload='none'"
    if pipeline.parallel is not None:
        return "parallel inference (sequence / CFG parallel) is not compiled ahead of time"
    try:
        from spaces.zero.torch import aoti  # noqa: F401 - needs torch >= 2.8
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to stay eager
        return f"spaces' AoT helpers cannot be imported ({type(exc).__name__}: {exc})"
    return None


def prepare(pipeline: MOVAPipeline, settings: GenerationSettings,
            gpu_task: Callable[[Callable], Callable] | None = None) -> AotReport:
    """Compile the denoiser's repeated blocks ahead of time for ``settings``' shapes (resolved settings: the
    Space's default request), or leave the pipeline eager and log why. ``gpu_task`` wraps the recording and
    compiling (``spaces.GPU(duration=COMPILE_TASK_S)`` on ZeroGPU; default: run here)."""
    reason = why_not(pipeline)
    if reason is not None:
        logger.info("AoT compile skipped, the denoiser runs eager: %s", reason)
        return AotReport(compiled=False, reason=reason)
    blocks = repeated_blocks(pipeline)

    def record_compile_and_verify(packagings: tuple[str, ...]) -> tuple[dict, list, dict, dict, dict]:
        calls, examples = record_block_calls(pipeline, settings, blocks)
        groups, eager = plan_groups(blocks, calls)
        archives, used, failures, pending = {}, {}, {}, dict(groups)
        for packaging in packagings:  # each graph takes the first packaging whose package passes its check
            if not pending:
                break
            built = compile_archives(blocks, examples, pending, packaging)
            failed = verify_archives(blocks, examples, pending, built, isolated=gpu_task is None)
            for key in pending:
                if key in failed:
                    failures.setdefault(key, []).append(f"{packaging}: {failed[key]}")
                else:
                    archives[key], used[key] = built[key], packaging
            pending = {key: paths for key, paths in pending.items() if key in failed}
        return groups, eager, archives, used, failures

    # On ZeroGPU the packages are checked inside the GPU task, so one that crashes its loader ends the task: the task
    # runs again from the next packaging on. Elsewhere an export or compile error does the same.
    packagings, ended = tuple(PACKAGINGS), []
    while True:
        try:
            task = (lambda: record_compile_and_verify(packagings))
            groups, eager, archives, used, failures = (gpu_task(task) if gpu_task else task)()
            break
        except Exception as exc:  # noqa: BLE001 - export/inductor/worker failures of any kind fall back to eager
            ended.append(f"{packagings[0]}: {type(exc).__name__}: {exc}")
            logger.warning("AoT compile with %s's packaging failed%s: %s", packagings[0],
                           ", trying the next" if len(packagings) > 1 else "", ended[-1], exc_info=exc)
            packagings = packagings[1:]
            if not packagings:
                reason = "; ".join(ended)
                logger.warning("AoT compile failed, the denoiser runs eager: %s", reason)
                return AotReport(compiled=False, reason=reason)
    failed, rejected = {}, ({"every graph": "; ".join(ended)} if ended else {})
    for key, whys in failures.items():
        if key in archives:  # an earlier packaging failed, a later one passed
            rejected[group_name(key)] = "; ".join(whys)
            logger.warning("AoT: the graph for %s runs %s's package, after %s", group_name(key), used[key],
                           "; ".join(whys))
            continue
        failed[group_name(key)] = "; ".join(whys)
        logger.warning("AoT: the graph for %s failed its check, its %d block(s) run eager: %s", group_name(key),
                       len(groups[key]), "; ".join(whys))
        eager = eager + groups.pop(key)
    count = apply_archives(blocks, groups, archives)
    if eager:
        logger.info("AoT: %d block(s) run eager: %s", len(eager), ", ".join(eager[:5]))
    reason = "" if count else ("every compiled graph failed its check: " + "; ".join(
        f"{name}: {why}" for name, why in failed.items()) if failed else "no block to compile")
    return AotReport(compiled=count > 0, reason=reason, blocks=count, graphs=len(archives), eager_blocks=eager,
                     failed=failed, packaging={group_name(key): p for key, p in used.items()}, rejected=rejected)


def _check_main(payload: str) -> int:
    """``python -m mova.backends.aot CASE.pkl``: :func:`verify_archives`' isolated check of one pickled case."""
    with open(payload, "rb") as f:
        archive, block, args, kwargs, expected, loader = pickle.load(f)  # noqa: S301 - our own file, just written
    why = check_package(archive, block, args, kwargs, expected, loader)
    print(why or "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_check_main(sys.argv[1]))
