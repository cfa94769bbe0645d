"""The project installs as a distribution: ``pip install .`` gives an importable ``mova`` and a ``mova`` command,
with dependencies that agree with requirements.txt and never bring another torch."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# imported by mova only where it runs on a Hugging Face Space (ZeroGPU backend) or when an optional kernel exists
OPTIONAL_IMPORTS = {"gradio", "spaces", "flash_attn_interface"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def test_dependencies_follow_requirements_txt():
    """Every dependency pinned in requirements.txt is declared with the same pin; torch is exactly the pinned build;
    torchvision / torchaudio are never pulled in."""
    app = requirements((ROOT / "requirements.txt").read_text().splitlines())
    dist = requirements(project()["dependencies"])
    assert str(dist["torch"].specifier) == str(app["torch"].specifier) == "==2.13.0"
    assert not {"torchvision", "torchaudio"} & (set(app) | set(dist))
    for name, req in dist.items():
        if name in app:
            assert req.specifier == app[name].specifier, f"{name}: pyproject {req} vs requirements.txt {app[name]}"
        else:  # only what gradio already brings the app may be left to the resolver
            assert not req.specifier, f"{name} is not in requirements.txt: pin it there and here alike"


def third_party_imports(package: Path) -> set[str]:
    names = set()
    for file in package.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "mova"} - OPTIONAL_IMPORTS


def test_every_import_of_mova_is_a_declared_dependency():
    """A fresh ``pip install .`` brings whatever ``mova`` imports (a new import needs its dependency)."""
    declared = set(requirements(project()["dependencies"]))
    owners = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(third_party_imports(ROOT / "mova")):
        dists = {canonicalize_name(d) for d in owners.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported by mova but not in pyproject.toml's dependencies: {missing}"


def checkout_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and untracked, not ignored), so that building leaves no
    build/ or egg-info behind in the checkout itself."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOVA_DEBUG")}
    return {**env, **extra}


@pytest.mark.slow
def test_pip_install_gives_mova_and_its_command(tmp_path):
    """``pip install --no-deps --target`` (offline, the installed setuptools as backend), then from another folder:
    ``import mova`` finds the installed copy, ``mova --help`` runs, and ``mova generate`` without the demo
    checkpoint (which stays in the checkout) says so in one line."""
    src = checkout_copy(tmp_path / "src")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(src)], check=True,
                   capture_output=True, timeout=120)
    installed = {p.name for p in target.iterdir()}
    assert {"mova", "bin"} <= installed
    assert not installed & {"ui", "train", "tests", "benchmarks", "scripts", "assets", "app.py"}, installed
    info = next(target.glob("mova_studio-*.dist-info"))
    assert "mova = mova.__main__:main" in (info / "entry_points.txt").read_text()
    requires = [line.split(":", 1)[1].strip() for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    assert "torch==2.13.0" in requires and not any(r.startswith(("torchvision", "torchaudio")) for r in requires)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(PYTHONPATH=str(target))
    probe = subprocess.run([sys.executable, "-c", "import mova; from mova import MOVAPipeline; print(mova.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == target / "mova" / "__init__.py"

    command = target / "bin" / "mova"
    shown = subprocess.run([str(command), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: mova ") and "generate" in shown.stdout

    run = subprocess.run([str(command), "generate", "--prompt", "a bell rings", "--out", "clip.mp4"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: --model demo: the demo checkpoint is not at")
    assert not (elsewhere / "clip.mp4").exists()
