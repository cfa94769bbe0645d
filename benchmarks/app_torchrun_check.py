"""End-to-end check of the app on a multi-GPU host: ``torchrun --nproc-per-node N app.py --sp N`` serves a
generation that gradio_client requests, then shuts down cleanly on Ctrl-C.

    python benchmarks/app_torchrun_check.py --gpus 2 --out benchmarks/results/app_torchrun.json

Uses a tiny random checkpoint (written on the spot), so it checks the serving path, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    from mova.media import probe
    from mova.tiny import make_tiny_checkpoint

    tmp = Path(tempfile.mkdtemp())
    ckpt = make_tiny_checkpoint(tmp / "tiny")
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.gpus), "--master-port",
           str(free_port()), "app.py", "--model", str(ckpt), "--sp", str(args.gpus), "--port", str(port),
           "--no-arena", "--data-dir", str(tmp / "data")]
    log = open(tmp / "app.log", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"})
    result: dict = {"command": " ".join(cmd[1:]), "gpus": args.gpus}
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() - t0 > 240:
                    raise RuntimeError("app did not come up in 240 s")
                time.sleep(1)
        result["startup_s"] = round(time.time() - t0, 1)
        from gradio_client import Client

        client = Client(url, verbose=False)
        t1 = time.time()
        video, seed, figures, _ = client.predict(prompt="a bell rings twice", seed=5, randomize_seed=False,
                                                 height=64, width=64, num_frames=9, fps=12, num_inference_steps=4,
                                                 api_name="/generate_t2va")
        result.update(request_s=round(time.time() - t1, 2), seed=int(seed), figures=figures, streams=probe(video))
        result["status"] = "ok"
    except Exception as exc:
        result.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        t2 = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches every process of the job
        try:
            result["exit_code"] = proc.wait(timeout=60)
            result["exited_after_sigint_s"] = round(time.time() - t2, 1)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            result["exited_after_sigint_s"] = None  # hung: killed after 60 s
        log.close()
        log_text = (tmp / "app.log").read_text()
        result["follower_interrupted"] = "[rank1]" in log_text and "KeyboardInterrupt" in log_text
        result["log_tail"] = log_text[-3000:]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
