"""The app under torchrun (2 CPU processes, gloo, sequence parallel): rank 0 serves, rank 1 follows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from gradio_client import Client

from tests.test_app_support import FAST, ROOT, app_checkpoint, free_port, streams, wait_for


def test_app_under_torchrun_serves_and_shuts_down(tiny_checkpoint, tmp_path):
    ckpt = app_checkpoint(tiny_checkpoint, tmp_path)
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "app.py", "--model", str(ckpt), "--sp", "2", "--port", str(port), "--no-arena",
           "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, proc)
        client = Client(url, verbose=False)
        video, seed, _, _ = client.predict(prompt="a bell rings", seed=3, randomize_seed=False, **FAST,
                                           api_name="/generate_t2va")
        info = streams(video)
        assert info["video_codec"] == "h264" and info["audio_codec"] == "aac" and info["frames"] == 9
        assert int(seed) == 3
        # a second request with a random seed: rank 0 draws it and both ranks use it
        _, seed2, _, _ = client.predict(prompt="a dog barks", randomize_seed=True, **FAST, api_name="/generate_t2va")
        assert int(seed2) >= 0
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: rank 0 closes the app and tells rank 1 to stop
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("torchrun did not shut down cleanly")
