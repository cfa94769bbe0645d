"""Synthetic arena clips and pools for tests and benchmarks (PyAV + numpy; no torch).

- ``write_synthetic_clip``: a small H.264 + AAC mp4 (colour field, moving bar, a tone).
- ``write_synthetic_pool``: one such clip per model and prompt, plus the ``manifest.jsonl`` that
  ``python -m mova arena import`` reads.
- ``event_stream_result``: the outcome of a raw ``/gradio_api/call/<api>/<event_id>`` event stream.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_synthetic_clip(
    path: str | os.PathLike,
    *,
    color: tuple[int, int, int] = (40, 120, 200),
    seconds: float = 1.0,
    fps: int = 12,
    size: tuple[int, int] = (64, 64),
    tone_hz: float = 440.0,
    sample_rate: int = 48000,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an H.264 (yuv420p) + AAC mp4: a colour field with a moving white bar and a sine tone.

    ``size`` is (width, height), both even. ``metadata`` is written as container tags (tests use it
    to check that served copies drop it).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), "w", format="mp4") as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "28"}
        audio = out.add_stream("aac", rate=sample_rate, layout="mono")

        # 1. video: colour field with a bar moving left to right
        for i in range(n_frames):
            frame = np.empty((height, width, 3), dtype=np.uint8)
            frame[:] = color
            x = int(i / n_frames * width)
            frame[:, x : x + max(2, width // 16)] = 255
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)

        # 2. audio: a tone, in AAC-sized frames
        n_samples = int(seconds * sample_rate)
        t = np.arange(n_samples) / sample_rate
        tone = (0.2 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        chunk = 1024
        for start in range(0, n_samples, chunk):
            block = tone[None, start : start + chunk]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


def write_synthetic_pool(
    pool_dir: str | os.PathLike,
    models: tuple[str, ...] = ("model-a", "model-b", "model-c"),
    *,
    prompts: int = 2,
    categories: tuple[str, ...] = ("",),
    seconds: float = 1.0,
) -> Path:
    """A small pool of synthetic clips (one per model and prompt) plus its ``manifest.jsonl``.

    Each model gets its own colour and tone, so the clips differ visibly and audibly. Returns the
    manifest path (inside ``pool_dir``), ready for ``python -m mova arena import``.
    """
    pool = Path(pool_dir)
    records = []
    for m, model in enumerate(models):
        color = tuple(int(c) for c in (np.array([60, 140, 220]) + 70 * m) % 256)
        for p in range(prompts):
            relative = f"{model}/prompt{p:03d}.mp4"
            write_synthetic_clip(pool / relative, color=color, seconds=seconds, tone_hz=330.0 + 110.0 * m)
            records.append({
                "prompt_id": f"prompt{p:03d}", "prompt": f"synthetic scene number {p}", "model": model,
                "path": relative, "category": categories[p % len(categories)],
                "settings": {"synthetic": True},
            })
    manifest = pool / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return manifest


def event_stream_result(text: str) -> tuple[str | None, object]:
    """(``"complete"``, ``"error"`` or ``None``, the decoded data of that event) of a Gradio call's event stream."""
    kind, payload = None, None
    for line in text.splitlines():
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: ") and kind in ("complete", "error"):
            payload = json.loads(line[len("data: "):])
    return (kind if kind in ("complete", "error") else None), payload


def session_call(base: str, api_name: str, data: list, session: str) -> tuple[str, list]:
    """A raw HTTP API call of the app at ``base`` as browser session ``session``; returns (the whole SSE text as
    sent, the decoded output list). An error event raises RuntimeError with its message."""
    import httpx

    event = httpx.post(f"{base}/gradio_api/call/{api_name}", json={"data": data, "session_hash": session}).json()
    text = httpx.get(f"{base}/gradio_api/call/{api_name}/{event['event_id']}", timeout=30).text
    kind, payload = event_stream_result(text)
    if kind == "error":
        raise RuntimeError(f"{api_name} failed: {payload}")
    return text, payload


def schema_version(store) -> int:
    """The database's ``PRAGMA user_version`` (the schema version ``schema.migrate`` brought it to)."""
    return store.read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
