"""Where arena data lives, and the one check that keeps every pool path inside the pool."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MOVA_DATA_DIR"
DEFAULT_DATA_DIR = "./data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$MOVA_DATA_DIR``, else ``./data``.

    Read at call time (never at import time), so tests and apps can set the variable late.
    """
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


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
