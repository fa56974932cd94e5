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


#: What the screens are and are not: the first paragraph of ``screens.md`` and the note under ``findings.md``.
SCREEN_NOTE = ("These are screens, not significance tests: with three seeds (or two) no rule of this kind controls an "
               "error rate. Unpaired (findings.md): a difference of the means is called only when it exceeds the sum "
               "of the two methods' seed standard deviations. Paired (methods whose seed s starts from the same "
               "checkpoint): the per-seed differences must agree in sign in every seed and their mean must exceed "
               "their own standard deviation.")


def best_scorers(metrics: pd.DataFrame, *, metric: str = "fpr95", ood_set: str = "average") -> dict[str, str]:
    """Each method's best scorer by its mean ``metric`` on ``ood_set`` (lowest FPR95; ties: the first in the
    metrics' order)."""
    m = metrics[(metrics["seed"].astype(str) == "mean") & (metrics["ood_set"] == ood_set)]
    out = {}
    for method, g in m.groupby("method", sort=False):
        out[method] = g.loc[g[metric].idxmin() if metric.startswith("fpr") else g[metric].idxmax(), "scorer"]
    return out


def _cell(metrics: pd.DataFrame, method: str, scorer: str, ood_set: str, metric: str) -> tuple[float, float]:
    def one(stat):
        r = metrics[(metrics["seed"].astype(str) == stat) & (metrics["method"] == method)
                    & (metrics["scorer"] == scorer) & (metrics["ood_set"] == ood_set)][metric]
        return float(r.iloc[0]) if len(r) == 1 else float("nan")
    std = one("std")
    return one("mean"), 0.0 if pd.isna(std) else std


def posthoc_findings(metrics: pd.DataFrame, scorers: list[str], *, a: str = "bfm", b: str = "ce",
                     ood_sets: list[str] | None = None, metric: str = "fpr95") -> pd.DataFrame:
    """BFM's claim of compatibility with post-hoc scores, screened (unpaired, summed stds): ``a`` against ``b``
    under every scorer, and each method's best scorer (:func:`best_scorers`) against ``b``'s best, on every OOD set
    and the average. Empty when ``a`` or ``b`` did not run."""
    present = set(metrics["method"])
    if a not in present or b not in present:
        return pd.DataFrame(columns=["comparison", "a", "scorer_a", "b", "scorer_b", "ood_set", "mean_a", "std_a",
                                     "mean_b", "std_b", "diff", "verdict"])
    sets = ood_sets or list(dict.fromkeys(metrics["ood_set"]))
    best = best_scorers(metrics, metric=metric)
    pairs = [(f"{a} vs {b} under {s}", a, s, b, s) for s in scorers]
    pairs += [(f"{m} ({best[m]}) vs {b} ({best[b]}), each with its best scorer", m, best[m], b, best[b])
              for m in best if m != b]
    rows = []
    for text, ma, sa, mb, sb in pairs:
        for o in sets:
            (mean_a, std_a), (mean_b, std_b) = _cell(metrics, ma, sa, o, metric), _cell(metrics, mb, sb, o, metric)
            diff = mean_a - mean_b
            clear = not pd.isna(diff) and abs(diff) > std_a + std_b
            rows.append({"comparison": text, "a": ma, "scorer_a": sa, "b": mb, "scorer_b": sb, "ood_set": o,
                         "mean_a": mean_a, "std_a": std_a, "mean_b": mean_b, "std_b": std_b, "diff": diff,
                         "verdict": ("lower" if diff < 0 else "higher") if clear else "no clear difference"})
    return pd.DataFrame(rows)


def write_screens(per_seed: pd.DataFrame, metrics: pd.DataFrame, claims: list[tuple[str, str, str]], out_dir,
                  *, scorers: list[str], init: dict[str, str | None], label: str = "",
                  metric: str = "fpr95") -> list:
    """``findings_paired.csv``, ``findings_posthoc.csv`` and ``screens.md``: the paired screen of every claim whose
    methods share their starting checkpoints (``init``: each method's starting method as the profile runs it), and
    the post-hoc screen (:func:`posthoc_findings`), with :data:`SCREEN_NOTE`."""
    from pathlib import Path

    out = Path(out_dir)
    pf = paired_findings(per_seed, claims, init=init, metric=metric)
    ph = posthoc_findings(metrics, scorers, metric=metric)
    pf.to_csv(out / "findings_paired.csv", index=False, float_format="%.2f")
    ph.to_csv(out / "findings_posthoc.csv", index=False, float_format="%.2f")
    text = (f"# Screens of the papers' claims ({metric.upper()}, %)\n\n" + " ".join(filter(None, [label, SCREEN_NOTE]))
            + "\n\n")
    text += "## Paired by seed (energy score)\n\n"
    if pf.empty:
        text += "No claim compares two methods that share their starting checkpoints here.\n\n"
    else:
        t = pf.assign(**{"mean ± std of a - b": [f"{m:.2f} ± {s:.2f}" for m, s in zip(pf.mean_diff, pf.std_diff)],
                         "seeds agreeing": [f"{g} of {n}" for g, n in zip(pf.agree, pf.n_seeds)]})
        for claim, g in t.groupby("claim", sort=False):
            text += (f"**Claim: {claim}.**\n\n"
                     + g[["a", "b", "ood_set", "mean ± std of a - b", "seeds agreeing", "verdict"]].to_markdown(
                         index=False) + "\n\n")
    text += "## BFM and the post-hoc scores (unpaired: BFM and CE both train from scratch)\n\n"
    if ph.empty:
        text += "BFM or CE did not run here.\n"
    else:
        avg = ph[ph["ood_set"] == "average"].assign(
            **{"a (mean ± std)": lambda d: [f"{m:.2f} ± {s:.2f}" for m, s in zip(d.mean_a, d.std_a)],
               "b (mean ± std)": lambda d: [f"{m:.2f} ± {s:.2f}" for m, s in zip(d.mean_b, d.std_b)]})
        text += ("Average over the OOD sets; every set is in findings_posthoc.csv.\n\n"
                 + avg[["comparison", "a (mean ± std)", "b (mean ± std)", "verdict"]].to_markdown(index=False) + "\n")
    (out / "screens.md").write_text(text)
    return [out / "findings_paired.csv", out / "findings_posthoc.csv", out / "screens.md"]
