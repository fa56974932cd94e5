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

**Bootstrap** (:func:`fpr95_bootstrap`, :func:`fpr95_interval`). Each seed's FPR95 is measured on a finite set of
OOD images (and its threshold on a finite ID test set); the percentile bootstrap resamples both with replacement,
``n_boot`` times, recomputes FPR95 with the rule of :func:`ood.metrics.fpr_at_tpr` (the threshold is the
``ceil(0.95 n_id)``-th largest ID score, ties count as accepted) and gives the 2.5th and 97.5th percentiles (numpy's
``linear`` rule). One ID resample serves every OOD set of a replicate, so the ``average`` over the sets gets its
interval from the same replicates. The resamples are drawn in distribution, not image by image: the threshold of a
resample is the ``k``-th largest ID score ``t*``, and ``P(t* >= v) = P(Binomial(n_id, q(v)) >= k)`` with ``q(v)`` the
share of ID scores at or above ``v`` (a resample holds ``Binomial(n, q)`` images at or above ``v``), which is drawn by
inverting that distribution over the distinct ID scores; the number of a resampled OOD set's images at or above
``t*`` is ``Binomial(n_ood, p(t*))``, ``p`` the share of the set's scores at or above ``t*``. That is the same
distribution as resampling the images one by one (``tests/test_screen_paired.py`` checks it against a brute-force
resampler), in O(n log n + n_boot) instead of O(n_boot n). It matters most for small sets (the 1,200-image Textures
subset of ``cifar10-cpu``). The ``evaluate`` stage computes each run's intervals where it makes the scores
(``results/<profile>/intervals/<method>.csv``, :func:`run_intervals`), so that the tables need no per-image scores;
the ``tables`` stage gathers them into ``fpr95_intervals.csv``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ood.methods import METHODS

__all__ = ["shares_start", "paired", "unpaired", "paired_findings", "fpr95_bootstrap", "fpr95_interval",
           "run_intervals", "interval_table", "save_intervals", "load_intervals", "interval_section",
           "INTERVAL_COLUMNS", "PAIRED_COLUMNS"]

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
    by_seed = lambda m: (lambda r: r.set_index(r["seed"].astype(str))[metric])(rows[rows["method"] == m])
    va, vb = by_seed(a), by_seed(b)
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


def unpaired(mean_a: float, std_a: float, mean_b: float, std_b: float) -> tuple[float, str]:
    """The unpaired screen: ``(mean_a - mean_b, verdict)``, "lower" / "higher" when the difference of the means
    exceeds the sum of the two seed standard deviations (a NaN std, one seed, counts as 0), else "no clear
    difference" (also when a mean is missing)."""
    std_a, std_b = (0.0 if pd.isna(x) else float(x) for x in (std_a, std_b))
    diff = mean_a - mean_b
    clear = not pd.isna(diff) and abs(diff) > std_a + std_b
    return diff, ("lower" if diff < 0 else "higher") if clear else "no clear difference"


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


def fpr95_bootstrap(id_scores, ood_scores: dict, *, average_over=None, tpr: float = 0.95, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals (percent) of FPR95 for every OOD set of ``ood_scores`` (name -> scores) and
    for their mean over ``average_over`` (default: every set), under the key ``"average"`` (see the module
    docstring). The draws come from ``numpy.random.default_rng(seed)``: the same inputs give the same intervals."""
    from scipy.stats import binom

    id_s = np.asarray(id_scores, dtype=np.float64).ravel()
    sets = {k: np.sort(np.asarray(v, dtype=np.float64).ravel()) for k, v in ood_scores.items()}
    if id_s.size == 0 or not sets or any(v.size == 0 for v in sets.values()) or not (
            np.isfinite(id_s).all() and all(np.isfinite(v).all() for v in sets.values())):
        raise ValueError("fpr95_bootstrap needs non-empty, finite ID and OOD scores")
    if not (isinstance(n_boot, int) and n_boot >= 10):
        raise ValueError(f"invalid value {n_boot!r} for 'n_boot'; allowed: an integer >= 10")
    avg = list(sets) if average_over is None else list(average_over)
    if not avg or any(a not in sets for a in avg):
        raise ValueError(f"average_over {avg!r}: allowed a non-empty subset of {list(sets)}")
    rng = np.random.default_rng(seed)
    n = id_s.size
    k = math.ceil(tpr * n)                            # the k-th largest ID score keeps tpr of ID
    values = np.unique(id_s)                          # ascending, distinct
    at_or_above = n - np.searchsorted(np.sort(id_s), values, side="left")
    sf = binom.sf(k - 1, n, at_or_above / n)          # P(t* >= values[j]), non-increasing in j; sf[0] = 1
    u = rng.random(n_boot)
    j = values.size - np.searchsorted(sf[::-1], u, side="left") - 1   # max j with sf[j] >= u: P(t* >= v_j) = sf[j]
    t = values[np.clip(j, 0, values.size - 1)]
    fpr = {}
    for name, v in sets.items():
        p = (v.size - np.searchsorted(v, t, side="left")) / v.size
        fpr[name] = 100.0 * rng.binomial(v.size, p) / v.size
    fpr["average"] = np.mean([fpr[a] for a in avg], axis=0)
    alpha = (1 - level) / 2
    return {name: tuple(float(x) for x in np.percentile(f, [100 * alpha, 100 * (1 - alpha)]))
            for name, f in fpr.items()}


def fpr95_interval(id_scores, ood_scores, *, tpr: float = 0.95, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval (percent) of FPR95 over the ID and OOD images of one set
    (:func:`fpr95_bootstrap`)."""
    return fpr95_bootstrap(id_scores, {"ood": ood_scores}, tpr=tpr, n_boot=n_boot, seed=seed, level=level)["ood"]


INTERVAL_COLUMNS = ["method", "seed", "scorer", "ood_set", "fpr95", "fpr95_lo", "fpr95_hi", "n_ood"]


def run_intervals(scores: dict[str, np.ndarray], method: str, seed: int, ood_sets: list[str], *,
                  average_over: list[str] | None = None, n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """One run's FPR95 (the full-set rule of :func:`ood.metrics.fpr_at_tpr`) with its bootstrap interval
    (:func:`fpr95_bootstrap`), per scorer and OOD set and for the average over ``average_over`` (default: every set):
    one row per (scorer, set), columns :data:`INTERVAL_COLUMNS`. ``scores`` is a score cache
    (``ood.artifacts.save_scores``: ``"<scorer>/<set>"`` arrays, ``"<scorer>/id"`` the ID test scores); its scorers
    keep their order. Each (method, seed, scorer) draws from its own generator, seeded by the CRC-32 of
    ``"<method>/<seed>/<scorer>"``, so a run's rows do not depend on which other runs are computed with it."""
    import zlib

    from ood.metrics import fpr_at_tpr

    avg = list(ood_sets) if average_over is None else list(average_over)
    rows = []
    for scorer in dict.fromkeys(key.split("/", 1)[0] for key in scores):
        sid = scores[f"{scorer}/id"]
        sets = {o: scores[f"{scorer}/{o}"] for o in ood_sets}
        ci = fpr95_bootstrap(sid, sets, average_over=avg, n_boot=n_boot, level=level,
                             seed=zlib.crc32(f"{method}/{seed}/{scorer}".encode()))
        point = {o: fpr_at_tpr(sid, v) for o, v in sets.items()}
        point["average"] = float(np.mean([point[o] for o in avg]))
        for o in [*ood_sets, "average"]:
            rows.append({"method": method, "seed": seed, "scorer": scorer, "ood_set": o, "fpr95": point[o],
                         "fpr95_lo": ci[o][0], "fpr95_hi": ci[o][1],
                         "n_ood": int(sum(sets[a].size for a in avg)) if o == "average" else int(sets[o].size)})
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def interval_table(score_files: dict[tuple[str, int], str | Path], ood_sets: list[str], *,
                   average_over: list[str] | None = None, n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """:func:`run_intervals` of every (method, seed) of ``score_files`` (which maps it to its score cache file), in
    that order: one row per (method, seed, scorer, set), columns :data:`INTERVAL_COLUMNS`."""
    from ood.artifacts import load_scores

    frames = [run_intervals(load_scores(path), method, seed, ood_sets, average_over=average_over, n_boot=n_boot,
                            level=level) for (method, seed), path in score_files.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=INTERVAL_COLUMNS)


def save_intervals(intervals: pd.DataFrame, path: str | Path) -> None:
    """Write an interval table (:data:`INTERVAL_COLUMNS`) as CSV with every float at full precision, so that
    :func:`load_intervals` gives back the same numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    intervals[INTERVAL_COLUMNS].to_csv(path, index=False)


def load_intervals(paths: list[str | Path]) -> pd.DataFrame:
    """The interval tables :func:`save_intervals` wrote to ``paths``, one after the other (the evaluate stage writes
    one per method, ``results/<profile>/intervals/<method>.csv``)."""
    frames = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"no bootstrap intervals at {p}; run its evaluate stage first (dvc repro)")
        frames.append(pd.read_csv(p, float_precision="round_trip"))
    return pd.concat(frames, ignore_index=True)[INTERVAL_COLUMNS]


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
            diff, verdict = unpaired(mean_a, std_a, mean_b, std_b)
            rows.append({"comparison": text, "a": ma, "scorer_a": sa, "b": mb, "scorer_b": sb, "ood_set": o,
                         "mean_a": mean_a, "std_a": std_a, "mean_b": mean_b, "std_b": std_b, "diff": diff,
                         "verdict": verdict})
    return pd.DataFrame(rows)


def write_screens(per_seed: pd.DataFrame, metrics: pd.DataFrame, claims: list[tuple[str, str, str]], out_dir,
                  *, scorers: list[str], init: dict[str, str | None], label: str = "",
                  metric: str = "fpr95", intervals: pd.DataFrame | None = None, scorer: str = "energy") -> list:
    """``findings_paired.csv``, ``findings_posthoc.csv`` and ``screens.md``: the paired screen of every claim whose
    methods share their starting checkpoints (``init``: each method's starting method as the profile runs it), and
    the post-hoc screen (:func:`posthoc_findings`), with :data:`SCREEN_NOTE`; given ``intervals``
    (:func:`interval_table`), also ``fpr95_intervals.csv`` and a section of ``scorer``'s per-seed intervals."""
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
    written = [out / "findings_paired.csv", out / "findings_posthoc.csv", out / "screens.md"]
    if intervals is not None:
        intervals.to_csv(out / "fpr95_intervals.csv", index=False, float_format="%.2f")
        written.append(out / "fpr95_intervals.csv")
        text += "\n" + interval_section(intervals, scorer=scorer)
    (out / "screens.md").write_text(text)
    return written


def interval_section(intervals: pd.DataFrame, *, scorer: str = "energy", level: float = 0.95) -> str:
    """The Markdown section of ``screens.md`` that shows ``scorer``'s per-seed FPR95 with its bootstrap interval
    over the images, one row per method and seed, one column per OOD set."""
    t = intervals[intervals["scorer"] == scorer]
    if t.empty:
        return f"## FPR95 over the images\n\nNo {scorer} scores here.\n"
    t = t.assign(cell=[f"{f:.1f} [{lo:.1f}, {hi:.1f}]" for f, lo, hi in zip(t.fpr95, t.fpr95_lo, t.fpr95_hi)])
    sets = list(dict.fromkeys(t["ood_set"]))
    wide = t.pivot_table(index=["method", "seed"], columns="ood_set", values="cell", aggfunc="first", sort=False)
    wide = wide[sets].reset_index()
    sizes = t.groupby("ood_set", sort=False)["n_ood"].first()
    return (f"## FPR95 over the images: each seed with its {100 * level:.0f}% bootstrap interval ({scorer} score)\n\n"
            "Resampling the ID test images and each OOD set's images (one ID resample per replicate, shared by the "
            "sets and their average; ood.screen.fpr95_bootstrap). The interval is the spread a seed's FPR95 would "
            "have on another draw of images of the same kind; the seed spread is the spread over training runs. "
            "Sizes: " + ", ".join(f"{o} {n:,}" for o, n in sizes.items() if o != "average") + " images. "
            "Every scorer is in fpr95_intervals.csv.\n\n" + wide.to_markdown(index=False) + "\n")
