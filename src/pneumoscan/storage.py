"""Where pneumoscan keeps what it caches on disk (what frozen trunks computed, ``cache``), how much is there, and
freeing it: the folder a user moves with ``PNEUMOSCAN_CACHE`` and clears with ``pneumoscan cache --clear``; and
writing a file so that a kill never leaves half of it (``atomic_save``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def default_cache_dir() -> Path:
    """Where caches go unless a run names a folder: ``$PNEUMOSCAN_CACHE``, else ``~/.cache/pneumoscan``."""
    return Path(os.environ.get("PNEUMOSCAN_CACHE") or Path.home() / ".cache" / "pneumoscan")


def cache_bytes(cache_dir: str | Path) -> int:
    """The bytes held under ``cache_dir`` (0 where it does not exist)."""
    root = Path(cache_dir)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def clear_cache(cache_dir: str | Path) -> int:
    """Delete every activation cache under ``cache_dir``; returns the bytes freed. Only the folders this module
    writes (``activations-*``) are removed, so a mistyped folder loses nothing else."""
    freed = 0
    for folder in Path(cache_dir).glob("activations-*"):
        if folder.is_dir():
            freed += cache_bytes(folder)
            shutil.rmtree(folder)
    return freed


def format_bytes(count: int) -> str:
    """``"1.2 GB"``, ``"350 MB"``, ``"12 kB"``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def atomic_save(payload, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
