"""Which AoT packaging loads on this GPU and torch: a small bf16 block (norm, two linears, a buffer) is exported and
compiled with each packaging, then loaded with the block's weights as user-managed constants and run against the
eager forward, each load in a process of its own so that a crash is recorded rather than fatal:

    python benchmarks/aot_packaging.py --out benchmarks/results/aot_packaging_h200.json

Packagings:
- ``spaces``: ``spaces.aoti_compile`` (its inductor options; on torch >= 2.10 constants "on disk" as pickled weights,
  which its ``package_aoti`` call leaves out of the package).
- ``inductor``: ``torch._inductor.aoti_compile_and_package`` with the constants left out of the ``.so``
  (``aot_inductor.package_constants_in_so=False``), as ``mova.backends.aot``'s fallback packs them.
- ``inductor_weights``: the same with the constants compiled in (the default), loaded without ``load_constants``.

Loads: ``fresh`` (a new interpreter, as ZeroGPU's worker or aot's check), ``same`` (the compiling process), each
with ``faulthandler`` on so that a segfault leaves its stack in the record.

``--smoke`` asks the question below all of these: does this torch load any AOTInductor package? A float32
``nn.Linear(64, 64)`` is packaged with inductor's defaults on each device (``--devices``) and loaded one stage at a
time, each in a process of its own: ``metadata`` (``AOTIModelPackageLoader.load_metadata_from_package``),
``package`` (``torch._inductor.aoti_load_package``, what every packaging above goes through), and ``runner`` (the
archive unzipped and its ``.so`` run by ``AOTIModelContainerRunnerCpu/Cuda``, the package loader bypassed). Where gdb
is installed, the crashing ``package`` stage is run again under it and the native stack is recorded.

    python benchmarks/aot_packaging.py --smoke --devices cpu cuda --out benchmarks/results/aoti_smoke_h100.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def block_and_input():
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(256)
            self.up = torch.nn.Linear(256, 1024)
            self.down = torch.nn.Linear(1024, 256)
            self.register_buffer("scale", torch.linspace(0.5, 1.5, 256))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.scale * self.down(torch.nn.functional.gelu(self.up(self.norm(x))))

    return Block().to("cuda", torch.bfloat16).eval(), torch.randn(4, 64, 256, device="cuda", dtype=torch.bfloat16)


def compile_package(packaging: str) -> bytes:
    """The block's package: ``spaces`` / ``inductor`` as ``mova.backends.aot`` builds them, ``inductor_weights``
    with inductor's defaults (the constants in the ``.so``)."""
    import torch

    from mova.backends import aot

    block, x = block_and_input()
    exported = torch.export.export(block, (x,))
    if packaging != "inductor_weights":
        return aot.compile_package(exported, packaging)
    archive = BytesIO()
    torch._inductor.aoti_compile_and_package(exported, package_path=archive)
    return archive.getvalue()


def load_and_run(archive: bytes, with_constants: bool) -> dict:
    """The package loaded (bound to the block's weights with ``aot.load_package`` unless they are compiled in) and
    run on the example input: its relative L2 against the eager forward."""
    import torch

    from mova.backends import aot

    block, x = block_and_input()
    with torch.no_grad():
        expected = block(x)
        model = aot.load_package(archive, block) if with_constants else torch._inductor.aoti_load_package(
            BytesIO(archive))
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
    torch.cuda.synchronize()
    return {"rel_l2": float((out.float() - expected.float()).norm() / expected.float().norm())}


def child(mode: str, packaging: str, payload: str) -> None:
    import faulthandler

    faulthandler.enable()
    if mode == "same":
        archive = compile_package(packaging)
    else:
        archive = Path(payload).read_bytes()
    print("RESULT " + json.dumps(load_and_run(archive, packaging != "inductor_weights")), flush=True)


def run_child(mode: str, packaging: str, payload: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, packaging, payload], capture_output=True,
                          text=True, timeout=900)
    record = {"returncode": proc.returncode}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if lines:
        record.update(json.loads(lines[-1][7:]))
    else:
        root = str(ROOT) + "/"  # the record names this project's files relative to it
        record["stderr_tail"] = [line.replace(root, "") for line in proc.stderr.strip().splitlines()[-25:]]
    return record


def smoke_linear(device: str):
    """The smoke model: a float32 ``nn.Linear(64, 64)`` on ``device`` and its example input (seeded)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(64, 64).to(device).eval(), torch.randn(8, 64, device=device)


def smoke_package(device: str, path: Path) -> None:
    """The smoke model packaged at ``path`` with inductor's defaults."""
    import torch

    linear, x = smoke_linear(device)
    torch._inductor.aoti_compile_and_package(torch.export.export(linear, (x,)), package_path=str(path))


def smoke_child(stage: str, device: str, path: str) -> None:
    """Load the smoke package one ``stage`` deep; print its relative L2 against the eager Linear where it runs."""
    import faulthandler
    import zipfile

    faulthandler.enable()
    import torch

    if stage == "metadata":
        meta = torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(path, "model")
        print("RESULT " + json.dumps({"metadata_keys": sorted(meta)}), flush=True)
        return
    if stage == "package":
        model = torch._inductor.aoti_load_package(path)
        run = lambda x: model(x)  # noqa: E731
    else:  # runner: the .so straight from the unzipped archive
        folder = tempfile.mkdtemp()
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
            (so,) = [name for name in archive.namelist() if name.endswith(".so")]
        so = str(Path(folder, so))
        runner = (torch._C._aoti.AOTIModelContainerRunnerCpu(so, 1) if device == "cpu" else
                  torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, device, str(Path(so).parent)))
        run = lambda x: runner.run([x])[0]  # noqa: E731
    linear, x = smoke_linear(device)
    with torch.no_grad():
        out, expected = run(x), linear(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    print("RESULT " + json.dumps({"rel_l2": float((out - expected).norm() / expected.norm())}), flush=True)


def native_stack(stage: str, device: str, path: str) -> list[str] | None:
    """The native stack of a crashing smoke stage, from gdb where it is installed."""
    import shutil

    if shutil.which("gdb") is None:
        return None
    proc = subprocess.run(["gdb", "-batch", "-ex", "run", "-ex", "bt 30", "--args", sys.executable, __file__,
                           "--child", "smoke:" + stage, device, path], capture_output=True, text=True, timeout=600)
    return [line for line in proc.stdout.splitlines() if line.startswith("#")][:30]


def smoke(devices: list[str], record: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            path = Path(tmp, f"linear_{device}.pt2")
            try:
                smoke_package(device, path)
            except Exception as exc:  # noqa: BLE001 - a compile failure is a result
                record["results"][device] = {"compile_error": f"{type(exc).__name__}: {exc}"}
                continue
            entry = {"package_bytes": path.stat().st_size}
            for stage in ("metadata", "package", "runner"):
                entry[stage] = run_child("smoke:" + stage, device, str(path))
            if entry["package"]["returncode"] != 0:
                entry["package"]["native_stack"] = native_stack("package", device, str(path))
            record["results"][device] = entry
            print(device, json.dumps(entry), flush=True)


def packagings(names: list[str], record: dict) -> None:
    """Each packaging in ``names`` compiled, then loaded fresh and in the compiling process."""
    try:
        from importlib.metadata import version

        record["spaces"] = version("spaces")
    except Exception:  # noqa: BLE001 - spaces absent: its packaging is skipped
        record["spaces"] = None
    with tempfile.TemporaryDirectory() as tmp:
        for packaging in names:
            if packaging == "spaces" and record["spaces"] is None:
                continue
            try:
                path = Path(tmp, f"{packaging}.pt2")
                path.write_bytes(compile_package(packaging))
                entry = {"package_bytes": path.stat().st_size, "fresh": run_child("fresh", packaging, str(path))}
            except Exception as exc:  # noqa: BLE001 - a compile failure is a result
                entry = {"compile_error": f"{type(exc).__name__}: {exc}"}
            entry["same"] = run_child("same", packaging, "")
            record["results"][packaging] = entry
            print(packaging, json.dumps(entry), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--packagings", nargs="+", default=["spaces", "inductor", "inductor_weights"],
                        choices=("spaces", "inductor", "inductor_weights"))
    parser.add_argument("--smoke", action="store_true", help="load a plain Linear's package stage by stage")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=("cpu", "cuda"))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PACKAGING", "PAYLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, packaging, payload = args.child
        if mode.startswith("smoke:"):
            smoke_child(mode[len("smoke:"):], packaging, payload)
        else:
            child(mode, packaging, payload)
        return 0
    import platform

    import torch

    record = {"benchmark": "aot_packaging" + (" --smoke" if args.smoke else ""),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "results": {}}
    if args.smoke:
        import shutil

        cxx = shutil.which("g++") or shutil.which("c++")
        record["cxx"] = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0] \
            if cxx else None
        smoke(args.devices, record)
    else:
        packagings(args.packagings, record)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
