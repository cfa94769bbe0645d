"""The command line fails in one line naming the flag, before the slow model load where it can, never with a
traceback unless asked (--debug / MOVA_DEBUG=1), and a clean run prints no warnings."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mova import MOVAPipeline
from mova.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def no_load(monkeypatch):
    """Fails the test if the CLI gets as far as loading a model."""
    loads = []
    monkeypatch.setattr(MOVAPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a)))
    return loads


def bad_args(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "somefile.txt").write_text("not a folder")
    (tmp / "frame.png").mkdir()
    ok = str(tmp / "ok.mp4")
    return [
        (["--out", str(tmp)], f"--out {str(tmp)!r} is a folder"),
        (["--out", str(tmp / "somefile.txt" / "x.mp4")], "--out '.*somefile.txt/x.mp4' cannot be written: "
                                                         "'.*somefile.txt' is a file, not a folder"),
        (["--out", str(tmp / "somefile.txt" / "deeper" / "x.mp4")], "--out '.*somefile.txt/deeper/x.mp4' cannot be "
                                                                    "written: '.*somefile.txt' is a file"),
        (["--out", "/proc/mova-cli-test/x.mp4"], "--out '/proc/mova-cli-test/x.mp4' cannot be written in '/proc'"),
        (["--out", "/dev/null"], "--out '/dev/null' is not a regular file"),
        (["--out", ok, "--wav", str(tmp / "somefile.txt" / "a.wav")], "--wav '.*somefile.txt/a.wav' cannot be"),
        (["--out", ok, "--wav", "/proc/a.wav"], "--wav '/proc/a.wav' cannot be written in '/proc'"),
        (["--out", ok, "--wav", ok], "--wav .* is the --out path"),
        (["--out", ok, "--image", str(tmp / "frame.png")], "--image .*frame.png' is not a file"),
        (["--out", ok, "--image", str(tmp / "missing.png")], "--image .*missing.png' is not a file"),
        (["--out", ok, "--fps", "1e-300"], re.escape("--fps=1e-300 is invalid: expected a number in [1, 240]")),
        (["--out", ok, "--fps", "nan"], "--fps=nan is invalid"),
        (["--out", ok, "--fps", "2", "--num-frames", "1025"], "num_frames / fps = 1025 / 2 = 512.5 s is too long"),
        (["--out", ok, "--audio", str(tmp / "missing.wav")], "--audio .*missing.wav' is not a file: expected a sound"),
        (["--out", ok, "--extend", str(tmp / "frame.png")], "--extend .*frame.png' is not a file: expected a clip"),
        (["--out", ok, "--retake-start", "0.5"], "retake_start=0.5 needs a clip to retake"),
        (["--out", ok, "--num-windows", "9"], re.escape("num_windows=9 is invalid: expected an integer in [1, 8]")),
        (["--out", ok, "--audio", str(tmp / "somefile.txt"), "--video", str(tmp / "somefile.txt")],
         "video cannot be combined with audio"),
    ]


def test_bad_arguments_fail_in_one_line_before_loading(tmp_path, capsys, no_load):
    for args, message in bad_args(tmp_path):
        assert main(["generate", "--prompt", "a bell rings", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.match(f"error: (?:{message})", err), (args, err)
        assert not list(tmp_path.glob(".mova-write-check-*"))
    assert no_load == []
    assert not (tmp_path / "ok.mp4").exists()


def test_one_line_in_a_real_process(tmp_path):
    """As a user runs it: exit 2 and one stderr line, no traceback (these ended in tracebacks, exit 1)."""
    (tmp_path / "somefile.txt").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "MOVA_DEBUG"}
    for args in (["--out", str(tmp_path)], ["--out", str(tmp_path / "somefile.txt" / "x.mp4")],
                 ["--out", str(tmp_path / "x.mp4"), "--wav", str(tmp_path / "somefile.txt" / "a.wav")],
                 ["--out", str(tmp_path / "x.mp4"), "--fps", "1e-300"]):
        run = subprocess.run([sys.executable, "-m", "mova", "generate", "--prompt", "a bell rings", *args], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: --"), run.stderr
        assert run.stdout == ""


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "a bell rings"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the following arguments are required: --out" in err
    with pytest.raises(SystemExit):
        main(["--log-level", "loud", "generate"])
    assert "argument --log-level: invalid choice: 'LOUD'" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
    def broken(cls, *args, **kwargs):
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")

    monkeypatch.setattr(MOVAPipeline, "from_pretrained", classmethod(broken))
    monkeypatch.delenv("MOVA_DEBUG", raising=False)
    args = ["generate", "--prompt", "a bell rings", "--out", str(tmp_path / "x.mp4")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == ("error: RuntimeError: CUDA error: out of memory CUDA kernel errors might be asynchronously reported "
                   "(run with --debug or MOVA_DEBUG=1 for the traceback)\n")
    for debug_args, env in (([*args, "--debug"], None), (["--debug", *args], None), (args, "1")):
        if env:
            monkeypatch.setenv("MOVA_DEBUG", env)
        assert main(debug_args) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "in broken" in err


def test_model_errors_after_loading_are_one_line(tiny_checkpoint, tmp_path, capsys):
    """What only the loaded model can check (here its longest clip) is still a one-line error, exit 2."""
    code = main(["generate", "--model", str(tiny_checkpoint), "--prompt", "a bell rings", "--out",
                 str(tmp_path / "x.mp4"), "--height", "64", "--width", "64", "--num-frames", "13", "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err  # after the loading and progress bars
    assert err.endswith("\nerror: num_frames=13 is invalid for tiny: at most 9\n")
    assert "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_cli_silences_bitsandbytes_warnings_unless_debugging(capsys):
    """bitsandbytes (imported by diffusers) warns on CPUs with AVX512-BF16 about an optional kernel package for a
    4-bit matmul MOVA never uses; the CLI keeps it out of the user's output."""
    noisy = logging.getLogger("bitsandbytes.backends.cpu.ops")
    try:
        assert main([]) == 2
        assert not noisy.isEnabledFor(logging.WARNING) and noisy.isEnabledFor(logging.ERROR)
        assert main(["--log-level", "debug"]) == 2
        assert noisy.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger("bitsandbytes").setLevel(logging.NOTSET)
        capsys.readouterr()


@pytest.mark.slow
def test_demo_run_is_quiet(tmp_path):
    """``python -m mova generate --model demo`` on the CPU: a clip, and no warning or traceback on stderr."""
    out = tmp_path / "clip.mp4"
    env = {k: v for k, v in os.environ.items() if k != "MOVA_DEBUG"}
    run = subprocess.run([sys.executable, "-m", "mova", "generate", "--model", "demo", "--prompt",
                          "a red ball bounces on a wooden floor", "--out", str(out), "--steps", "1", "--seed", "3"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0 and f"{out}: seed 3" in run.stdout
    noisy = [line for line in re.split(r"[\r\n]+", run.stderr) if re.search(r"warn|traceback|error", line, re.I)]
    assert noisy == []
