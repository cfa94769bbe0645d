"""Where arena data lives (under the app's data directory, ``mova.outputs.resolve_data_dir``), and the one check
that keeps every pool path inside the pool."""

from __future__ import annotations

import os
from pathlib import Path


def arena_dir(data_dir: Path) -> Path:
    return data_dir / "arena"


def resolve_in_pool(pool_dir: Path, path: str | os.PathLike) -> Path:
    """Resolve ``path`` (relative to the pool, or absolute) and check it stays inside the pool.

    Symlinks and ``..`` are resolved first, so neither can lead out of the pool. Raises ValueError
    naming the path and the pool when it does.
    """
    pool = Path(pool_dir).resolve()
    raw = Path(path).expanduser()
    candidate = (raw if raw.is_absolute() else pool / raw).resolve()
    if not candidate.is_relative_to(pool):
        raise ValueError(f"path {str(path)!r} is outside the pool directory {str(pool)!r}")
    return candidate
