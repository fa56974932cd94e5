"""Score files: per-image scores of one run on every set, written by the evaluate stage.

A score cache is one ``.npz`` file, key ``"<scorer>/<set>"`` (the ID test set is ``"id"``), values float32 scores
(higher = more in-distribution): every scorer of one seed's run (``cache/<profile>/<method>/seed<s>.npz``, a
by-product kept out of git). The figure scores (:func:`figure_scores`) are the scorers of :data:`FIGURE_SCORERS` of
every seed of a method in one file, key ``"<seed>/<scorer>/<set>"`` (``results/<profile>/scores/<method>.npz``,
committed: the figures stage draws its score histograms and ROC curves from it without running the network again).
:func:`save_scores` writes either atomically; its bytes depend on the scores alone (NumPy's ``savez_compressed``
stores no time stamp), so a rerun that moves no number writes the same file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_scores", "load_scores", "figure_scores", "seed_scores", "evaluate_outputs", "FIGURE_SCORERS"]

#: The scorers whose per-image scores the evaluate stage publishes for the figures (notebooks/05_figures.ipynb draws
#: the energy score's histograms and ROC curves).
FIGURE_SCORERS = ("energy",)


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


def evaluate_outputs(results: str | Path, method: str) -> dict[str, Path]:
    """Where the evaluate stage commits a method's bootstrap intervals and figure scores, under the profile's results
    folder ``results`` (``ood.pipeline.paths(profile)["results"]``): ``intervals/<method>.csv`` and
    ``scores/<method>.npz``."""
    results = Path(results)
    return {"intervals": results / "intervals" / f"{method}.csv", "scores": results / "scores" / f"{method}.npz"}


def figure_scores(by_seed: dict[int, dict[str, np.ndarray]], scorers=FIGURE_SCORERS) -> dict[str, np.ndarray]:
    """The ``scorers``' entries of each seed's score cache (``by_seed``: seed -> ``"<scorer>/<set>"`` arrays), keyed
    ``"<seed>/<scorer>/<set>"``: what :func:`save_scores` writes to a method's figure-scores file."""
    keep = set(scorers)
    return {f"{seed}/{key}": v for seed, scores in by_seed.items() for key, v in scores.items()
            if key.split("/", 1)[0] in keep}


def seed_scores(path: str | Path, seed: int) -> dict[str, np.ndarray]:
    """One seed's ``"<scorer>/<set>"`` arrays from a figure-scores file (:func:`figure_scores`)."""
    scores = load_scores(path)
    prefix = f"{seed}/"
    out = {k[len(prefix):]: v for k, v in scores.items() if k.startswith(prefix)}
    if not out:
        seeds = sorted({k.split("/", 1)[0] for k in scores})
        raise KeyError(f"{path} holds no scores of seed {seed} (seeds: {', '.join(seeds) or 'none'}); rerun its "
                       "evaluate stage (dvc repro)")
    return out
