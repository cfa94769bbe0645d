"""A Hugging Face cache laid out as ``huggingface_hub`` writes it, built from a local checkpoint folder (no network):
``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/<path>`` as relative links into ``blobs/``, and
``refs/<revision>`` holding the commit."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def make_hf_cache(source: Path, cache: Path, repo_id: str, revision: str = "main") -> Path:
    """Copy ``source`` into ``cache`` as the snapshot of ``repo_id`` at ``revision``; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        rel = file.relative_to(source)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
