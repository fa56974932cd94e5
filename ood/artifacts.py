"""Score caches: every scorer's scores of one run on every set, written by the evaluate stage and read by the
figures stage without running the network again.

A cache is one ``.npz`` file, key ``"<scorer>/<set>"`` (the ID test set is ``"id"``), values float32 scores (higher =
more in-distribution). :func:`save_scores` writes it atomically; its bytes depend on the scores alone (NumPy's
``savez_compressed`` stores no time stamp), so a rerun that moves no number writes the same file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_scores", "load_scores"]


def save_scores(scores: dict[str, np.ndarray], path: str | Path) -> None:
    """Write ``scores`` (``"<scorer>/<set>"`` -> array) to ``path`` (a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **scores)
    os.replace(tmp, path)


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """The scores :func:`save_scores` wrote to ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no score cache at {path}; run the evaluate stage first (dvc repro)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
