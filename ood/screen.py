"""Screens of the papers' claims that fit the design: paired by seed where two methods share their starting
checkpoints, and an uncertainty over the OOD images for each seed's FPR95.

**Paired screen** (:func:`paired`). A fine-tune of seed ``s`` starts from seed ``s`` of its ``init`` method
(:data:`ood.methods.METHODS`), so two fine-tunes from the same method, or a fine-tune and its own starting method,
share each seed's starting checkpoint: their difference is taken seed by seed, ``d_s = a_s - b_s``, and the screen
reports the mean and the sample standard deviation (ddof 1) of the ``d_s`` and the number of seeds whose ``d_s`` has
the sign of the mean. The verdict is "lower" / "higher" (``a``'s metric against ``b``'s) when every seed agrees in
sign and ``|mean d| > std d``; otherwise "no clear difference". It is a screen, not a significance test: with three
seeds no rule of this kind controls an error rate, and it says only that the sign held in every seed by more than
the seeds' own scatter of the difference. Methods that do not share starting checkpoints (two trained from scratch)
keep the unpaired screen of :func:`ood.tables.compare` (the difference of the means against the summed stds).

**Bootstrap** (:func:`fpr95_interval`). Each seed's FPR95 is measured on a finite set of OOD images (and its
threshold on a finite ID test set); the percentile bootstrap resamples both with replacement, ``n_boot`` times with
a seeded generator, recomputes FPR95 with the same rule as :func:`ood.metrics.fpr_at_tpr` (the threshold is the
``ceil(0.95 n_id)``-th largest ID score, ties count as accepted) and gives the 2.5th and 97.5th percentiles (numpy's
``linear`` rule). It matters most for small sets (the 1,200-image Textures subset of ``cifar10-cpu``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ood.methods import METHODS

__all__ = ["shares_start", "paired", "paired_findings", "fpr95_interval", "PAIRED_COLUMNS"]

PAIRED_COLUMNS = ["claim", "a", "b", "scorer", "ood_set", "metric", "n_seeds", "mean_diff", "std_diff", "agree",
                  "verdict"]


def shares_start(a: str, b: str, init: dict[str, str | None] | None = None) -> bool:
    """Whether seed ``s`` of ``a`` and of ``b`` start from the same checkpoint: both fine-tune from one method, or
    one fine-tunes from the other. ``init``: method -> starting method as run (default: the catalogue's)."""
    init = init if init is not None else {m: c.init for m, c in METHODS.items()}
    ia, ib = init.get(a), init.get(b)
    return (ia is not None and ia == ib) or ia == b or ib == a


def paired(per_seed: pd.DataFrame, a: str, b: str, *, scorer: str = "energy", ood_set: str = "average",
           metric: str = "fpr95") -> dict:
    """The paired screen of ``a`` against ``b`` on one (scorer, OOD set, metric): ``per_seed`` has one row per
    method, seed, scorer and set (integer-like ``seed``; ``mean``/``std`` rows are ignored)."""
    rows = per_seed[(per_seed["scorer"] == scorer) & (per_seed["ood_set"] == ood_set)
                    & ~per_seed["seed"].astype(str).isin(["mean", "std"])]
    va = rows[rows["method"] == a].set_index(rows[rows["method"] == a]["seed"].astype(str))[metric]
    vb = rows[rows["method"] == b].set_index(rows[rows["method"] == b]["seed"].astype(str))[metric]
    seeds = sorted(set(va.index) & set(vb.index), key=lambda s: (len(s), s))
    if not seeds:
        raise KeyError(f"no seed of both {a!r} and {b!r} for scorer {scorer!r}, set {ood_set!r}")
    d = np.array([float(va[s]) - float(vb[s]) for s in seeds])
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    agree = int((np.sign(d) == np.sign(mean)).sum()) if mean != 0 else 0
    clear = len(d) > 1 and agree == len(d) and abs(mean) > std
    verdict = ("lower" if mean < 0 else "higher") if clear else "no clear difference"
    return {"a": a, "b": b, "scorer": scorer, "ood_set": ood_set, "metric": metric, "n_seeds": len(d),
            "mean_diff": mean, "std_diff": std, "agree": agree, "verdict": verdict}


def paired_findings(per_seed: pd.DataFrame, claims: list[tuple[str, str, str]], *, scorer: str = "energy",
                    ood_sets: list[str] | None = None, metric: str = "fpr95",
                    init: dict[str, str | None] | None = None) -> pd.DataFrame:
    """:func:`paired` for every claim ``(a, b, text)`` whose two methods ran and share their starting checkpoints,
    on every OOD set (default: each set of ``per_seed``, the average included)."""
    present = set(per_seed["method"])
    sets = ood_sets or list(dict.fromkeys(per_seed["ood_set"]))
    rows = [{"claim": text, **paired(per_seed, a, b, scorer=scorer, ood_set=o, metric=metric)}
            for a, b, text in claims if a in present and b in present and shares_start(a, b, init) for o in sets]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def fpr95_interval(id_scores, ood_scores, *, tpr: float = 0.95, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval (percent) of FPR95 over the ID and OOD images (see the module docstring)."""
    id_s = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_s = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_s.size == 0 or ood_s.size == 0 or not (np.isfinite(id_s).all() and np.isfinite(ood_s).all()):
        raise ValueError("fpr95_interval needs non-empty, finite ID and OOD scores")
    if not (isinstance(n_boot, int) and n_boot >= 10):
        raise ValueError(f"invalid value {n_boot!r} for 'n_boot'; allowed: an integer >= 10")
    rng = np.random.default_rng(seed)
    k = math.ceil(tpr * id_s.size)                 # the k-th largest ID score keeps tpr of ID
    out = np.empty(n_boot)
    for i in range(n_boot):
        ids = id_s[rng.integers(0, id_s.size, id_s.size)]
        t = np.partition(ids, id_s.size - k)[id_s.size - k]
        oods = ood_s[rng.integers(0, ood_s.size, ood_s.size)]
        out[i] = 100.0 * np.count_nonzero(oods >= t) / oods.size
    alpha = (1 - level) / 2
    lo, hi = np.percentile(out, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)
