"""Figure helpers shared by the notebooks. Each returns the matplotlib Figure and, given ``path``,
saves it as PNG (and PDF with ``pdf=True``) without timestamps, so reruns write identical files."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ood.metrics import fpr_at_tpr, roc_curve, tpr_threshold

__all__ = ["save", "sample_grid", "histogram_panel", "roc_panel", "score_histograms", "score_histogram_grid",
           "roc_curves", "roc_grid", "training_curves", "heatmap", "STYLE"]

STYLE = {"figure.dpi": 100, "savefig.dpi": 120, "axes.spines.top": False, "axes.spines.right": False,
         "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8}
plt.rcParams.update(STYLE)


def save(fig, path: str | Path | None, pdf: bool = False):
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), bbox_inches="tight", metadata={"Software": None})
    if pdf:
        fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None, "Producer": None,
                                                                             "Creator": None})
    return fig


def _to_hwc(images) -> np.ndarray:
    x = images.cpu().numpy() if hasattr(images, "cpu") else np.asarray(images)
    return x.transpose(0, 2, 3, 1) if x.shape[1] in (1, 3) else x


def sample_grid(sets: Mapping[str, object], n: int = 8, path=None, pdf=False, titles: Mapping[str, str] | None = None):
    """One row per set, ``n`` images each (the first ``n``: sets are already in a seeded random order)."""
    fig, axes = plt.subplots(len(sets), n, figsize=(n * 0.9, len(sets) * 1.0 + 0.2), squeeze=False)
    for r, (name, ds) in enumerate(sets.items()):
        imgs = _to_hwc(ds.head(n))
        classes = getattr(ds, "classes", None)
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
                if classes and int(ds.labels[c]) >= 0:
                    ax.set_title(classes[int(ds.labels[c])], fontsize=6, pad=1)
        axes[r, 0].set_ylabel((titles or {}).get(name, name), rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return save(fig, path, pdf)


def histogram_panel(ax, scores_by_set: Mapping[str, np.ndarray], colors: Sequence[str] = ("tab:blue", "tab:red"),
                    bins: int = 40, alpha: float = 0.6, tpr: float | None = 0.95, threshold_width: float = 0.8,
                    threshold_label: str | None = None) -> tuple[np.ndarray, float | None]:
    """Draw one axis of score histograms: one filled density histogram per set (key = legend label, the ID set
    first, ``colors`` in the same order) over ``bins`` shared bins spanning the 0.5-99.5 percentiles of all the
    scores, and with ``tpr`` the dashed line at the threshold keeping ``tpr`` of the first (ID) set
    (:func:`ood.metrics.tpr_threshold`, the FPR95 operating point of the tables): the mass of another set right
    of it is that set's FPR. Titles, axis labels and legend are the caller's. Returns the bin edges and the
    threshold (None without ``tpr``)."""
    values = list(scores_by_set.values())
    lo, hi = np.percentile(np.concatenate(values), [0.5, 99.5])
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins)
    # one polygon per histogram ("stepfilled"), not one bar per bin: the grid of 40 panels draws and saves in half the
    # time
    for (label, v), color in zip(scores_by_set.items(), colors):
        ax.hist(v, bins=edges, alpha=alpha, density=True, label=label, color=color, histtype="stepfilled")
    threshold = None
    if tpr is not None:
        threshold = tpr_threshold(values[0], tpr)
        ax.axvline(threshold, color="k", lw=threshold_width, ls="--", label=threshold_label)
    return edges, threshold


def roc_panel(ax, id_scores, ood_scores_by_set: Mapping[str, np.ndarray], colors: Sequence[str] | None = None,
              line_width: float = 1.2, tpr: float | None = 0.95,
              marker_size: float = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Draw one ROC axis (ID positive, :func:`ood.metrics.roc_curve`): one curve per OOD set (key = legend label;
    ``colors`` in the same order, default the colour cycle); with ``tpr``, a dot of the curve's colour where each
    curve reaches TPR ``tpr`` and the dotted line TPR = ``tpr``; then the grey chance diagonal. Titles, axis labels
    and legend are the caller's. Returns the drawn ``(fpr, tpr)`` points by set."""
    curves = {}
    for k, (name, so) in enumerate(ood_scores_by_set.items()):
        fpr, tp, _ = roc_curve(id_scores, so)
        curves[name] = (fpr, tp)
        line, = ax.plot(fpr, tp, lw=line_width, label=name, color=colors[k] if colors else None)
        if tpr is not None:
            i = min(np.searchsorted(tp, tpr), len(fpr) - 1)
            ax.plot(fpr[i], tpr, "o", color=line.get_color(), ms=marker_size)
    if tpr is not None:
        ax.axhline(tpr, color="k", lw=0.6, ls=":")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.6)
    return curves


def score_histograms(scores: Mapping[str, np.ndarray], scorer: str, ood_sets: Sequence[str], path=None, pdf=False,
                     title: str | None = None):
    """Histograms of ``scorer`` on the ID test set against each OOD set (one :func:`histogram_panel` per set)."""
    sid = scores[f"{scorer}/id"]
    fig, axes = plt.subplots(1, len(ood_sets), figsize=(2.6 * len(ood_sets), 2.2), squeeze=False, sharey=False)
    for ax, name in zip(axes[0], ood_sets):
        histogram_panel(ax, {"ID test": sid, name: scores[f"{scorer}/{name}"]})
        ax.set_title(f"{name}")
        ax.set_xlabel(f"{scorer} score (higher = more ID)")
        ax.legend(frameon=False)
    axes[0, 0].set_ylabel("density")
    if title:
        fig.suptitle(title, fontsize=10, y=1.02)
    fig.tight_layout()
    return save(fig, path, pdf)


def roc_curves(scores: Mapping[str, np.ndarray], scorer: str, ood_sets: Sequence[str], path=None, pdf=False,
               title: str | None = None):
    """ROC curves (ID positive) of ``scorer`` per OOD set on one :func:`roc_panel`; the 95%-TPR operating point is
    marked."""
    sid = scores[f"{scorer}/id"]
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    roc_panel(ax, sid, {name: scores[f"{scorer}/{name}"] for name in ood_sets})
    ax.set_xlabel("FPR (OOD accepted)")
    ax.set_ylabel("TPR (ID accepted)")
    ax.set_title(title or f"ROC, {scorer}; dots: FPR at 95% TPR")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return save(fig, path, pdf)


def training_curves(histories: Mapping[str, pd.DataFrame], path=None, pdf=False):
    """Per method: total training loss and ID test accuracy against epoch; with a ``seed`` column, the mean over
    seeds with a band of +- one standard deviation."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.5, 2.8))
    for m, h in histories.items():
        loss_cols = [c for c in h.columns if c.startswith("loss_")]
        h = h.assign(loss=h[loss_cols].sum(axis=1))
        cols = ["loss"] + (["test_accuracy"] if "test_accuracy" in h else [])
        g = h.groupby("epoch")[cols]
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        for ax, col in zip((a1, a2), cols):
            line, = ax.plot(mean.index, mean[col], marker=".", label=m)
            ax.fill_between(mean.index, mean[col] - std[col], mean[col] + std[col], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    a1.set_xlabel("epoch"), a1.set_ylabel("training loss (sum of terms)"), a1.set_yscale("log")
    a2.set_xlabel("epoch"), a2.set_ylabel("ID test accuracy (%)")
    a2.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, path, pdf)


def heatmap(metrics: pd.DataFrame, metric: str = "fpr95", ood_set: str = "average", path=None, pdf=False,
            methods: Sequence[str] | None = None, scorers: Sequence[str] | None = None):
    """Training method x scorer heat map of one metric on one OOD set (default: the average), mean over seeds."""
    from ood.aggregate import select_stat

    metrics = select_stat(metrics, "mean")
    d = metrics[metrics["ood_set"] == ood_set].pivot_table(index="method", columns="scorer", values=metric, sort=False)
    if methods:
        d = d.reindex([m for m in methods if m in d.index])
    if scorers:
        d = d.reindex(columns=[s for s in scorers if s in d.columns])
    fig, ax = plt.subplots(figsize=(0.55 * d.shape[1] + 2, 0.38 * d.shape[0] + 1.2))
    cmap = "rocket_r" if metric == "fpr95" else "rocket"
    import seaborn as sns  # imported here: seaborn (and scipy.stats) add ~1 s to every notebook's start

    sns.heatmap(d, annot=True, fmt=".1f", cmap=cmap, ax=ax, cbar_kws={"label": metric}, annot_kws={"fontsize": 7})
    ax.set_xlabel("post-hoc scorer"), ax.set_ylabel("training method")
    ax.set_title(f"{metric} (%) on {ood_set}" + (" - lower is better" if metric == "fpr95" else " - higher is better"))
    fig.tight_layout()
    return save(fig, path, pdf)


def score_histogram_grid(scores_by_method: Mapping[str, Mapping[str, np.ndarray]], scorer: str, ood_sets: Sequence[str],
                         path=None, pdf=False):
    """Rows: training methods; columns: OOD sets; each panel (:func:`histogram_panel`) ID test (blue) against the OOD
    set (red) under ``scorer``. The dashed line is the threshold keeping 95% of ID: the red mass right of it is the
    FPR95."""
    rows = list(scores_by_method)
    fig, axes = plt.subplots(len(rows), len(ood_sets), figsize=(2.3 * len(ood_sets), 1.7 * len(rows)), squeeze=False)
    for r, m in enumerate(rows):
        sc = scores_by_method[m]
        sid = sc[f"{scorer}/id"]
        for c, name in enumerate(ood_sets):
            ax = axes[r, c]
            so = sc[f"{scorer}/{name}"]
            histogram_panel(ax, {"ID test": sid, "OOD": so})
            fpr = fpr_at_tpr(sid, so, 0.95)  # the tables' FPR95, at the panel's dashed threshold
            ax.text(0.02, 0.95, f"FPR95 {fpr:.1f}%", transform=ax.transAxes, fontsize=7, va="top")
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(m, rotation=0, ha="right", va="center")
            if r == len(rows) - 1:
                ax.set_xlabel(f"{scorer} (higher = more ID)")
    axes[0, -1].legend(frameon=False, loc="upper right")
    fig.tight_layout()
    return save(fig, path, pdf)


def roc_grid(scores_by_method: Mapping[str, Mapping[str, np.ndarray]], scorer: str, ood_sets: Sequence[str], path=None,
             pdf=False):
    """One :func:`roc_panel` per training method (ID positive), one curve per OOD set, dots at 95% TPR."""
    methods = list(scores_by_method)
    fig, axes = plt.subplots(1, len(methods), figsize=(2.9 * len(methods), 2.9), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], methods):
        sc = scores_by_method[m]
        roc_panel(ax, sc[f"{scorer}/id"], {name: sc[f"{scorer}/{name}"] for name in ood_sets}, line_width=1.1,
                  marker_size=3.5)
        ax.set_title(m)
        ax.set_xlabel("FPR (OOD accepted)")
    axes[0, 0].set_ylabel("TPR (ID accepted)")
    axes[0, -1].legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return save(fig, path, pdf)
